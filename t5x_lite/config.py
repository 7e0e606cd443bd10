"""Typed experiment configuration: dataclasses, experiment files and --set overrides.

An experiment is a plain Python file defining ``get_config() -> ExperimentConfig``.
Everything a run needs is in that object; it is passed explicitly, never global.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from t5x_lite.fileio import write_atomically


class UserError(Exception):
  """A problem the user can fix (configuration, data, checkpoint, ...). The CLI prints its
  message as one line instead of a traceback; every module's error class derives from it."""


class ConfigError(UserError, ValueError):
  """A user-facing configuration problem; its message says what to fix."""


# ----------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------


@dataclass
class ModelConfig:
  """Architecture of the encoder-decoder. Defaults are T5.1.1-base."""

  # None: taken from the vocabulary (SentencePiece pieces + extra ids, padded to 128).
  vocab_size: Optional[int] = 32128
  d_model: int = 768
  d_ff: int = 2048
  num_heads: int = 12
  d_kv: int = 64
  num_encoder_layers: int = 12
  num_decoder_layers: int = 12
  # relu | gelu | gated-gelu | gated-relu | swiglu
  ffn_activation: str = "gated-gelu"
  # T5.1.0 style: logits from the input embedding, scaled by d_model**-0.5.
  tie_logits: bool = False
  # rmsnorm (scale only, T5) | layernorm (scale and bias)
  norm: str = "rmsnorm"
  norm_eps: float = 1e-6
  # relative (T5 bucketed bias, one table per stack) | none
  position_scheme: str = "relative"
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  # None: 0.1 when fine-tuning (checkpoint.init_from set), else 0.0 as in T5.1.1 pretraining.
  dropout_rate: Optional[float] = None
  # Stack layers with nn.scan: one compiled layer, stacked parameters.
  scan_layers: bool = False
  # What the backward pass keeps: none (everything autodiff saves) | minimal (all but the
  # norms' and activation functions' intermediates, recomputed: no matmul) | dots (matmul
  # outputs) | dots_no_batch (weight matmuls' outputs) | full (layer inputs only)
  remat_policy: str = "none"
  # Activation dtype: auto = bfloat16 on GPU/TPU, float32 on CPU.
  dtype: str = "auto"
  param_dtype: str = "float32"
  # Attention implementation: xla (einsum reference) | cudnn (fused, GPU only) | auto.
  attention_impl: str = "xla"

  @property
  def gated_ffn(self) -> bool:
    """Gated FFNs multiply the activation by a second linear branch (three matrices)."""
    return self.ffn_activation.startswith("gated") or self.ffn_activation == "swiglu"


@dataclass
class DataConfig:
  """Where text comes from and how it becomes fixed-shape batches."""

  # TFDS dataset name ("c4/en:3.1.0") or "python_docs" for the built-in corpus.
  dataset: str = "python_docs"
  # TFDS data_dir; None = ~/tensorflow_datasets (or $TFDS_DATA_DIR).
  data_dir: Optional[str] = None
  text_feature: str = "text"
  train_split: str = "train"
  eval_split: str = "validation"
  # For seq2seq datasets: the input and target text features.
  inputs_feature: str = "inputs"
  targets_feature: str = "targets"
  # Path to a SentencePiece .model, or "" to train one on the training split.
  vocabulary: str = ""
  # Pieces of a vocabulary trained here (before the extra ids).
  vocab_train_size: int = 32000
  vocab_extra_ids: int = 100
  # span_corruption | prefix_lm | seq2seq
  objective: str = "span_corruption"
  inputs_length: int = 512
  targets_length: int = 114
  noise_density: float = 0.15
  mean_noise_span_length: float = 3.0
  pack: bool = True
  num_workers: int = 2
  prefetch: int = 4
  # Independent training streams the global batch is split into (0 = one per
  # process). A multiple of every process count you use gives the same batches
  # on any number of processes, and lets a checkpoint resume on another count.
  shards: int = 0
  # Documents of the eval split used per evaluation (None = all of it).
  max_eval_examples: Optional[int] = None
  # Metrics after decoding, for seq2seq tasks: exact_match (always), bleu, rouge.
  eval_metrics: tuple[str, ...] = ("exact_match",)


@dataclass
class OptimizerConfig:
  # adafactor | adamw
  name: str = "adafactor"
  # rsqrt (T5: lr/sqrt(max(step, warmup))) | cosine | constant
  schedule: str = "rsqrt"
  learning_rate: float = 1.0
  warmup_steps: int = 10000
  # For cosine: fraction of the peak the schedule decays to.
  final_learning_rate_fraction: float = 0.0
  # Global-norm clipping; 0 disables it.
  grad_clip_norm: float = 0.0
  weight_decay: float = 0.0
  # Adafactor (T5 defaults).
  decay_rate: float = 0.8
  clipping_threshold: float = 1.0
  multiply_by_parameter_scale: bool = True
  factored: bool = True
  min_dim_size_to_factor: int = 128
  epsilon1: float = 1e-30
  epsilon2: float = 1e-3
  # AdamW.
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8


@dataclass
class TrainConfig:
  steps: int = 1000
  batch_size: int = 128
  seed: int = 0
  eval_every: int = 500
  log_every: int = 50
  # Microbatches per step (gradient accumulation); the batch must divide by it.
  grad_accum_steps: int = 1
  z_loss: float = 1e-4
  label_smoothing: float = 0.0
  # Target positions per chunk of the output projection and loss (0 = all at once): the
  # full (batch, length, vocab) logits then never exist, at the cost of recomputing each
  # chunk's in the backward pass. Must divide data.targets_length.
  loss_chunk_size: int = 0
  # Peak FLOP/s of one device for MFU; 0 = known devices only.
  peak_flops_per_device: float = 0.0


@dataclass
class MeshConfig:
  """Named device mesh; -1 in shape means "all remaining devices"."""

  axes: tuple[str, ...] = ("data", "model")
  shape: tuple[int, ...] = (-1, 1)
  # data_parallel | fsdp | model_parallel | 2d, or "custom" with `rules` below.
  rules_preset: str = "data_parallel"
  # Custom logical-axis rules, e.g. (("batch", "data"), ("mlp", "model")).
  rules: tuple[tuple[str, Any], ...] = ()


@dataclass
class CheckpointConfig:
  every_steps: int = 1000
  keep: int = 3
  # Also keep the best checkpoint by this validation metric ("" = off).
  keep_best_metric: str = ""
  async_save: bool = True
  # Start from the parameters of this checkpoint (a workdir or checkpoints dir).
  init_from: str = ""
  init_from_step: Optional[int] = None


@dataclass
class ExperimentConfig:
  model: ModelConfig = field(default_factory=ModelConfig)
  data: DataConfig = field(default_factory=DataConfig)
  optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  mesh: MeshConfig = field(default_factory=MeshConfig)
  checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
  # Free-form name shown in logs and comparisons.
  name: str = ""


# ----------------------------------------------------------------------------
# Model presets (T5.1.1 and T5.1.0 sizes from docs/reference.md)
# ----------------------------------------------------------------------------

_T5_1_1_SIZES = {
    # name: (d_model, d_ff, num_heads, num_layers)
    "small": (512, 1024, 6, 8),
    "base": (768, 2048, 12, 12),
    "large": (1024, 2816, 16, 24),
    "xl": (2048, 5120, 32, 24),
    "xxl": (4096, 10240, 64, 24),
}

_T5_1_0_SIZES = {
    "small": (512, 2048, 8, 6),
    "base": (768, 3072, 12, 12),
}


def t5_1_1(size: str) -> ModelConfig:
  """T5.1.1: gated-GELU FFN, untied logits, no biases."""
  if size not in _T5_1_1_SIZES:
    raise ConfigError(f"Unknown T5.1.1 size {size!r}; choose one of {sorted(_T5_1_1_SIZES)}.")
  d_model, d_ff, heads, layers = _T5_1_1_SIZES[size]
  return ModelConfig(
      vocab_size=32128, d_model=d_model, d_ff=d_ff, num_heads=heads, d_kv=64,
      num_encoder_layers=layers, num_decoder_layers=layers,
      ffn_activation="gated-gelu", tie_logits=False)


def t5_1_0(size: str) -> ModelConfig:
  """The original T5: ReLU FFN, logits tied to the input embedding."""
  if size not in _T5_1_0_SIZES:
    raise ConfigError(f"Unknown T5.1.0 size {size!r}; choose one of {sorted(_T5_1_0_SIZES)}.")
  d_model, d_ff, heads, layers = _T5_1_0_SIZES[size]
  return ModelConfig(
      vocab_size=32128, d_model=d_model, d_ff=d_ff, num_heads=heads, d_kv=64,
      num_encoder_layers=layers, num_decoder_layers=layers,
      ffn_activation="relu", tie_logits=True)


def tiny(vocab_size: Optional[int] = None) -> ModelConfig:
  """A model small enough to train on a laptop CPU in minutes."""
  return ModelConfig(
      vocab_size=vocab_size, d_model=128, d_ff=256, num_heads=4, d_kv=32,
      num_encoder_layers=2, num_decoder_layers=2, ffn_activation="gated-gelu",
      tie_logits=False, dtype="float32")


MODEL_PRESETS = {
    **{f"t5_1_1_{size}": (lambda s=size: t5_1_1(s)) for size in _T5_1_1_SIZES},
    **{f"t5_1_0_{size}": (lambda s=size: t5_1_0(s)) for size in _T5_1_0_SIZES},
    "tiny": tiny,
}


# ----------------------------------------------------------------------------
# Validation of choices
# ----------------------------------------------------------------------------

# What data.eval_metrics may ask for (scored by t5x_lite.tasks).
TEXT_METRICS = ("exact_match", "bleu", "rouge")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# What every evaluation reports (t5x_lite.trainer.evaluate).
EVAL_METRICS = ("loss", "z_loss", "accuracy", "perplexity")


def validation_metric_names(config: ExperimentConfig) -> list[str]:
  """The metrics an evaluation of this experiment reports: what keep_best_metric may name."""
  names = list(EVAL_METRICS)
  if config.data.objective == "seq2seq":
    names.append("exact_match")
    names += ["bleu"] if "bleu" in config.data.eval_metrics else []
    names += list(ROUGE_TYPES) if "rouge" in config.data.eval_metrics else []
  return names


def check_metric_names(names: Sequence[str]) -> None:
  unknown = sorted(set(names) - set(TEXT_METRICS))
  if unknown:
    raise ConfigError(
        f"data.eval_metrics has unknown metrics {unknown}; choose from {list(TEXT_METRICS)}.")


_CHOICES = {
    "model.ffn_activation": ("relu", "gelu", "gated-gelu", "gated-relu", "swiglu"),
    "model.norm": ("rmsnorm", "layernorm"),
    "model.position_scheme": ("relative", "none"),
    "model.remat_policy": ("none", "minimal", "dots", "dots_no_batch", "full"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.attention_impl": ("xla", "cudnn", "auto"),
    "data.objective": ("span_corruption", "prefix_lm", "seq2seq"),
    "optimizer.name": ("adafactor", "adamw"),
    "optimizer.schedule": ("rsqrt", "cosine", "constant"),
    "mesh.rules_preset": ("data_parallel", "fsdp", "model_parallel", "2d", "custom"),
}


def validate(config: ExperimentConfig) -> ExperimentConfig:
  """Checks field types, enumerated choices and basic arithmetic; raises ConfigError."""
  if not isinstance(config, ExperimentConfig):
    raise ConfigError(f"Expected an ExperimentConfig, got {type(config).__name__}.")
  check_types(config)
  resolve_dropout(config)
  for key, choices in _CHOICES.items():
    value = get_field(config, key)
    if value not in choices:
      raise ConfigError(f"{key}={value!r} is not a valid choice; choose one of {list(choices)}.")
  check_metric_names(config.data.eval_metrics)  # Else a typo surfaces only at the first eval.
  m, t = config.model, config.train
  positive = {
      "model.d_model": m.d_model, "model.d_ff": m.d_ff, "model.num_heads": m.num_heads,
      "model.d_kv": m.d_kv, "train.batch_size": t.batch_size, "train.steps": t.steps,
      "train.log_every": t.log_every, "train.eval_every": t.eval_every,
      "train.grad_accum_steps": t.grad_accum_steps,
      "checkpoint.every_steps": config.checkpoint.every_steps,
      "data.inputs_length": config.data.inputs_length,
      "data.targets_length": config.data.targets_length,
  }
  for key, value in positive.items():
    if value <= 0:
      raise ConfigError(f"{key}={value} must be positive.")
  if m.num_encoder_layers < 1 or m.num_decoder_layers < 1:
    raise ConfigError("model.num_encoder_layers and model.num_decoder_layers must be at least 1.")
  if m.vocab_size is not None and m.vocab_size <= 0:
    raise ConfigError(f"model.vocab_size={m.vocab_size} must be positive, or None to take it "
                      "from the vocabulary.")
  if not 0.0 <= m.dropout_rate < 1.0:
    raise ConfigError(f"model.dropout_rate={m.dropout_rate} must be in [0, 1).")
  if m.position_scheme == "relative":
    _check_relative_buckets(m)
  if t.seed < 0:
    raise ConfigError(f"train.seed={t.seed} must be >= 0.")
  if t.batch_size % t.grad_accum_steps:
    raise ConfigError(
        f"train.batch_size={t.batch_size} does not divide into "
        f"train.grad_accum_steps={t.grad_accum_steps} microbatches; make the batch a multiple of it.")
  if len(config.mesh.axes) != len(config.mesh.shape):
    raise ConfigError(
        f"mesh.axes {config.mesh.axes} and mesh.shape {config.mesh.shape} must have the same length.")
  opt = config.optimizer
  if opt.warmup_steps < 0:
    raise ConfigError(f"optimizer.warmup_steps={opt.warmup_steps} must be >= 0.")
  if opt.schedule == "cosine" and t.steps <= opt.warmup_steps:
    raise ConfigError(
        f"A cosine schedule needs train.steps ({t.steps}) > optimizer.warmup_steps "
        f"({opt.warmup_steps}).")
  if not 0.0 <= t.label_smoothing < 1.0:
    raise ConfigError(f"train.label_smoothing={t.label_smoothing} must be in [0, 1).")
  if t.z_loss < 0:
    raise ConfigError(f"train.z_loss={t.z_loss} must be >= 0.")
  targets_length = config.data.targets_length
  if t.loss_chunk_size < 0 or (t.loss_chunk_size and targets_length % t.loss_chunk_size):
    divisors = [n for n in range(1, targets_length + 1) if targets_length % n == 0]
    raise ConfigError(
        f"train.loss_chunk_size={t.loss_chunk_size} must be 0 (off) or divide "
        f"data.targets_length={targets_length}: one of {divisors}.")
  if config.mesh.rules_preset == "custom" and not config.mesh.rules:
    raise ConfigError('mesh.rules_preset="custom" needs mesh.rules, e.g. (("batch", "data"),).')
  if config.mesh.rules and config.mesh.rules_preset != "custom":
    raise ConfigError(
        f"mesh.rules is set but mesh.rules_preset={config.mesh.rules_preset!r} ignores it; set "
        'mesh.rules_preset="custom" to use your rules, or drop mesh.rules.')
  best = config.checkpoint.keep_best_metric
  if best and best not in validation_metric_names(config):
    raise ConfigError(
        f"checkpoint.keep_best_metric={best!r} is not a metric evaluation reports here; choose "
        f"one of {validation_metric_names(config)}.")
  if best and config.checkpoint.every_steps % t.eval_every:
    raise ConfigError(
        f"checkpoint.keep_best_metric needs an evaluation at every save: make "
        f"checkpoint.every_steps ({config.checkpoint.every_steps}) a multiple of "
        f"train.eval_every ({t.eval_every}).")
  if len(set(config.mesh.axes)) != len(config.mesh.axes):
    raise ConfigError(f"mesh.axes {config.mesh.axes} names an axis twice; give each axis its own name.")
  return config


def resolve_dropout(config: ExperimentConfig) -> None:
  """An unset model.dropout_rate becomes T5's choice for the run: 0.1 when fine-tuning from
  checkpoint.init_from, 0.0 when pretraining."""
  if config.model.dropout_rate is None:
    config.model.dropout_rate = 0.1 if config.checkpoint.init_from else 0.0


def _check_relative_buckets(m: ModelConfig) -> None:
  """The bucketing needs at least one exact bucket per direction (num_buckets // 4 in the
  encoder) and a max_distance beyond the decoder's exact range (num_buckets // 2)."""
  buckets, distance = m.relative_attention_num_buckets, m.relative_attention_max_distance
  if buckets < 4 or distance <= buckets // 2:
    raise ConfigError(
        f"model.relative_attention_num_buckets={buckets} and relative_attention_max_distance="
        f"{distance}: T5's bucketing needs at least 4 buckets and a max distance above half "
        f"of them (T5: 32 and 128).")


# ----------------------------------------------------------------------------
# Dotted access and --set overrides
# ----------------------------------------------------------------------------


def _field_types(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def all_keys(config: ExperimentConfig) -> list[str]:
  """Every settable dotted key, e.g. 'model.d_ff'."""
  keys = []
  for section in dataclasses.fields(config):
    value = getattr(config, section.name)
    if dataclasses.is_dataclass(value):
      keys.extend(f"{section.name}.{f.name}" for f in dataclasses.fields(value))
    else:
      keys.append(section.name)
  return keys


def get_field(config: ExperimentConfig, key: str) -> Any:
  obj = config
  for part in key.split("."):
    obj = getattr(obj, part)
  return obj


def _unknown_key_error(config: ExperimentConfig, key: str, where: str = "") -> ConfigError:
  keys = all_keys(config)
  close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
  section = key.split(".")[0]
  nearby = [k for k in keys if k.startswith(section + ".")] or sorted({k.split(".")[0] for k in keys})
  hint = f" Did you mean {', '.join(close)}?" if close else ""
  return ConfigError(
      f"Unknown configuration key {key!r}{where}.{hint} Valid keys here: {', '.join(nearby)}.")


def _parse_value(text: str, annotation: Any, key: str) -> Any:
  """Parses the text of a --set value into the field's declared type."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin in (typing.Union, types.UnionType):
    non_none = [a for a in args if a is not type(None)]
    if text.lower() in ("none", "null"):
      return None
    return _parse_value(text, non_none[0], key)
  try:
    if annotation is bool:
      lowered = text.lower()
      if lowered in ("true", "1", "yes", "on"):
        return True
      if lowered in ("false", "0", "no", "off"):
        return False
      raise ValueError(text)
    if annotation is int:
      return int(text)
    if annotation is float:
      return float(text)
    if annotation is str:
      return text
    if origin is tuple:
      return _coerce(_parse_sequence(text), annotation)
    if annotation is Any:
      return json.loads(text)
  except (ValueError, TypeError, json.JSONDecodeError):
    pass
  raise ConfigError(
      f"--set {key}={text!r}: expected a value of type {_type_name(annotation)}.")


def _parse_sequence(text: str) -> list:
  """'4,2', '[4, 2]', '(4, 2)', '[data, model]', '[["batch", "data"]]' or
  '(("batch", None),)' -> a list: JSON or Python spelling, words quoted or bare."""
  stripped = text.strip()
  if not stripped.startswith(("[", "(")):
    return [_parse_scalar(item.strip()) for item in stripped.split(",") if item.strip()]
  stripped = stripped.replace("(", "[").replace(")", "]").replace("'", '"')
  stripped = re.sub(r'"[^"]*"|(?<![\w.])[A-Za-z_][\w\-./]*', _word_as_json, stripped)
  return json.loads(re.sub(r",\s*]", "]", stripped))


_JSON_WORDS = {"None": "null", "True": "true", "False": "false",
               "null": "null", "true": "true", "false": "false"}


def _word_as_json(match: re.Match) -> str:
  """A quoted string as it is; a bare word as JSON's constant or as a string."""
  word = match.group(0)
  return word if word.startswith('"') else _JSON_WORDS.get(word, json.dumps(word))


def _parse_scalar(text: str) -> Any:
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


def _coerce(value: Any, annotation: Any) -> Any:
  """`value` as a field of type `annotation`: a list becomes a tuple and an int a float;
  any other mismatch (a bool for an int included) raises TypeError or ValueError."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin in (typing.Union, types.UnionType):
    if value is None:
      return None
    return _coerce(value, next(a for a in args if a is not type(None)))
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise TypeError(value)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_coerce(v, args[0]) for v in value)
    return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
  if annotation is Any:
    return tuple(value) if isinstance(value, list) else value
  if annotation is float and type(value) is int:
    return float(value)
  if isinstance(value, bool) != (annotation is bool) or not isinstance(value, annotation):
    raise TypeError(value)
  return value


def check_types(config: ExperimentConfig, where: str = "") -> None:
  """Checks every field against its annotation, converting harmless differences in place (see
  _coerce): a wrong type would otherwise fail later as a TypeError from deep inside. `where`
  (" in FILE") says where the values came from."""
  _check_sections(config, where)
  for key in all_keys(config):
    section, _, name = key.rpartition(".")
    owner = getattr(config, section) if section else config
    value = getattr(owner, name)
    annotation = _field_types(type(owner))[name]
    try:
      setattr(owner, name, _coerce(value, annotation))
    except (TypeError, ValueError):
      raise ConfigError(f"{key} = {value!r} ({type(value).__name__}){where} must be of type "
                        f"{_type_name(annotation)}.") from None


def _check_sections(config: ExperimentConfig, where: str) -> None:
  """Each section is of its declared class and holds only its fields: an experiment file
  that sets a misspelt field (config.model.tie_logit = True) would otherwise run without it."""
  hints = _field_types(ExperimentConfig)
  owners = [("", config)]
  for section in dataclasses.fields(ExperimentConfig):
    value, expected = getattr(config, section.name), hints[section.name]
    if dataclasses.is_dataclass(expected):
      if not isinstance(value, expected):
        shown = f"{type(value).__name__}(...)" if dataclasses.is_dataclass(value) else repr(value)
        raise ConfigError(f"{section.name} = {shown} ({type(value).__name__}){where} must be of "
                          f"type {expected.__name__}.")
      owners.append((section.name + ".", value))
  for prefix, owner in owners:
    unknown = sorted(set(vars(owner)) - {f.name for f in dataclasses.fields(owner)})
    if unknown:
      raise _unknown_key_error(config, prefix + unknown[0], where)


def _type_name(annotation: Any) -> str:
  """'int', 'Optional[int]', 'tuple[str, ...]': generics' __name__ would drop their arguments."""
  return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def apply_overrides(config: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
  """Applies ["model.d_ff=4096", ...] in place, each parsed to its field's type."""
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example --set train.steps=100.")
    key, text = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if len(parts) == 1 and key in {f.name for f in dataclasses.fields(config)}:
      section_obj, name = config, key
    elif len(parts) == 2 and hasattr(config, parts[0]) and dataclasses.is_dataclass(
        getattr(config, parts[0])):
      section_obj, name = getattr(config, parts[0]), parts[1]
    else:
      raise _unknown_key_error(config, key)
    types_ = _field_types(type(section_obj))
    if name not in types_:
      raise _unknown_key_error(config, key)
    setattr(section_obj, name, _parse_value(text, types_[name], key))
  return config


# ----------------------------------------------------------------------------
# Experiment files
# ----------------------------------------------------------------------------


def resolve_experiment_path(name_or_path: str) -> str:
  """Accepts a path to a .py file or a run's config.json, or a bare name found in
  ./experiments."""
  candidates = [name_or_path]
  if not name_or_path.endswith(".py"):
    candidates += [name_or_path + ".py", os.path.join("experiments", name_or_path + ".py")]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  here = os.path.dirname(name_or_path) or "experiments"
  available = sorted(f[:-3] for f in os.listdir(here) if f.endswith(".py")) if os.path.isdir(here) else []
  listing = f" Experiments in {here}/: {', '.join(available)}." if available else ""
  raise ConfigError(f"Experiment file {name_or_path!r} not found.{listing}")


def load_experiment(name_or_path: str, overrides: Optional[list[str]] = None) -> ExperimentConfig:
  """Runs an experiment file's get_config() (or reads a run's config.json, which rebuilds
  that run), applies overrides and validates."""
  path = resolve_experiment_path(name_or_path)
  if path.endswith(".json"):
    config = _read_saved_config(path)
  elif path.endswith(".py"):
    config = _run_experiment_file(path)
  else:
    raise ConfigError(
        f"{path} is not an experiment: give a Python experiment file (.py) defining "
        "get_config(), or a run's config.json.")
  check_types(config, f" in {path}")
  apply_overrides(config, overrides or [])
  return validate(config)


def _read_saved_config(path: str) -> ExperimentConfig:
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path} is not a readable config.json ({e}).") from None
  if not isinstance(data, dict):
    raise ConfigError(f"{path} holds a JSON {type(data).__name__}, not a saved configuration.")
  return from_dict(data, where=f" in {path}")


def _run_experiment_file(path: str) -> ExperimentConfig:
  directory = os.path.dirname(path)
  module_name = "_t5x_lite_experiment_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec)
  # Experiments may import sibling experiments (ablations import their base).
  sys.path.insert(0, directory)
  try:
    spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
      raise ConfigError(
          f"Experiment file {path} defines no get_config() function; it must define "
          "`def get_config() -> t5x_lite.config.ExperimentConfig`.")
    config = get_config()
  except ConfigError:
    raise
  except Exception as e:  # The user's file raised: report it as theirs, not ours.
    raise ConfigError(
        f"Experiment file {path} raised {type(e).__name__}: {e}. "
        "Fix the experiment file; it must define get_config() returning an ExperimentConfig.") from e
  finally:
    sys.path.remove(directory)
  if not isinstance(config, ExperimentConfig):
    raise ConfigError(
        f"get_config() in {path} returned {type(config).__name__}, expected "
        "t5x_lite.config.ExperimentConfig.")
  if not config.name:
    config.name = os.path.splitext(os.path.basename(path))[0]
  return config


# ----------------------------------------------------------------------------
# JSON round trip (config.json in the workdir)
# ----------------------------------------------------------------------------


def to_dict(config: ExperimentConfig) -> dict:
  return dataclasses.asdict(config)


def to_json(config: ExperimentConfig) -> str:
  return json.dumps(to_dict(config), indent=2, sort_keys=False)


def from_dict(data: dict, where: str = " in the saved configuration") -> ExperimentConfig:
  """Rebuilds an ExperimentConfig from to_dict() output (e.g. a saved config.json)."""
  fields = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    raise ConfigError(f"Unknown configuration sections {unknown}{where}; valid: {sorted(fields)}.")
  sections = {}
  for name, values in data.items():
    cls = fields[name].default_factory
    if cls is dataclasses.MISSING:  # A plain field (name).
      sections[name] = values
      continue
    if not isinstance(values, dict):
      raise ConfigError(f"{name}{where} must be a mapping of its fields, not {values!r}.")
    unknown = sorted(set(values) - set(_field_types(cls)))
    if unknown:
      raise ConfigError(f"Unknown keys in {name}{where}: {unknown}.")
    sections[name] = cls(**values)
  config = ExperimentConfig(**sections)
  check_types(config, where)
  return config


def save_json(config: ExperimentConfig, path: str) -> None:
  write_atomically(path, to_json(config) + "\n")


def load_json(path: str) -> ExperimentConfig:
  with open(path) as f:
    return validate(from_dict(json.load(f)))
