"""Hugging Face T5 interop: configs, parameter mapping and checkpoint folders.

A Hugging Face T5 folder (config.json plus model.safetensors, sharded
safetensors or pytorch_model.bin) converts to and from t5x-lite's ModelConfig
and parameter pytree. The mapping is strict: every HF tensor must land in
exactly one t5x-lite parameter and every parameter must be filled, so a
converted model is never partly random.

A workdir holds the model as a parameters-only Orbax checkpoint (step 0) plus
config.json, so eval, infer and export read it as they read a trained run, and
fine-tuning starts from it with checkpoint.init_from. Its vocabulary is the
folder's spiece.model or, in folders transformers 5 saved (which have none),
one converted from tokenizer.json; for a ByT5 tokenizer, the byte vocabulary.

torch, safetensors and sentencepiece are imported only when a file needs them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pickle
import re
import shutil
import tempfile
from typing import Any, Callable, Optional

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from t5x_lite import checkpoints
from t5x_lite import model as t5x_model
from t5x_lite.config import ExperimentConfig, ModelConfig, UserError, from_dict, save_json
from t5x_lite.fileio import DIRECTORY_MODE, write_atomically

StateDict = dict[str, np.ndarray]
Params = dict[str, Any]


class InteropError(UserError, ValueError):
  """A checkpoint or config that cannot be converted; the message names what."""


# ----------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------

# (is_gated_act, dense_act_fn) in HF -> t5x-lite ffn_activation. HF's "gelu" is
# the exact erf GELU, which t5x-lite lacks (its gelu is the tanh approximation).
_ACTIVATION_FROM_HF = {
    (True, "gelu_new"): "gated-gelu",
    (True, "gelu_pytorch_tanh"): "gated-gelu",
    (False, "relu"): "relu",
    (True, "relu"): "gated-relu",
    (False, "gelu_new"): "gelu",
    (False, "gelu_pytorch_tanh"): "gelu",
    (True, "silu"): "swiglu",
    (True, "swish"): "swiglu",
}

# t5x-lite ffn_activation -> (feed_forward_proj, is_gated_act, dense_act_fn).
_ACTIVATION_TO_HF = {
    "gated-gelu": ("gated-gelu", True, "gelu_new"),
    "relu": ("relu", False, "relu"),
    "gated-relu": ("gated-relu", True, "relu"),
    "gelu": ("gelu_new", False, "gelu_new"),
    "swiglu": ("gated-silu", True, "silu"),
}

# t5x_lite.data.vocabulary's PAD_ID and EOS_ID, restated: importing the data pipeline would make
# this module need tensorflow_datasets, which tools/bench_hf_t5.py runs without.
_PAD_ID, _EOS_ID = 0, 1


def _hf_activation(hf_config: dict) -> tuple[bool, str]:
  """(is_gated_act, dense_act_fn) the way transformers' T5Config derives them."""
  proj = hf_config.get("feed_forward_proj", "relu")
  parts = proj.split("-")
  if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
    raise InteropError(f"feed_forward_proj={proj!r} is not 'ACT' or 'gated-ACT'.")
  gated, act = parts[0] == "gated", parts[-1]
  if proj == "gated-gelu":  # transformers' backwards-compatibility rule.
    act = "gelu_new"
  # Saved configs repeat the derived fields; transformers lets them win.
  return hf_config.get("is_gated_act", gated), hf_config.get("dense_act_fn", act)


# The model types that convert: T5 (T5.1.0, T5.1.1, Flan-T5, ByT5, UL2), mT5 (T5.1.1 with
# another vocabulary) and umT5 (a relative position bias in every layer).
_MODEL_TYPES = ("t5", "mt5", "umt5")


def _scales_logits(hf_config: dict) -> bool:
  """Whether transformers scales this model's logits by d_model**-0.5, decided per model type
  as transformers 5 does: its mT5 never scales (and saves tie_word_embeddings=true, which
  means only that lm_head may default to the embedding); T5 and umT5 scale when
  `scale_decoder_outputs` says so or, in configs saved before it existed, when
  `tie_word_embeddings` does (default true)."""
  if hf_config.get("model_type", "t5") == "mt5":
    return False
  return bool(hf_config.get("scale_decoder_outputs", hf_config.get("tie_word_embeddings", True)))


def model_config_from_hf(hf_config: dict) -> ModelConfig:
  """ModelConfig for a transformers T5Config, MT5Config or UMT5Config dict (absent keys take
  HF's defaults).

  Logits are scaled by d_model**-0.5 exactly when HF scales them (_scales_logits); t5x-lite
  ties the logits in that case and uses a separate matrix otherwise.
  """
  model_type = hf_config.get("model_type", "t5")
  if model_type not in _MODEL_TYPES:
    raise InteropError(f"model_type={model_type!r}: only the T5 family converts "
                       f"(model_type one of {', '.join(_MODEL_TYPES)}).")
  activation = _hf_activation(hf_config)
  if activation not in _ACTIVATION_FROM_HF:
    gated, act = activation
    raise InteropError(
        f"FFN activation {'gated-' if gated else ''}{act} has no t5x-lite equivalent; supported: "
        f"{sorted(('gated-' if g else '') + a for g, a in _ACTIVATION_FROM_HF)}.")
  num_layers = hf_config.get("num_layers", 6)
  decoder_layers = hf_config.get("num_decoder_layers")
  return ModelConfig(
      vocab_size=hf_config.get("vocab_size", 32128),
      d_model=hf_config.get("d_model", 512),
      d_ff=hf_config.get("d_ff", 2048),
      num_heads=hf_config.get("num_heads", 8),
      d_kv=hf_config.get("d_kv", 64),
      num_encoder_layers=num_layers,
      num_decoder_layers=num_layers if decoder_layers is None else decoder_layers,
      ffn_activation=_ACTIVATION_FROM_HF[activation],
      tie_logits=_scales_logits(hf_config),
      norm="rmsnorm",
      norm_eps=float(hf_config.get("layer_norm_epsilon", 1e-6)),
      position_scheme="relative_per_layer" if model_type == "umt5" else "relative",
      relative_attention_num_buckets=hf_config.get("relative_attention_num_buckets", 32),
      relative_attention_max_distance=hf_config.get("relative_attention_max_distance", 128),
      dropout_rate=float(hf_config.get("dropout_rate", 0.1)))


def ties_lm_head(hf_config: dict) -> bool:
  """Whether transformers fills a missing lm_head.weight with shared.weight: it ties the
  two when tie_word_embeddings (default true) holds, even for unscaled logits (a
  transformers 5 untied save says tie_word_embeddings=true, scale_decoder_outputs=false);
  its mT5 and umT5 configurations set it whatever the file says."""
  if hf_config.get("model_type", "t5") in ("mt5", "umt5"):
    return True
  return bool(hf_config.get("tie_word_embeddings", True))


def hf_config_from_model(config: ModelConfig) -> dict:
  """config.json contents that transformers' T5ForConditionalGeneration loads.

  Both tie_word_embeddings (transformers 4) and scale_decoder_outputs
  (transformers 5, which always ties weights unless the checkpoint holds a
  distinct lm_head) are written, so either version scales as t5x-lite does.
  """
  problems = []
  if config.architecture != "encoder_decoder":
    problems.append(f"architecture={config.architecture!r} (HF's T5 is an encoder-decoder)")
  if config.vocab_size is None:
    problems.append("vocab_size is None (resolve it from the vocabulary first)")
  if config.norm != "rmsnorm":
    problems.append(f"norm={config.norm!r} (HF T5 uses rmsnorm)")
  if config.position_scheme not in ("relative", "relative_per_layer"):
    problems.append(f"position_scheme={config.position_scheme!r} (HF's T5 family has a relative "
                    "position bias)")
  if config.ffn_activation not in _ACTIVATION_TO_HF:
    problems.append(f"ffn_activation={config.ffn_activation!r}")
  if problems:
    raise InteropError("This model has no HF T5 equivalent: " + "; ".join(problems) + ".")
  feed_forward_proj, gated, act = _ACTIVATION_TO_HF[config.ffn_activation]
  per_layer = config.position_scheme == "relative_per_layer"
  return {
      "architectures": ["UMT5ForConditionalGeneration" if per_layer else "T5ForConditionalGeneration"],
      "model_type": "umt5" if per_layer else "t5",
      "is_encoder_decoder": True,
      "vocab_size": config.vocab_size,
      "d_model": config.d_model,
      "d_kv": config.d_kv,
      "d_ff": config.d_ff,
      "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers,
      "num_heads": config.num_heads,
      "relative_attention_num_buckets": config.relative_attention_num_buckets,
      "relative_attention_max_distance": config.relative_attention_max_distance,
      "dropout_rate": config.dropout_rate,
      "layer_norm_epsilon": config.norm_eps,
      "initializer_factor": 1.0,
      "feed_forward_proj": feed_forward_proj,
      "is_gated_act": gated,
      "dense_act_fn": act,
      "tie_word_embeddings": config.tie_logits,
      "scale_decoder_outputs": config.tie_logits,
      "decoder_start_token_id": _PAD_ID,
      "pad_token_id": _PAD_ID,
      "eos_token_id": _EOS_ID,
      "use_cache": True,
  }


# ----------------------------------------------------------------------------
# Parameter mapping
# ----------------------------------------------------------------------------

# How a t5x-lite array relates to its HF tensor. _COPY: same layout (norm
# scales, the embedding). _IN: transposed; kernels are (in, out) here and torch
# Linear (out, in) there, e.g. q/k/v (d, heads * d_kv) and the attention output
# (heads * d_kv, d); relative bias tables are (heads, buckets) vs (buckets, heads).
_COPY, _IN = "copy", "in"

_ENCODER_LAYER = {
    ("relpos_bias", "rel_embedding"): ("layer.0.SelfAttention.relative_attention_bias.weight", _IN),
    ("pre_attention_layer_norm", "scale"): ("layer.0.layer_norm.weight", _COPY),
    ("attention", "query"): ("layer.0.SelfAttention.q.weight", _IN),
    ("attention", "key"): ("layer.0.SelfAttention.k.weight", _IN),
    ("attention", "value"): ("layer.0.SelfAttention.v.weight", _IN),
    ("attention", "out"): ("layer.0.SelfAttention.o.weight", _IN),
    ("pre_mlp_layer_norm", "scale"): ("layer.1.layer_norm.weight", _COPY),
    ("mlp", "wi_0"): ("layer.1.DenseReluDense.wi_0.weight", _IN),
    ("mlp", "wi_1"): ("layer.1.DenseReluDense.wi_1.weight", _IN),
    ("mlp", "wi"): ("layer.1.DenseReluDense.wi.weight", _IN),
    ("mlp", "wo"): ("layer.1.DenseReluDense.wo.weight", _IN),
}

_DECODER_LAYER = {
    ("relpos_bias", "rel_embedding"): ("layer.0.SelfAttention.relative_attention_bias.weight", _IN),
    ("pre_self_attention_layer_norm", "scale"): ("layer.0.layer_norm.weight", _COPY),
    ("self_attention", "query"): ("layer.0.SelfAttention.q.weight", _IN),
    ("self_attention", "key"): ("layer.0.SelfAttention.k.weight", _IN),
    ("self_attention", "value"): ("layer.0.SelfAttention.v.weight", _IN),
    ("self_attention", "out"): ("layer.0.SelfAttention.o.weight", _IN),
    ("pre_cross_attention_layer_norm", "scale"): ("layer.1.layer_norm.weight", _COPY),
    ("encoder_decoder_attention", "query"): ("layer.1.EncDecAttention.q.weight", _IN),
    ("encoder_decoder_attention", "key"): ("layer.1.EncDecAttention.k.weight", _IN),
    ("encoder_decoder_attention", "value"): ("layer.1.EncDecAttention.v.weight", _IN),
    ("encoder_decoder_attention", "out"): ("layer.1.EncDecAttention.o.weight", _IN),
    ("pre_mlp_layer_norm", "scale"): ("layer.2.layer_norm.weight", _COPY),
    ("mlp", "wi_0"): ("layer.2.DenseReluDense.wi_0.weight", _IN),
    ("mlp", "wi_1"): ("layer.2.DenseReluDense.wi_1.weight", _IN),
    ("mlp", "wi"): ("layer.2.DenseReluDense.wi.weight", _IN),
    ("mlp", "wo"): ("layer.2.DenseReluDense.wo.weight", _IN),
}

_EMBEDDING_KEY = "shared.weight"
_LM_HEAD_KEY = "lm_head.weight"

_TOP_LEVEL = {
    ("token_embedder", "embedding"): (_EMBEDDING_KEY, _COPY),
    ("encoder", "relpos_bias", "rel_embedding"):
        ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", _IN),
    ("encoder", "encoder_norm", "scale"): ("encoder.final_layer_norm.weight", _COPY),
    ("decoder", "relpos_bias", "rel_embedding"):
        ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", _IN),
    ("decoder", "decoder_norm", "scale"): ("decoder.final_layer_norm.weight", _COPY),
    ("logits_dense",): (_LM_HEAD_KEY, _IN),
}

# Copies of shared.weight that HF checkpoints may also hold (t5x-lite has one embedding).
_EMBEDDING_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")

# Written by some old conversions and never used by transformers, which lists
# it in T5ForConditionalGeneration._keys_to_ignore_on_load_unexpected.
_UNUSED_HF_KEYS = frozenset(
    {"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"})


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One HF tensor <-> one t5x-lite array (or one layer of a scanned stack)."""

  path: tuple[str, ...]
  layer: Optional[int]  # Index into the leading axis of scanned parameters.
  hf_key: str
  kind: str
  shape: tuple[int, ...]  # The t5x-lite shape, without the scan axis.

  @property
  def hf_shape(self) -> tuple[int, ...]:
    if self.kind == _COPY:
      return self.shape
    return (int(np.prod(self.shape[1:])), self.shape[0])

  def to_t5x(self, tensor: np.ndarray) -> np.ndarray:
    return tensor if self.kind == _COPY else tensor.T.reshape(self.shape)

  def to_hf(self, array: np.ndarray) -> np.ndarray:
    if self.kind == _IN:
      array = array.reshape(self.shape[0], -1).T
    return np.ascontiguousarray(array)


def flat_abstract_params(config: ModelConfig) -> dict[tuple[str, ...], Any]:
  """The model's parameter shapes, keyed by their path in the parameter tree."""
  return flax.traverse_util.flatten_dict(t5x_model.abstract_params(config)[0])


def _entries(abstract: dict[tuple[str, ...], Any]) -> list[_Entry]:
  """The mapping for a flattened abstract parameter tree (so any layout works)."""
  entries = []
  for path, leaf in abstract.items():
    if path[0] in ("encoder", "decoder") and path[1].startswith("layers"):
      table = _ENCODER_LAYER if path[0] == "encoder" else _DECODER_LAYER
      if path[2:] not in table:
        raise InteropError(f"t5x-lite parameter {'/'.join(path)} has no HF T5 counterpart.")
      suffix, kind = table[path[2:]]
      if path[1] == "layers":  # scan_layers: one array, layers on axis 0.
        entries += [_Entry(path, i, f"{path[0]}.block.{i}.{suffix}", kind, tuple(leaf.shape[1:]))
                    for i in range(leaf.shape[0])]
      else:
        i = int(path[1].removeprefix("layers_"))
        entries.append(_Entry(path, None, f"{path[0]}.block.{i}.{suffix}", kind, tuple(leaf.shape)))
    elif path in _TOP_LEVEL:
      hf_key, kind = _TOP_LEVEL[path]
      entries.append(_Entry(path, None, hf_key, kind, tuple(leaf.shape)))
    else:
      raise InteropError(f"t5x-lite parameter {'/'.join(path)} has no HF T5 counterpart.")
  return entries


def _fmt_shape(shape: tuple[int, ...]) -> str:
  return "(" + ", ".join(str(s) for s in shape) + ")"


def _resolve_tied(state_dict: StateDict, config: ModelConfig,
                  lm_head_is_embedding: bool) -> tuple[StateDict, list[str]]:
  """Folds HF's copies of the embedding into the tensors t5x-lite keeps.

  Returns the state dict with only mapped names (plus anything unknown) and
  the problems found: copies that differ cannot be represented.
  """
  resolved = dict(state_dict)
  problems = []
  for key in _UNUSED_HF_KEYS:
    resolved.pop(key, None)
  copies = {key: resolved.pop(key) for key in _EMBEDDING_ALIASES if key in resolved}
  if config.tie_logits and _LM_HEAD_KEY in resolved:
    copies[_LM_HEAD_KEY] = resolved.pop(_LM_HEAD_KEY)
  if _EMBEDDING_KEY not in resolved and copies:
    # transformers ties symmetrically: any present copy stands for shared.weight.
    resolved[_EMBEDDING_KEY] = next(iter(copies.values()))
  embedding = resolved.get(_EMBEDDING_KEY)
  for key, tensor in copies.items():
    if embedding is None or not np.array_equal(tensor, embedding):
      why = ("the logits are tied (tie_word_embeddings / scale_decoder_outputs)"
             if key == _LM_HEAD_KEY else "t5x-lite has a single token embedding")
      problems.append(f"{key} differs from {_EMBEDDING_KEY}, but {why}")
  if not config.tie_logits and _LM_HEAD_KEY not in resolved and embedding is not None:
    if lm_head_is_embedding:  # transformers then uses shared.weight as lm_head, unscaled.
      resolved[_LM_HEAD_KEY] = embedding
    else:
      problems.append(
          f"{_LM_HEAD_KEY} is missing and the config says tie_word_embeddings=false, so "
          "transformers would start it at random: the checkpoint holds no output layer (was "
          "it saved from T5Model or T5EncoderModel?); save the T5ForConditionalGeneration "
          "model instead")
  return resolved, problems


def params_from_hf(state_dict: StateDict, config: ModelConfig,
                   lm_head_is_embedding: bool = False) -> Params:
  """t5x-lite params (numpy, config.param_dtype) from an HF T5 state dict.

  `lm_head_is_embedding`: an untied model may lack lm_head.weight, and uses
  shared.weight in its place (HF's tie_word_embeddings: see ties_lm_head).
  Raises InteropError listing every unknown, missing or mis-shaped tensor.
  """
  entries = _entries(flat_abstract_params(config))
  resolved, problems = _resolve_tied(state_dict, config, lm_head_is_embedding)
  expected = {e.hf_key for e in entries}
  for key in sorted(set(resolved) - expected):
    problems.append(f"unexpected tensor {key} {_fmt_shape(np.shape(resolved[key]))}: "
                    "no t5x-lite parameter for it")
  for e in entries:
    if e.hf_key not in resolved:
      problems.append(f"missing tensor {e.hf_key} (expected shape {_fmt_shape(e.hf_shape)}) "
                      f"for t5x-lite {'/'.join(e.path)}")
    elif tuple(np.shape(resolved[e.hf_key])) != e.hf_shape:
      problems.append(f"tensor {e.hf_key} has shape {_fmt_shape(np.shape(resolved[e.hf_key]))}, "
                      f"expected {_fmt_shape(e.hf_shape)} for this config")
  if problems:
    raise InteropError("Cannot convert the HF T5 checkpoint:\n  " + "\n  ".join(problems))
  dtype = jnp.dtype(config.param_dtype)
  layers: dict[tuple[str, ...], dict[int, np.ndarray]] = {}
  flat = {}
  for e in entries:
    array = np.asarray(e.to_t5x(np.asarray(resolved[e.hf_key])), dtype=dtype)
    if e.layer is None:
      flat[e.path] = array
    else:
      layers.setdefault(e.path, {})[e.layer] = array
  for path, by_layer in layers.items():
    flat[path] = np.stack([by_layer[i] for i in range(len(by_layer))])
  return flax.traverse_util.unflatten_dict(flat)


def params_to_hf(params: Params, config: ModelConfig) -> StateDict:
  """HF T5 state dict (numpy, the params' dtypes) from t5x-lite params.

  Tied models get shared.weight only, as transformers saves them.
  """
  hf_config_from_model(config)  # Raises for models HF T5 cannot express.
  flat = flax.traverse_util.flatten_dict(params)
  expected = flat_abstract_params(config)
  problems = [f"unexpected parameter {'/'.join(p)}" for p in sorted(set(flat) - set(expected))]
  problems += [f"missing parameter {'/'.join(p)}" for p in sorted(set(expected) - set(flat))]
  problems += [
      f"parameter {'/'.join(p)} has shape {_fmt_shape(np.shape(flat[p]))}, expected "
      f"{_fmt_shape(leaf.shape)}" for p, leaf in expected.items()
      if p in flat and tuple(np.shape(flat[p])) != tuple(leaf.shape)]
  if problems:
    raise InteropError("Parameters do not match the model config:\n  " + "\n  ".join(problems))
  state_dict = {}
  for e in _entries(expected):
    array = np.asarray(flat[e.path])
    state_dict[e.hf_key] = e.to_hf(array if e.layer is None else array[e.layer])
  return state_dict


# ----------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------

_CONFIG_FILE = "config.json"
_SAFETENSORS_FILE = "model.safetensors"
_SAFETENSORS_INDEX = "model.safetensors.index.json"
_TORCH_FILE = "pytorch_model.bin"
_TORCH_INDEX = "pytorch_model.bin.index.json"
SPIECE_FILE = "spiece.model"
TOKENIZER_FILE = "tokenizer.json"
_TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# T5's sentinel count, t5x_lite.data's default (restated for the reason given at _PAD_ID);
# a folder's tokenizer_config.json may give another (umT5's 300).
_EXTRA_IDS = 100
VOCABULARY_HINT = ("T5, T5.1.1 and Flan-T5 share T5's 32000-piece spiece.model (the "
                    "google-t5/t5-base repository on the Hugging Face Hub has it)")


def _safetensors() -> Any:
  """safetensors (with its numpy API), imported on first use (only file I/O needs it)."""
  try:
    import safetensors.numpy  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise InteropError("Reading or writing safetensors needs: pip install safetensors.") from e
  return safetensors


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except ValueError as e:  # Not JSON, or not UTF-8.
    raise InteropError(f"{path} is not valid JSON ({e}); download or save it again.") from e


def _read_safetensors(path: str) -> StateDict:
  safetensors = _safetensors()
  try:
    return safetensors.numpy.load_file(path)
  except (OSError, safetensors.SafetensorError) as e:
    raise InteropError(f"{path} cannot be read as safetensors ({e}); it may be truncated or "
                       "damaged: download or save it again.") from e


def _read_torch(path: str) -> StateDict:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise InteropError(
        f"Reading {path} needs PyTorch: pip install torch, or convert it to safetensors.") from e
  try:
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
  except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
    raise InteropError(f"{path} cannot be read as a PyTorch checkpoint ({e}); it may be "
                       "truncated or damaged: download or save it again.") from e
  # numpy has no bfloat16: go through float32 and back to ml_dtypes' bfloat16.
  return {k: (np.asarray(v.float().numpy(), jnp.bfloat16) if v.dtype == torch.bfloat16
              else v.numpy()) for k, v in state_dict.items()}


def _read_sharded(folder: str, index_file: str, read: Callable[[str], StateDict]) -> StateDict:
  index = _read_json(os.path.join(folder, index_file))
  weight_map = index.get("weight_map") if isinstance(index, dict) else None
  if not isinstance(weight_map, dict):
    raise InteropError(f"{index_file} in {folder} has no weight_map; download or save it again.")
  shards = sorted(set(map(str, weight_map.values())))
  missing = [shard for shard in shards if not os.path.isfile(os.path.join(folder, shard))]
  if missing:
    raise InteropError(f"{index_file} in {folder} lists shards the folder lacks: "
                       f"{', '.join(missing)}; download or save them again.")
  state_dict: StateDict = {}
  for shard in shards:
    for key, value in read(os.path.join(folder, shard)).items():
      if key in state_dict:
        raise InteropError(f"Tensor {key} appears in more than one shard of {folder}.")
      state_dict[key] = value
  absent = sorted(set(weight_map) - set(state_dict))
  if absent:
    raise InteropError(
        f"{index_file} in {folder} lists tensors its shards lack: {', '.join(absent)}.")
  return state_dict


def load_hf_folder(path: str) -> tuple[dict, StateDict]:
  """(config.json dict, numpy state dict) of a saved HF T5 model folder."""
  if not os.path.isdir(path):
    problem = "is a file" if os.path.exists(path) else "does not exist"
    raise InteropError(f"{path} {problem}; pass the folder save_pretrained wrote (config.json "
                       "and the weights).")
  config_path = os.path.join(path, _CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise InteropError(f"{path} has no {_CONFIG_FILE}; expected a folder from save_pretrained.")
  hf_config = _read_json(config_path)
  if not isinstance(hf_config, dict):
    raise InteropError(f"{config_path} holds no JSON object of T5Config fields.")
  if os.path.isfile(os.path.join(path, _SAFETENSORS_FILE)):
    state_dict = _read_safetensors(os.path.join(path, _SAFETENSORS_FILE))
  elif os.path.isfile(os.path.join(path, _SAFETENSORS_INDEX)):
    state_dict = _read_sharded(path, _SAFETENSORS_INDEX, _read_safetensors)
  elif os.path.isfile(os.path.join(path, _TORCH_FILE)):
    state_dict = _read_torch(os.path.join(path, _TORCH_FILE))
  elif os.path.isfile(os.path.join(path, _TORCH_INDEX)):
    state_dict = _read_sharded(path, _TORCH_INDEX, _read_torch)
  else:
    raise InteropError(
        f"{path} holds no weights: expected one of {_SAFETENSORS_FILE}, {_SAFETENSORS_INDEX}, "
        f"{_TORCH_FILE}, {_TORCH_INDEX}; found {sorted(os.listdir(path))}.")
  return hf_config, state_dict


def save_hf_folder(path: str, params: Params, config: ModelConfig,
                   tokenizer_files: Optional[dict[str, bytes]] = None) -> None:
  """Writes config.json, model.safetensors and the tokenizer's files (name -> content, see
  _tokenizer_files) as the folder `path`.

  The folder loads with T5ForConditionalGeneration.from_pretrained(path); it is written as
  write_folder writes.
  """
  hf_config = hf_config_from_model(config)
  state_dict = params_to_hf(params, config)
  save_file = _safetensors().numpy.save_file

  def fill(folder: str) -> None:
    write_atomically(os.path.join(folder, _CONFIG_FILE), json.dumps(hf_config, indent=2) + "\n")
    # transformers refuses safetensors files whose metadata does not name a format.
    save_file(state_dict, os.path.join(folder, _SAFETENSORS_FILE), metadata={"format": "pt"})
    for name, content in (tokenizer_files or {}).items():
      write_atomically(os.path.join(folder, name), content)

  write_folder(path, fill)


def write_folder(path: str, fill: Callable[[str], None]) -> None:
  """Makes the folder `path`: `fill` writes into a new folder beside it, which then moves into
  place. A folder already at `path` is replaced whole (callers check it may be, see
  check_export_folder), and a failed export leaves it as it was."""
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}-export-", dir=parent)
  try:
    fill(staging)
    os.chmod(staging, DIRECTORY_MODE)  # mkdtemp's folders are private.
    if os.path.exists(path):
      replaced = staging + "-replaced"
      os.rename(path, replaced)
      os.rename(staging, path)
      shutil.rmtree(replaced)
    else:
      os.rename(staging, path)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


# Files a Hugging Face model folder holds (save_pretrained's, and export-hf's own): only a
# folder of such files is replaced by export-hf --overwrite.
_MODEL_FOLDER_FILE = re.compile(
    r"(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens)"
    r"\.json|spiece\.model|model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json|"
    r"pytorch_model(-\d+-of-\d+)?\.bin|pytorch_model\.bin\.index\.json")


def check_export_folder(path: str, overwrite: bool,
                        model_file: re.Pattern[str] = _MODEL_FOLDER_FILE) -> None:
  """Refuses a file; a folder holding a model (only names `model_file` matches) unless
  `overwrite` (which replaces it whole, so no other model's shards stay beside the new
  files); a folder holding anything else."""
  if not os.path.exists(path):
    return
  if not os.path.isdir(path):
    raise InteropError(f"--output {path} is a file; give a new or empty folder.")
  names = sorted(os.listdir(path))
  if not names:
    return
  shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
  if not all(model_file.fullmatch(name) for name in names):
    raise InteropError(
        f"--output {path} is not empty and holds files that are not a model's ({shown}); "
        "export into a new or empty folder.")
  if not overwrite:
    raise InteropError(
        f"--output {path} holds a model already ({shown}); pass --overwrite to replace it "
        "(the whole folder), or export into a new folder.")


# ----------------------------------------------------------------------------
# Vocabularies
# ----------------------------------------------------------------------------

# The characters transformers' WhitespaceSplit splits words at (Unicode White_Space).
_WHITESPACE = (0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
               0x2028, 0x2029, 0x202F, 0x205F, 0x3000)


def spiece_from_tokenizer_json(path: str, extra_ids: int = _EXTRA_IDS) -> bytes:
  """A SentencePiece model that tokenizes as transformers' T5Tokenizer does with a
  tokenizer.json, for folders saved without spiece.model (transformers 5 writes none).

  T5Tokenizer builds its tokenizer from the file's Unigram pieces and scores and its
  precompiled character map (the SentencePiece normalizer) only: it splits words at
  whitespace, starts each with "▁", and has no byte fallback. SentencePiece does the same
  with that map (or, without one, a map that turns all whitespace into spaces),
  add_dummy_prefix and remove_extra_whitespaces. Ids agree except where two segmentations
  score exactly the same (the libraries break such ties differently) and for the literal
  text "<pad>", "</s>" or "<unk>". The `extra_ids` <extra_id_N> tokens at the top of the
  vocabulary are left out: t5x-lite's vocabulary adds them back at the same ids.
  """
  try:
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    from sentencepiece import sentencepiece_model_pb2  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise InteropError(f"Converting {path} needs: pip install sentencepiece protobuf.") from e
  tokenizer = _read_json(path)
  model = tokenizer.get("model") if isinstance(tokenizer, dict) else None
  cannot = f"Cannot convert {path} into a SentencePiece model"
  if not isinstance(model, dict) or model.get("type") != "Unigram":
    raise InteropError(f"{cannot}: it is not a SentencePiece Unigram tokenizer, as T5's is. "
                       f"Copy the model's spiece.model into the folder; {VOCABULARY_HINT}.")
  vocab = [(str(piece), float(score)) for piece, score in model.get("vocab") or []]
  pieces = vocab[:len(vocab) - extra_ids]
  sentinels = [piece for piece, _ in vocab[len(pieces):]]
  specials = [piece for piece, _ in pieces[:3]]
  problems = []
  if sentinels != [f"<extra_id_{i}>" for i in reversed(range(extra_ids))]:
    problems.append(f"its last {extra_ids} tokens are not <extra_id_{extra_ids - 1}> down to "
                    "<extra_id_0>")
  if specials != ["<pad>", "</s>", "<unk>"] or model.get("unk_id") != 2:
    problems.append(f"its first tokens are {specials}, not <pad>, </s> and <unk> (unk_id 2)")
  known = set(specials) | set(sentinels)
  added = sorted({str(token.get("content")) for token in tokenizer.get("added_tokens") or []}
                 - known)
  if added:
    problems.append(f"it adds tokens a T5 vocabulary has no place for: {', '.join(added[:5])}")
  if problems:
    raise InteropError(f"{cannot}: {'; '.join(problems)}. Copy the model's spiece.model into "
                       f"the folder; {VOCABULARY_HINT}.")
  proto = sentencepiece_model_pb2.ModelProto()
  kinds = sentencepiece_model_pb2.ModelProto.SentencePiece.Type
  for i, (piece, score) in enumerate(pieces):
    kind = kinds.CONTROL if i < 2 else kinds.UNKNOWN if i == 2 else kinds.NORMAL
    proto.pieces.add(piece=piece, score=score, type=kind)
  trainer = proto.trainer_spec
  trainer.model_type = sentencepiece_model_pb2.TrainerSpec.UNIGRAM
  trainer.vocab_size = len(pieces)
  trainer.pad_id, trainer.eos_id, trainer.unk_id, trainer.bos_id = _PAD_ID, _EOS_ID, 2, -1
  normalizer = proto.normalizer_spec
  normalizer.name = "t5x_lite_from_tokenizer_json"
  normalizer.precompiled_charsmap = (_precompiled_charsmap(tokenizer.get("normalizer"))
                                     or _whitespace_charsmap(spm, sentencepiece_model_pb2))
  normalizer.add_dummy_prefix = normalizer.remove_extra_whitespaces = True
  normalizer.escape_whitespaces = True
  return proto.SerializeToString()


def _precompiled_charsmap(normalizer: Any) -> bytes:
  """The SentencePiece character map in a tokenizer.json normalizer, as T5Tokenizer finds it."""
  if not isinstance(normalizer, dict):
    return b""
  steps = normalizer.get("normalizers") if normalizer.get("type") == "Sequence" else [normalizer]
  for step in steps or []:
    if isinstance(step, dict) and step.get("type") == "Precompiled" and step.get(
        "precompiled_charsmap"):
      return base64.b64decode(step["precompiled_charsmap"])
  return b""


def _whitespace_charsmap(spm: Any, sentencepiece_model_pb2: Any) -> bytes:
  """A SentencePiece character map that turns every whitespace character into a space."""
  with tempfile.TemporaryDirectory() as directory:
    rules = os.path.join(directory, "whitespace.tsv")
    with open(rules, "w") as f:
      f.writelines(f"{c:X}\t20\n" for c in _WHITESPACE if c != 0x20)
    spm.set_min_log_level(1)  # Else compiling the map logs each step.
    compiled = spm.SentencePieceNormalizer(rule_tsv=rules).serialized_normalizer_spec()
  return sentencepiece_model_pb2.NormalizerSpec.FromString(compiled).precompiled_charsmap


def _folder_vocabulary(path: str, hf_config: dict, vocab_size: int) -> Optional[tuple[bytes, int]]:
  """The folder's vocabulary as (the file a workdir keeps, data.vocab_extra_ids), checked to
  fit the model; None if it has none. A ByT5 tokenizer is the byte vocabulary with
  ByT5Tokenizer's 125 extra ids; else the SentencePiece model (spiece.model, else converted
  from tokenizer.json) with the extra ids tokenizer_config.json gives (T5's 100 without one;
  umT5's folders say 300)."""
  if _names_byt5_tokenizer(path, hf_config):
    from t5x_lite.data import vocabulary  # pylint: disable=import-outside-toplevel  (SentencePiece)
    byt5 = vocabulary.ByteVocabulary(vocabulary.BYT5_EXTRA_IDS)
    if byt5.unpadded_size > vocab_size:
      raise InteropError(
          f"{path} has a ByT5 tokenizer, whose {byt5.unpadded_size} ids (3 special, 256 bytes, "
          f"{byt5.extra_ids} sentinels) do not fit the model's vocab_size {vocab_size}: the "
          "tokenizer belongs to another model.")
    return byt5.serialized, byt5.extra_ids
  spiece = os.path.join(path, SPIECE_FILE)
  tokenizer = os.path.join(path, TOKENIZER_FILE)
  extra_ids = _tokenizer_config(path).get("extra_ids", _EXTRA_IDS)
  if not isinstance(extra_ids, int) or isinstance(extra_ids, bool) or extra_ids < 0:
    raise InteropError(f"{os.path.join(path, _TOKENIZER_CONFIG_FILE)} says extra_ids="
                       f"{extra_ids!r}; it must be a count of sentinel tokens (T5's is 100).")
  if os.path.isfile(spiece):
    name = spiece
    with open(spiece, "rb") as f:
      model = f.read()
  elif os.path.isfile(tokenizer):
    name = f"The vocabulary converted from {tokenizer}"
    model = spiece_from_tokenizer_json(tokenizer, extra_ids)
  else:
    return None
  check_vocabulary(model, name, vocab_size, extra_ids)
  return model, extra_ids


def _tokenizer_config(path: str) -> dict:
  """The folder's tokenizer_config.json, or {} without one."""
  file = os.path.join(path, _TOKENIZER_CONFIG_FILE)
  config = _read_json(file) if os.path.isfile(file) else {}
  return config if isinstance(config, dict) else {}


def _names_byt5_tokenizer(path: str, hf_config: dict) -> bool:
  """Whether the folder's tokenizer is transformers' ByT5Tokenizer (which saves no vocabulary
  file), as tokenizer_config.json or else config.json (the Hub's google/byt5-*) names it."""
  tokenizer_class = _tokenizer_config(path).get("tokenizer_class")
  return (tokenizer_class or hf_config.get("tokenizer_class")) == "ByT5Tokenizer"


def _tokenizer_files(vocabulary_path: str, extra_ids: int) -> dict[str, bytes]:
  """A workdir's vocabulary as an HF folder's tokenizer files, which AutoTokenizer loads
  with the same ids and `extra_ids` sentinels: a SentencePiece model as spiece.model and a
  tokenizer_config.json naming T5Tokenizer; the byte vocabulary as a tokenizer_config.json
  naming ByT5Tokenizer (the form of the Hub's google/byt5-* folders); nothing for a workdir
  without a vocabulary."""
  from t5x_lite.data import vocabulary  # pylint: disable=import-outside-toplevel  (SentencePiece)
  if not os.path.isfile(vocabulary_path):
    return {}
  byte_vocabulary = vocabulary.holds_byte_vocabulary(vocabulary_path)
  config = {"tokenizer_class": "ByT5Tokenizer" if byte_vocabulary else "T5Tokenizer",
            "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
            "extra_ids": extra_ids}
  files = {_TOKENIZER_CONFIG_FILE: (json.dumps(config, indent=2) + "\n").encode()}
  if not byte_vocabulary:
    with open(vocabulary_path, "rb") as f:
      files[SPIECE_FILE] = f.read()
  return files


def check_vocabulary(model: bytes, name: str, vocab_size: int, extra_ids: int = _EXTRA_IDS) -> None:
  """Refuses what is not a T5 SentencePiece model (`name` says whose) fitting vocab_size ids
  with `extra_ids` sentinels."""
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  try:
    processor = spm.SentencePieceProcessor(model_proto=model) if model else None
  except RuntimeError:
    processor = None
  if processor is None:
    raise InteropError(f"{name} is not a SentencePiece model; replace it with the model's own "
                       f"spiece.model ({VOCABULARY_HINT}).")
  ids = (processor.pad_id(), processor.eos_id(), processor.unk_id())
  if ids != (_PAD_ID, _EOS_ID, 2):
    raise InteropError(f"{name} has pad/eos/unk ids {ids}; T5 vocabularies have (0, 1, 2).")
  needed = processor.get_piece_size() + extra_ids
  if needed > vocab_size:
    raise InteropError(
        f"{name} has {processor.get_piece_size()} pieces, which with {extra_ids} sentinels "
        f"need {needed} ids, but the model's vocab_size is {vocab_size}: the vocabulary belongs "
        "to another model.")


# ----------------------------------------------------------------------------
# Workdirs
# ----------------------------------------------------------------------------


def import_hf(path: str, workdir: str, scan_layers: bool = False) -> ExperimentConfig:
  """Converts an HF T5 folder into a new t5x-lite workdir.

  Writes a parameters-only checkpoint at step 0, config.json, and the folder's
  vocabulary (_folder_vocabulary: bytes for a ByT5 tokenizer, else spiece.model or
  tokenizer.json converted) as the workdir's vocabulary file, which data.vocabulary
  names (empty if the folder has none).
  The workdir must be new or empty, so nothing of another run is mixed in.
  """
  check_new_workdir(workdir)
  hf_config, state_dict = load_hf_folder(path)
  model_config = dataclasses.replace(model_config_from_hf(hf_config), scan_layers=scan_layers)
  vocabulary = _folder_vocabulary(path, hf_config, model_config.vocab_size)
  params = params_from_hf(state_dict, model_config, ties_lm_head(hf_config))
  experiment = ExperimentConfig(model=model_config, name=os.path.basename(os.path.normpath(path)))
  vocabulary_file = None
  if vocabulary is not None:
    vocabulary_file, experiment.data.vocab_extra_ids = vocabulary
  save_workdir(workdir, params, experiment, vocabulary_file)
  return experiment


def check_new_workdir(workdir: str) -> None:
  """An import writes a new or empty workdir, so nothing of another run is mixed in."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise InteropError(f"--workdir {workdir} is a file; import into a new folder.")
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise InteropError(f"{workdir} is not empty; import into a new workdir.")


def save_workdir(workdir: str, params: Params, experiment: ExperimentConfig,
                 vocabulary_model: Optional[bytes]) -> None:
  """Writes an imported model as a workdir: a parameters-only checkpoint at step 0,
  config.json and, if given, the SentencePiece model as its vocabulary file, which
  experiment.data.vocabulary then names."""
  os.makedirs(workdir, exist_ok=True)
  vocabulary = None
  if vocabulary_model is not None:
    vocabulary = os.path.abspath(os.path.join(workdir, checkpoints.VOCABULARY_FILE))
    with open(vocabulary, "wb") as f:
      f.write(vocabulary_model)
    experiment.data.vocabulary = vocabulary
  checkpoints.save_params(workdir, params, experiment, vocabulary_path=vocabulary)
  save_json(experiment, os.path.join(workdir, _CONFIG_FILE))


def export_hf(workdir: str, output: str, step: Optional[int] = None,
              overwrite: bool = False) -> ExperimentConfig:
  """Writes the parameters of a workdir's checkpoint (default: latest) as an HF T5 folder.

  Works for trained and imported workdirs alike: the model comes from the
  checkpoint's own config; WORKDIR/vocabulary.model, if present, becomes the tokenizer's
  files (_tokenizer_files: spiece.model, or ByT5's tokenizer_config.json).
  `output` must be new or empty, or hold a model and `overwrite` be set (check_export_folder).
  """
  check_export_folder(output, overwrite)
  experiment, params, _ = read_workdir_params(workdir, step)
  save_hf_folder(output, params, experiment.model, _tokenizer_files(
      os.path.join(workdir, checkpoints.VOCABULARY_FILE), experiment.data.vocab_extra_ids))
  return experiment


def read_workdir_params(workdir: str, step: Optional[int] = None) -> tuple[ExperimentConfig, Params, int]:
  """(experiment, numpy params, step) of a workdir's checkpoint (default: latest), trained or
  imported alike: the model comes from the checkpoint's own config."""
  meta = checkpoints.read_meta(workdir, step)  # Fixes the step: a trainer may add one meanwhile.
  experiment = from_dict(meta["config"])
  host = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  abstract = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=host),
                          t5x_model.abstract_params(experiment.model)[0])
  params = jax.device_get(checkpoints.restore_params(workdir, abstract, meta["step"]))
  return experiment, params, meta["step"]
