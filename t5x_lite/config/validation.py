"""validate(): field types, enumerated choices, numeric ranges and the arithmetic between fields."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from t5x_lite.config.overrides import all_keys, coerce, field_types, get_field, type_name, unknown_key_error
from t5x_lite.config.schema import ExperimentConfig, ModelConfig
from t5x_lite.errors import ConfigError

# What data.eval_metrics may ask for (scored by t5x_lite.text_metrics).
TEXT_METRICS = ("exact_match", "bleu", "rouge")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# What every evaluation reports (t5x_lite.trainer.evaluate).
EVAL_METRICS = ("loss", "z_loss", "accuracy", "perplexity")
# Where train.loggers may send metrics (t5x_lite.metrics).
LOGGERS = ("tensorboard", "wandb")


def validation_metric_names(config: ExperimentConfig) -> Optional[list[str]]:
  """The metrics an evaluation of this experiment reports: what keep_best_metric may name
  (None where a task's own metric functions make them unknown until they run)."""
  from t5x_lite.data import tasks  # pylint: disable=import-outside-toplevel  (data imports config)
  if config.data.tasks_module or tasks.is_registered(config.data.dataset):
    return tasks.metric_names(config.data)
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
    "model.architecture": ("encoder_decoder", "decoder_only"),
    "model.ffn_activation": ("relu", "gelu", "gated-gelu", "gated-relu", "swiglu"),
    "model.norm": ("rmsnorm", "layernorm"),
    "model.position_scheme": ("relative", "relative_per_layer", "none"),
    "model.remat_policy": ("none", "minimal", "dots", "dots_no_batch", "full", "compiler"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.attention_impl": ("xla", "cudnn", "auto"),
    "data.objective": ("span_corruption", "prefix_lm", "ul2", "seq2seq"),
    "optimizer.name": ("adafactor", "adamw"),
    "optimizer.schedule": ("rsqrt", "cosine", "constant"),
    "mesh.rules_preset": ("data_parallel", "fsdp", "model_parallel", "2d", "custom"),
}


@dataclasses.dataclass(frozen=True)
class Range:
  """The values a numeric field may take: an interval, plus the values in `also` (None, -1)
  that mean something else; `note` says what, or what a bound means (0 = off)."""

  low: Optional[float] = None
  high: Optional[float] = None
  low_open: bool = False
  high_open: bool = False
  also: tuple[Any, ...] = ()
  note: str = ""

  def __contains__(self, value: Any) -> bool:
    if value in self.also:
      return True
    if value is None:
      return False
    # Written so that NaN, which compares False with everything, is outside every range.
    above = self.low is None or value > self.low or (value == self.low and not self.low_open)
    below = self.high is None or value < self.high or (value == self.high and not self.high_open)
    return above and below

  def __str__(self) -> str:
    if self.high is not None:
      text = (f"in {'(' if self.low_open else '['}{self.low}, "
              f"{self.high}{')' if self.high_open else ']'}")
    elif self.low == 0 and self.low_open:
      text = "positive"
    else:
      text = f"{'>' if self.low_open else '>='} {self.low}"
    return f"{text}, {self.note}" if self.note else text


_POSITIVE = Range(0, low_open=True)
_NON_NEGATIVE = Range(0)
# [0, 1): dropout and smoothing at 1 leave no signal; Adam's betas at 1 never update.
_BELOW_ONE = Range(0, 1, high_open=True)
_CLIPPING = Range(0, note="where 0 turns clipping off")

# The range of every int and float field (of each entry, for a tuple), checked by validate().
# train.loss_chunk_size is not here: validate() checks it against data.targets_length.
RANGES: dict[str, Range] = {
    "model.vocab_size": Range(0, low_open=True, also=(None,),
                              note="or None to take it from the vocabulary"),
    "model.d_model": _POSITIVE,
    "model.d_ff": _POSITIVE,
    "model.num_heads": _POSITIVE,
    "model.d_kv": _POSITIVE,
    "model.num_encoder_layers": _POSITIVE,  # 0 with architecture=decoder_only: _check_architecture.
    "model.num_decoder_layers": _POSITIVE,
    "model.norm_eps": _POSITIVE,  # 0 divides by zero on an all-zero activation.
    # Further limits, for position_scheme="relative", in _check_relative_buckets.
    "model.relative_attention_num_buckets": _POSITIVE,
    "model.relative_attention_max_distance": _POSITIVE,
    "model.dropout_rate": _BELOW_ONE,  # Resolved from None before the check.
    "data.vocab_train_size": _POSITIVE,
    "data.vocab_extra_ids": _NON_NEGATIVE,
    "data.inputs_length": _POSITIVE,
    "data.targets_length": _POSITIVE,
    "data.noise_density": Range(0, 1, low_open=True, high_open=True),
    # 0 divides by zero in the span arithmetic; below 1, spans are 1 token long anyway.
    "data.mean_noise_span_length": Range(1),
    # SentencePiece's tokenizing threads, where a negative count means one per CPU core.
    "data.num_workers": Range(0, also=(-1,), note="or -1 for one per CPU core"),
    "data.worker_processes": _NON_NEGATIVE,
    "data.max_document_tokens": Range(2),
    "data.prefetch": _NON_NEGATIVE,
    "data.shards": Range(0, note="where 0 means one per process"),
    "data.max_eval_examples": Range(0, low_open=True, also=(None,),
                                    note="or None for the whole eval split"),
    "optimizer.learning_rate": _POSITIVE,
    "optimizer.warmup_steps": _NON_NEGATIVE,
    "optimizer.final_learning_rate_fraction": Range(0, 1),
    "optimizer.grad_clip_norm": _CLIPPING,
    "optimizer.weight_decay": _NON_NEGATIVE,
    # Adafactor's second-moment decay is 1 - (step + 1)**-decay_rate.
    "optimizer.decay_rate": Range(0, 1),
    "optimizer.clipping_threshold": _CLIPPING,
    "optimizer.min_dim_size_to_factor": _NON_NEGATIVE,
    # The epsilons keep zero gradients from dividing by zero and zero-initialised parameters
    # (layernorm biases) from a scale of 0 that would never let them move.
    "optimizer.epsilon1": _POSITIVE,
    "optimizer.epsilon2": _POSITIVE,
    "optimizer.b1": _BELOW_ONE,
    "optimizer.b2": _BELOW_ONE,
    "optimizer.eps": _POSITIVE,
    "train.steps": _POSITIVE,
    "train.batch_size": _POSITIVE,
    "train.seed": _NON_NEGATIVE,
    "train.eval_every": _POSITIVE,
    "train.log_every": _POSITIVE,
    "train.grad_accum_steps": _POSITIVE,
    "train.z_loss": _NON_NEGATIVE,
    "train.label_smoothing": _BELOW_ONE,
    "train.peak_flops_per_device": Range(0, note="where 0 means known devices only"),
    "mesh.shape": Range(1, also=(-1,), note="or -1 for all remaining devices"),
    "checkpoint.every_steps": _POSITIVE,
    "checkpoint.keep": Range(0, note="where 0 keeps every checkpoint"),
    "checkpoint.init_from_step": Range(0, also=(None,), note="or None for the latest step"),
}


def validate(config: ExperimentConfig) -> ExperimentConfig:
  """Checks field types, enumerated choices, numeric ranges and basic arithmetic; raises
  ConfigError."""
  if not isinstance(config, ExperimentConfig):
    raise ConfigError(f"Expected an ExperimentConfig, got {type(config).__name__}.")
  check_types(config)
  resolve_dropout(config)
  for key, choices in _CHOICES.items():
    value = get_field(config, key)
    if value not in choices:
      raise ConfigError(f"{key}={value!r} is not a valid choice; choose one of {list(choices)}.")
  check_metric_names(config.data.eval_metrics)  # Else a typo surfaces only at the first eval.
  _check_loggers(config.train.loggers)
  _check_architecture(config.model)
  _check_ranges(config)
  m, t = config.model, config.train
  if m.position_scheme.startswith("relative"):
    _check_relative_buckets(m)
  if m.remat_policy == "compiler" and m.scan_layers:
    raise ConfigError(
        'model.remat_policy="compiler" needs model.scan_layers=false: a scanned stack keeps its '
        "layers' residuals as loop outputs the compiler cannot rematerialise (97 GiB instead of "
        "41 for T5.1.1-base at batch 128 on an H100). Use another policy, or unroll the layers.")
  if t.batch_size % t.grad_accum_steps:
    raise ConfigError(
        f"train.batch_size={t.batch_size} does not divide into "
        f"train.grad_accum_steps={t.grad_accum_steps} microbatches; make the batch a multiple of it.")
  if len(config.mesh.axes) != len(config.mesh.shape):
    raise ConfigError(
        f"mesh.axes {config.mesh.axes} and mesh.shape {config.mesh.shape} must have the same length.")
  opt = config.optimizer
  if opt.schedule == "cosine" and t.steps <= opt.warmup_steps:
    raise ConfigError(
        f"A cosine schedule needs train.steps ({t.steps}) > optimizer.warmup_steps "
        f"({opt.warmup_steps}).")
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
  known = validation_metric_names(config) if best else None
  if best and known is not None and best not in known:
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


def _check_loggers(loggers: Sequence[str]) -> None:
  unknown = [name for name in loggers if name not in LOGGERS]
  if unknown:
    raise ConfigError(f"train.loggers has unknown loggers {unknown}; choose from {list(LOGGERS)}.")
  repeated = sorted({name for name in loggers if loggers.count(name) > 1})
  if repeated:
    raise ConfigError(f"train.loggers {tuple(loggers)} names {repeated[0]!r} twice; list each "
                      "logger once.")


def _check_ranges(config: ExperimentConfig) -> None:
  """Each numeric field within RANGES: a value outside its meaning fails here, naming the key,
  rather than as a crash or a quietly wrong run later."""
  for key, allowed in RANGES.items():
    if key == "model.num_encoder_layers" and config.model.architecture == "decoder_only":
      continue  # Must be 0 there (_check_architecture).
    value = get_field(config, key)
    if isinstance(value, tuple):
      if not all(v in allowed for v in value):
        raise ConfigError(f"{key}={value} must hold values {allowed}.")
    elif value not in allowed:
      raise ConfigError(f"{key}={value} must be {allowed}.")


def _check_architecture(m: ModelConfig) -> None:
  """A decoder-only model has one stack, model.num_decoder_layers deep: an encoder layer count
  left at its default would be ignored without a word."""
  if m.architecture == "decoder_only" and m.num_encoder_layers != 0:
    raise ConfigError(
        f"model.architecture='decoder_only' has no encoder, but model.num_encoder_layers="
        f"{m.num_encoder_layers}: set model.num_encoder_layers=0 (its one stack has "
        f"model.num_decoder_layers={m.num_decoder_layers} layers).")


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


def check_types(config: ExperimentConfig, where: str = "") -> None:
  """Checks every field against its annotation, converting harmless differences in place (see
  coerce): a wrong type would otherwise fail later as a TypeError from deep inside. `where`
  (" in FILE") says where the values came from."""
  _check_sections(config, where)
  for key in all_keys(config):
    section, _, name = key.rpartition(".")
    owner = getattr(config, section) if section else config
    value = getattr(owner, name)
    annotation = field_types(type(owner))[name]
    try:
      setattr(owner, name, coerce(value, annotation))
    except (TypeError, ValueError):
      raise ConfigError(f"{key} = {value!r} ({type(value).__name__}){where} must be of type "
                        f"{type_name(annotation)}.") from None


def _check_sections(config: ExperimentConfig, where: str) -> None:
  """Each section is of its declared class and holds only its fields: an experiment file
  that sets a misspelt field (config.model.tie_logit = True) would otherwise run without it."""
  hints = field_types(ExperimentConfig)
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
      raise unknown_key_error(config, prefix + unknown[0], where)
