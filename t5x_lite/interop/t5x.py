"""T5X checkpoints (T5X's own format, in which the T5 family was released) to and from
t5x-lite workdirs.

A T5X checkpoint is a folder, MODEL_DIR/checkpoint_STEP, holding `checkpoint`: the msgpack
(flax.serialization) of {"version": 3, "optimizer": {"target": parameters, "state": {"step",
"param_states"}}}, as t5x.checkpoints.Checkpointer.save writes it. A leaf there is the array
itself or, for arrays written beside it, the tensorstore spec of a zarr array in the folder
named by the leaf's path with dots (target.encoder.layers_0.attention.query.kernel).

Read: that format (the "classic" one: the released checkpoints; T5X's Checkpointer and
utils.LegacyCheckpointManager write it) in the parameter layouts of T5X's T5 networks
(LAYOUTS): examples/t5 (T5.1.1, mT5, ByT5 and Flan-T5 were released in it) and
examples/scalable_t5 (umT5), its layers scanned or not. The optimizer state is skipped. Not
read: the Orbax format (a checkpoint_STEP/state/ folder) that T5X's default checkpoint
manager, OrbaxCheckpointManagerInterface, writes; Mesh TensorFlow checkpoints, which T5X's
checkpoint_importer converts.

Written: the classic format with the parameters and the step only, as T5X saves an
InferenceState. t5x.checkpoints.load_t5x_checkpoint and T5X's eval and infer read it;
training from it in T5X starts the optimizer state afresh: RestoreCheckpointConfig(
assignment_map=((r"state/param_states.*", None),), fallback_to_scratch=True).

T5X checkpoints do not record the model's configuration: resolve_model_config takes it from a
preset, overrides and the arrays' shapes. The mapping is as strict as hf.py's: every array of
the checkpoint lands in exactly one t5x-lite parameter and every parameter is filled. Arrays
are converted one at a time, so a conversion holds one copy of the model.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
from typing import Any, Iterator, Optional, Sequence

import flax.serialization
import flax.traverse_util
import jax.numpy as jnp
import numpy as np
import tensorstore as ts

from t5x_lite import checkpoints
from t5x_lite.config import (
                             MODEL_PRESETS,
                             ExperimentConfig,
                             ModelConfig,
                             apply_overrides,
                             from_dict,
                             validate,
)
from t5x_lite.interop.hf import (
                                 InteropError,
                                 Params,
                                 check_export_folder,
                                 check_new_workdir,
                                 check_vocabulary,
                                 flat_abstract_params,
                                 read_workdir_params,
                                 save_workdir,
                                 write_folder,
)

CHECKPOINT_FILE = "checkpoint"
_STEP_FOLDER = re.compile(r"checkpoint_(\d+)")
# T5X's checkpoint version since 2021 (bfloat16 arrays stored as bfloat16, not uint16).
_VERSION = 3
# The keys that make a msgpack leaf the tensorstore spec of an array written beside it.
_SPEC_KEYS = frozenset({"driver", "kvstore", "metadata"})
# T5X's target size of a tensorstore chunk.
_CHUNK_BYTES = 64 * 1024 * 1024
_MAX_REPORTED = 20


# ----------------------------------------------------------------------------
# Layouts and the parameter mapping
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a T5X network names and shapes its layers' parameters."""

  name: str
  # Attention kernels (d_model, heads, d_kv) and (heads, d_kv, d_model), else 2-D as t5x-lite's.
  split_heads: bool
  # One array per parameter for all of a stack's layers, under encoder/encoder/ (and
  # decoder/decoder/), the layers on axis 1 (scalable_t5's param_scan_axis); else one per
  # layer, under encoder/layers_N/.
  scanned: bool


T5 = Layout("examples/t5", split_heads=False, scanned=False)
SCALABLE_T5 = Layout("examples/scalable_t5 with scan_layers=False", split_heads=True, scanned=False)
SCALABLE_T5_SCANNED = Layout("examples/scalable_t5, scanned", split_heads=True, scanned=True)
LAYOUTS = (T5, SCALABLE_T5, SCALABLE_T5_SCANNED)

# How one layer's t5x-lite array becomes its T5X array: the same shape, or an attention kernel
# whose (d_model, heads * d_kv) (_QKV) or (heads * d_kv, d_model) (_OUT) a split_heads layout
# stores split. Each is a reshape: no element moves.
_SAME, _QKV, _OUT = "same", "qkv", "out"

# A layer's parameters: t5x-lite path under encoder/layers_N (or decoder/layers_N) -> T5X path
# under the layer's scope. Both stacks use it: their sublayers' names differ.
_LAYER = {
    ("relpos_bias", "rel_embedding"): ("relpos_bias/rel_embedding", _SAME),  # umT5's, per layer
    ("pre_attention_layer_norm", "scale"): ("pre_attention_layer_norm/scale", _SAME),
    ("pre_self_attention_layer_norm", "scale"): ("pre_self_attention_layer_norm/scale", _SAME),
    ("pre_cross_attention_layer_norm", "scale"): ("pre_cross_attention_layer_norm/scale", _SAME),
    ("pre_mlp_layer_norm", "scale"): ("pre_mlp_layer_norm/scale", _SAME),
    **{(attention, matrix): (f"{attention}/{matrix}/kernel", _OUT if matrix == "out" else _QKV)
       for attention in ("attention", "self_attention", "encoder_decoder_attention")
       for matrix in ("query", "key", "value", "out")},
    **{("mlp", dense): (f"mlp/{dense}/kernel", _SAME) for dense in ("wi", "wi_0", "wi_1", "wo")},
}

_EMBEDDING = "token_embedder/embedding"
_LOGITS = "decoder/logits_dense/kernel"

_TOP_LEVEL = {
    ("token_embedder", "embedding"): _EMBEDDING,
    ("encoder", "relpos_bias", "rel_embedding"): "encoder/relpos_bias/rel_embedding",
    ("encoder", "encoder_norm", "scale"): "encoder/encoder_norm/scale",
    ("decoder", "relpos_bias", "rel_embedding"): "decoder/relpos_bias/rel_embedding",
    ("decoder", "decoder_norm", "scale"): "decoder/decoder_norm/scale",
    ("logits_dense",): _LOGITS,
}

# A t5x-lite array, or one layer of a scanned one: its path and its index on the layer axis.
_Part = tuple[tuple[str, ...], Optional[int]]


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One T5X array and the t5x-lite arrays (or layers of them) it holds."""

  name: str  # Its path in T5X's parameter tree, "/"-separated.
  layer_shape: tuple[int, ...]  # Its shape, or one layer's where stacked.
  parts: tuple[_Part, ...]  # Where stacked, one per layer, in order.
  part_shape: tuple[int, ...]  # The t5x-lite shape of a part.
  stacked: bool  # The layers on axis 1.

  @property
  def shape(self) -> tuple[int, ...]:
    if not self.stacked:
      return self.layer_shape
    return self.layer_shape[:1] + (len(self.parts),) + self.layer_shape[1:]

  def to_t5x_lite(self, array: np.ndarray) -> Iterator[tuple[_Part, np.ndarray]]:
    for i, part in enumerate(self.parts):
      layer = np.take(array, i, axis=1) if self.stacked else array
      yield part, layer.reshape(self.part_shape)

  def to_t5x(self, flat: dict[tuple[str, ...], np.ndarray]) -> np.ndarray:
    layers = [(flat[path] if index is None else flat[path][index]).reshape(self.layer_shape)
              for path, index in self.parts]
    return np.stack(layers, axis=1) if self.stacked else layers[0]


def _t5x_layer_shape(shape: tuple[int, ...], kind: str, layout: Layout,
                     config: ModelConfig) -> tuple[int, ...]:
  heads, d_kv = config.num_heads, config.d_kv
  if layout.split_heads and kind == _QKV:
    return (shape[0], heads, d_kv)
  if layout.split_heads and kind == _OUT:
    return (heads, d_kv, shape[1])
  return shape


def _entries(abstract: dict[tuple[str, ...], Any], config: ModelConfig,
             layout: Layout) -> list[_Entry]:
  """The mapping of a flattened abstract parameter tree (scanned or not) to `layout`'s arrays."""
  if config.architecture != "encoder_decoder":
    # T5X's examples/decoder_only network keeps its embedding in the decoder scope.
    raise InteropError(f"architecture={config.architecture!r}: only encoder-decoder models convert "
                       "to and from T5X checkpoints.")
  entries = []
  stacks: dict[tuple[str, tuple[int, ...], tuple[int, ...]], dict[int, _Part]] = {}
  for path, leaf in abstract.items():
    if path[0] in ("encoder", "decoder") and path[1].startswith("layers"):
      if path[2:] not in _LAYER:
        raise InteropError(f"t5x-lite parameter {'/'.join(path)} has no T5X counterpart.")
      suffix, kind = _LAYER[path[2:]]
      scanned = path[1] == "layers"  # scan_layers: one array, the layers on axis 0.
      shape = tuple(leaf.shape[1:] if scanned else leaf.shape)
      t5x_shape = _t5x_layer_shape(shape, kind, layout, config)
      layers = range(leaf.shape[0]) if scanned else [int(path[1].removeprefix("layers_"))]
      for i in layers:
        part = (path, i if scanned else None)
        if layout.scanned:
          stacks.setdefault((f"{path[0]}/{path[0]}/{suffix}", t5x_shape, shape), {})[i] = part
        else:
          entries.append(_Entry(f"{path[0]}/layers_{i}/{suffix}", t5x_shape, (part,), shape, False))
    elif path in _TOP_LEVEL:
      shape = tuple(leaf.shape)
      entries.append(_Entry(_TOP_LEVEL[path], shape, ((path, None),), shape, False))
    else:
      raise InteropError(f"t5x-lite parameter {'/'.join(path)} has no T5X counterpart.")
  for (name, t5x_shape, shape), layers in stacks.items():
    entries.append(_Entry(name, t5x_shape, tuple(layers[i] for i in sorted(layers)), shape, True))
  return entries


# ----------------------------------------------------------------------------
# Reading checkpoints
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A T5X checkpoint's parameters as its msgpack file lists them: T5X path ("/"-separated)
  -> the array, or the tensorstore spec (a dict) of the array stored beside."""

  folder: str
  target: dict[str, Any]

  @property
  def name(self) -> str:
    """The model's name: MODEL_DIR's for a checkpoint_STEP folder."""
    folder = os.path.normpath(os.path.abspath(self.folder))
    if _STEP_FOLDER.fullmatch(os.path.basename(folder)):
      folder = os.path.dirname(folder)
    return os.path.basename(folder)

  def shape(self, name: str) -> tuple[int, ...]:
    leaf = self.target[name]
    if not isinstance(leaf, dict):
      return tuple(np.shape(leaf))
    shape = leaf["metadata"].get("shape") if isinstance(leaf["metadata"], dict) else None
    if not isinstance(shape, list):
      raise InteropError(f"The spec of array {name} in {self.folder}/{CHECKPOINT_FILE} has no "
                         "shape; the file is damaged: copy the checkpoint again.")
    return tuple(shape)


def _is_orbax(folder: str) -> bool:
  """T5X's OrbaxCheckpointManagerInterface writes checkpoint_STEP/state/; Orbax's _METADATA
  beside a `checkpoint` file marks Orbax's older format (T5X's detect_checkpoint_type)."""
  return (os.path.isdir(os.path.join(folder, "state"))
          or os.path.isfile(os.path.join(folder, "_METADATA")))


def find_checkpoint(path: str) -> str:
  """The T5X checkpoint folder `path` names: the folder holding the `checkpoint` file, that
  file, or a MODEL_DIR holding one checkpoint_STEP folder (of several, T5X would take the
  latest; import asks which, so that no other step is converted unnoticed)."""
  if os.path.isfile(path) and os.path.basename(path) == CHECKPOINT_FILE:
    return os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(path):
    problem = "is a file" if os.path.exists(path) else "does not exist"
    raise InteropError(f"{path} {problem}; pass a T5X checkpoint folder (MODEL_DIR/checkpoint_STEP) "
                       "or the MODEL_DIR holding it.")
  if _is_orbax(path):
    raise InteropError(
        f"{path} is a T5X checkpoint in Orbax's format (T5X's default checkpoint manager writes "
        "it), which cannot be read here: only T5X's classic format, that of the "
        "released checkpoints, is. Save it from T5X in that format (utils.SaveCheckpointConfig("
        "checkpoint_manager_cls=utils.LegacyCheckpointManager)).")
  if os.path.isfile(os.path.join(path, CHECKPOINT_FILE)):
    return path
  names = sorted(os.listdir(path))
  steps = sorted((int(m.group(1)), name) for name in names
                 if (m := _STEP_FOLDER.fullmatch(name)) and os.path.isdir(os.path.join(path, name)))
  if len(steps) == 1:
    return find_checkpoint(os.path.join(path, steps[0][1]))
  if steps:
    raise InteropError(
        f"{path} holds {len(steps)} T5X checkpoints (steps {', '.join(str(s) for s, _ in steps)}); "
        f"pass the one to convert, e.g. {os.path.join(path, steps[-1][1])}.")
  shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") if names else "nothing"
  raise InteropError(f"{path} is not a T5X checkpoint: it has no `{CHECKPOINT_FILE}` file and no "
                     f"checkpoint_STEP folder (it holds {shown}).")


def read_checkpoint(path: str) -> Checkpoint:
  """The parameter tree of the T5X checkpoint at `path` (see find_checkpoint); no array is read."""
  folder = find_checkpoint(path)
  file = os.path.join(folder, CHECKPOINT_FILE)
  with open(file, "rb") as f:
    data = f.read()
  if data.startswith(b"model_checkpoint_path"):
    raise InteropError(f"{file} indexes a TensorFlow checkpoint (Mesh TensorFlow T5), not a T5X "
                       "one; convert it with T5X's checkpoint_importer first.")
  try:
    contents = flax.serialization.msgpack_restore(data)
  except (ValueError, TypeError) as e:
    raise InteropError(f"{file} cannot be read as T5X's msgpack ({e}); it may be truncated or "
                       "damaged: copy the checkpoint again.") from e
  optimizer = contents.get("optimizer") if isinstance(contents, dict) else None
  target = optimizer.get("target") if isinstance(optimizer, dict) else None
  if not isinstance(target, dict):
    raise InteropError(f"{file} holds no T5X parameters (no optimizer/target tree); it is not a "
                       "checkpoint T5X's Checkpointer wrote.")
  flat = flax.traverse_util.flatten_dict(
      target, is_leaf=lambda _, node: _SPEC_KEYS <= node.keys(), sep="/")
  return Checkpoint(folder, flat)


def _missing_chunks(directory: str, metadata: dict) -> list[str]:
  """The chunk files a zarr array lacks. tensorstore reads a missing chunk as zeros, but T5X's
  arrays have no fill value (null), so all their chunks are written and a missing one is damage."""
  if metadata.get("fill_value") is not None:
    return []
  separator = metadata.get("dimension_separator", ".")
  grid = [range(-(-size // chunk)) for size, chunk in zip(metadata["shape"], metadata["chunks"])]
  keys = (separator.join(map(str, index)) or "0" for index in itertools.product(*grid))
  return [key for key in keys if not os.path.isfile(os.path.join(directory, key))]


def _read_array(checkpoint: Checkpoint, name: str) -> np.ndarray:
  """One parameter, stored inline or as a zarr array in the checkpoint folder. A spec's path is
  relative to the folder, as T5X resolves it; one written to a gcs bucket reads the folder's copy."""
  leaf = checkpoint.target[name]
  if not isinstance(leaf, dict):
    return np.asarray(leaf)
  kvstore = leaf["kvstore"] if isinstance(leaf["kvstore"], dict) else {}
  relative = kvstore.get("path", leaf.get("path"))  # tensorstore before 0.1.14: spec["path"].
  if leaf.get("driver") != "zarr" or kvstore.get("driver") not in ("file", "gfile", "gcs") or not (
      isinstance(relative, str) and relative):
    raise InteropError(f"Array {name} is stored as {json.dumps(leaf, default=str)[:200]}; only T5X's zarr "
                       "arrays in files beside the checkpoint file can be read.")
  directory = os.path.join(checkpoint.folder, relative)
  found = f"Array {name} ({directory})"
  try:
    with open(os.path.join(directory, ".zarray"), encoding="utf-8") as f:
      metadata = json.load(f)
  except FileNotFoundError as e:
    raise InteropError(f"{found} is missing: the checkpoint is incomplete; copy it again.") from e
  except ValueError as e:
    raise InteropError(f"{found} has damaged metadata ({e}); copy the checkpoint again.") from e
  if not (isinstance(metadata, dict) and isinstance(metadata.get("shape"), list)
          and isinstance(metadata.get("chunks"), list)):
    raise InteropError(f"{found} has damaged metadata (no shape or chunks); copy the checkpoint "
                       "again.")
  if metadata.get("dtype") == "<u2":
    raise InteropError(f"{found} holds bfloat16 as uint16, as T5X wrote before its checkpoint "
                       "version 3 (2021); T5X itself no longer reads these.")
  if tuple(metadata["shape"]) != checkpoint.shape(name):
    raise InteropError(f"{found} has shape {tuple(metadata['shape'])}, but the checkpoint "
                       f"file says {checkpoint.shape(name)}; the checkpoint is damaged.")
  missing = _missing_chunks(directory, metadata)
  if missing:
    raise InteropError(f"{found} is incomplete: it lacks the chunk files {', '.join(missing[:5])}"
                       f"{', ...' if len(missing) > 5 else ''}; copy the checkpoint again.")
  try:
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": directory}},
                    open=True, read=True).result()
    return store.read().result()
  except ValueError as e:
    reason = (str(e).splitlines() or [""])[0]
    raise InteropError(f"{found} cannot be read ({reason}); it may be damaged: copy the "
                       "checkpoint again.") from e


# ----------------------------------------------------------------------------
# Model configurations
# ----------------------------------------------------------------------------


def _layer_shapes(shapes: dict[str, tuple[int, ...]], stack: str) -> tuple[int, dict]:
  """(number of layers, one layer's shape of each of its arrays) of a stack, scanned or not."""
  scanned = {name.removeprefix(f"{stack}/{stack}/"): shape for name, shape in shapes.items()
             if name.startswith(f"{stack}/{stack}/")}
  if scanned:
    return next(iter(scanned.values()))[1], {k: s[:1] + s[2:] for k, s in scanned.items()}
  layers = {int(m.group(1)) for name in shapes if (m := re.match(rf"{stack}/layers_(\d+)/", name))}
  first = {name.removeprefix(f"{stack}/layers_0/"): shape for name, shape in shapes.items()
           if name.startswith(f"{stack}/layers_0/")}
  return max(layers, default=-1) + 1, first


def inferred_fields(checkpoint: Checkpoint) -> tuple[dict[str, Any], bool]:
  """What the arrays' shapes say of the model: ModelConfig fields, and whether the FFN is
  gated. They cannot say which activation it uses, nor relative_attention_max_distance
  (T5X's networks fix it at 128) or norm_eps."""
  shapes = {name: checkpoint.shape(name) for name in checkpoint.target}
  embedding = shapes.get(_EMBEDDING, ())
  if len(embedding) != 2:
    raise InteropError(f"{checkpoint.folder} holds no {_EMBEDDING} (vocab, d_model): it is not a "
                       "T5 encoder-decoder's checkpoint.")
  encoder_layers, encoder = _layer_shapes(shapes, "encoder")
  decoder_layers, _ = _layer_shapes(shapes, "decoder")
  fields: dict[str, Any] = {
      "vocab_size": embedding[0], "d_model": embedding[1], "tie_logits": _LOGITS not in shapes,
      "num_encoder_layers": encoder_layers, "num_decoder_layers": decoder_layers}
  gated = "mlp/wi_0/kernel" in encoder
  hidden = encoder.get("mlp/wi_0/kernel") or encoder.get("mlp/wi/kernel")
  if hidden:
    fields["d_ff"] = hidden[-1]
  bias = encoder.get("relpos_bias/rel_embedding") or shapes.get("encoder/relpos_bias/rel_embedding")
  fields["position_scheme"] = ("none" if not bias else "relative_per_layer"
                               if "relpos_bias/rel_embedding" in encoder else "relative")
  if bias:
    fields["num_heads"], fields["relative_attention_num_buckets"] = bias[0], bias[-1]
  query = encoder.get("attention/query/kernel", ())
  if len(query) == 3:
    fields["num_heads"], fields["d_kv"] = query[1], query[2]
  elif len(query) == 2 and fields.get("num_heads"):
    fields["d_kv"] = query[1] // fields["num_heads"]
  return fields, gated


def _activations(gated: bool) -> str:
  return ("gated-gelu (T5.1.1, mT5, umT5, ByT5, Flan-T5), swiglu (UL2) or gated-relu" if gated
          else "relu (T5.1.0) or gelu")


# The settings an import records besides the model's: its vocabulary's sentinel count.
_IMPORT_DATA_KEYS = ("data.vocab_extra_ids",)


def resolve_model_config(path: str, preset: Optional[str] = None,
                         overrides: Sequence[str] = ()) -> ModelConfig:
  """The model of the T5X checkpoint at `path`, which the checkpoint does not record: `preset`
  (a MODEL_PRESETS name) or, without one, what the arrays' shapes say (inferred_fields), then
  the "model.FIELD=VALUE" `overrides` applied (import_extra_ids reads the data one). Without a
  preset they must name the FFN activation, the one thing the shapes do not tell."""
  keys = [item.split("=", 1)[0].strip() for item in overrides]
  others = [key for key in keys if not key.startswith("model.") and key not in _IMPORT_DATA_KEYS]
  if others:
    raise InteropError(f"--set {others[0]}: importing sets model.* fields and "
                       f"{', '.join(_IMPORT_DATA_KEYS)} only; set the others when you train, "
                       "evaluate or infer.")
  if preset is not None:
    if preset not in MODEL_PRESETS:
      raise InteropError(f"Unknown preset {preset!r}; choose one of {', '.join(MODEL_PRESETS)}.")
    model_config = MODEL_PRESETS[preset]()
  else:
    fields, gated = inferred_fields(read_checkpoint(path))
    if "model.ffn_activation" not in keys:
      raise InteropError(
          f"T5X checkpoints do not record their model: pass --preset NAME ({', '.join(MODEL_PRESETS)}"
          f"), or --set model.ffn_activation=ACTIVATION and the rest is read from the arrays' "
          f"shapes (this FFN is {'gated' if gated else 'not gated'}: {_activations(gated)}).")
    model_config = ModelConfig(**fields)
  return apply_overrides(ExperimentConfig(model=model_config),
                        [item for item, key in zip(overrides, keys) if key.startswith("model.")]).model


def import_extra_ids(overrides: Sequence[str], vocabulary: Optional[str]) -> int:
  """The sentinel count an import records: --set data.vocab_extra_ids, else the vocabulary's
  usual one (T5's 100; ByT5's 125 for "bytes"; umT5's spiece model needs 300 set)."""
  from t5x_lite.data.vocabulary import BYT5_EXTRA_IDS, BYTES  # pylint: disable=import-outside-toplevel
  default = BYT5_EXTRA_IDS if vocabulary == BYTES else ExperimentConfig().data.vocab_extra_ids
  return apply_overrides(ExperimentConfig(), [item for item in overrides if item.split(
      "=", 1)[0].strip() in _IMPORT_DATA_KEYS] or [f"data.vocab_extra_ids={default}"]).data.vocab_extra_ids


def _config_hint(checkpoint: Checkpoint, config: ModelConfig) -> str:
  """The settings the arrays' shapes ask for where `config` differs, as a hint."""
  try:
    fields, gated = inferred_fields(checkpoint)
  except InteropError:
    return ""
  differing = [f"model.{key}={value}" for key, value in fields.items()
               if getattr(config, key) != value]
  if gated != config.gated_ffn:
    differing.append(f"model.ffn_activation={_activations(gated)}")
  if not differing:
    return ""
  return (f"\nIts arrays' shapes fit {', '.join(differing)}: choose the checkpoint's preset "
          "(--preset) or set these with --set.")


# ----------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------


def _closest_layout(checkpoint: Checkpoint, abstract: dict,
                    config: ModelConfig) -> tuple[Layout, list[_Entry]]:
  """The layout whose arrays the checkpoint holds most of (by name and shape, then by name)."""

  def fit(candidate: tuple[Layout, list[_Entry]]) -> tuple[int, int]:
    named = [e for e in candidate[1] if e.name in checkpoint.target]
    return sum(checkpoint.shape(e.name) == e.shape for e in named), len(named)

  return max(((layout, _entries(abstract, config, layout)) for layout in LAYOUTS), key=fit)


def params_from_t5x(checkpoint: Checkpoint, config: ModelConfig) -> Params:
  """t5x-lite params (numpy, config.param_dtype) from a T5X checkpoint in any of LAYOUTS.

  Raises InteropError listing unknown, missing and mis-shaped arrays, and the settings the
  shapes ask for, before reading any array.
  """
  abstract = flat_abstract_params(config)
  layout, entries = _closest_layout(checkpoint, abstract, config)
  expected = {e.name for e in entries}
  problems = [f"array {e.name} has shape {checkpoint.shape(e.name)}, expected {e.shape}"
              for e in entries if e.name in checkpoint.target and checkpoint.shape(e.name) != e.shape]
  problems += [f"missing array {e.name} (expected shape {e.shape}) for t5x-lite "
               f"{'/'.join(e.parts[0][0])}" for e in entries if e.name not in checkpoint.target]
  problems += [f"unexpected array {name} {checkpoint.shape(name)}: no t5x-lite parameter for it"
               for name in sorted(set(checkpoint.target) - expected)]
  if problems:
    shown = problems[:_MAX_REPORTED] + ([f"... and {len(problems) - _MAX_REPORTED} more"]
                                        if len(problems) > _MAX_REPORTED else [])
    raise InteropError(f"The T5X checkpoint {checkpoint.folder} does not fit the model (closest "
                       f"T5X layout: {layout.name}):\n  " + "\n  ".join(shown)
                       + _config_hint(checkpoint, config))
  dtype = jnp.dtype(config.param_dtype)
  flat = {path: np.empty(leaf.shape, dtype) for path, leaf in abstract.items()}
  for entry in entries:
    for (path, index), layer in entry.to_t5x_lite(_read_array(checkpoint, entry.name)):
      flat[path][... if index is None else index] = layer
  return flax.traverse_util.unflatten_dict(flat)


# ----------------------------------------------------------------------------
# Writing checkpoints
# ----------------------------------------------------------------------------

# What a folder export-t5x replaces with --overwrite holds: T5X checkpoint folders only.
_MODEL_DIR_ENTRY = re.compile(r"checkpoint_\d+")


def _export_layout(config: ModelConfig, scanned: bool = False) -> Layout:
  """The layout of the T5X network that has `config`'s relative position biases: examples/t5
  one per stack, examples/scalable_t5 one per layer."""
  if config.position_scheme == "relative_per_layer":
    return SCALABLE_T5_SCANNED if scanned else SCALABLE_T5
  if config.position_scheme != "relative":
    raise InteropError(f"position_scheme={config.position_scheme!r} has no T5X equivalent: T5X's "
                       "T5 networks have a relative position bias.")
  if scanned:
    raise InteropError("T5X's scanned network (examples/scalable_t5) has a relative position bias "
                       "in every layer, and this model has one per stack: export it unscanned, "
                       "for T5X's examples/t5 network.")
  return T5


def _chunk_shape(shape: tuple[int, ...], itemsize: int) -> list[int]:
  """Chunks of at most 64 MiB (T5X's size) where a row allows, split along the first axis."""
  row_bytes = itemsize * int(np.prod(shape[1:]))
  return [max(1, min(shape[0], _CHUNK_BYTES // row_bytes)), *shape[1:]]


def _write_array(folder: str, relative: str, array: np.ndarray) -> dict:
  """Writes `array` as the zarr array `relative` in `folder`; returns the spec T5X keeps in
  its msgpack file, with the path relative to the checkpoint folder as T5X's."""
  spec = ts.Spec({
      "driver": "zarr", "dtype": array.dtype.name,
      "kvstore": {"driver": "file", "path": relative},
      "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape),
                   "chunks": _chunk_shape(array.shape, array.dtype.itemsize)},
  }).to_json()
  absolute = {**spec, "kvstore": {**spec["kvstore"], "path": os.path.join(folder, relative)}}
  ts.open(absolute, create=True).result().write(array).result()
  return spec


def _write_checkpoint(folder: str, flat: dict, entries: list[_Entry], step: int) -> None:
  os.makedirs(folder)
  target = {e.name: _write_array(folder, "target." + e.name.replace("/", "."), e.to_t5x(flat))
            for e in entries}
  contents = {"version": _VERSION, "optimizer": {
      "target": flax.traverse_util.unflatten_dict(target, sep="/"),
      "state": {"step": np.asarray(step, np.int32)}}}
  with open(os.path.join(folder, CHECKPOINT_FILE), "wb") as f:
    f.write(flax.serialization.msgpack_serialize(contents))


# ----------------------------------------------------------------------------
# Workdirs
# ----------------------------------------------------------------------------


def import_t5x(path: str, workdir: str, model_config: ModelConfig, scan_layers: bool = False,
               vocabulary: Optional[str] = None, extra_ids: int = 100) -> ExperimentConfig:
  """Converts the T5X checkpoint at `path` (see find_checkpoint) of the model `model_config`
  into a new t5x-lite workdir, as import_hf does: a parameters-only checkpoint at step 0 and
  config.json; `vocabulary`, a SentencePiece model or "bytes" (ByT5's), with `extra_ids`
  sentinels, becomes the workdir's vocabulary. A vocab_size of None (the tiny preset's) is
  taken from the embedding."""
  check_new_workdir(workdir)
  checkpoint = read_checkpoint(path)
  model_config = dataclasses.replace(model_config, scan_layers=scan_layers)
  if model_config.vocab_size is None:
    model_config.vocab_size = inferred_fields(checkpoint)[0]["vocab_size"]
  validate(ExperimentConfig(model=dataclasses.replace(model_config)))
  from t5x_lite.data.vocabulary import BYTES, ByteVocabulary  # pylint: disable=import-outside-toplevel
  vocabulary_model = None
  if vocabulary == BYTES:
    byte_vocabulary = ByteVocabulary(extra_ids)
    if byte_vocabulary.unpadded_size > model_config.vocab_size:
      raise InteropError(f"--vocabulary bytes with {extra_ids} sentinels needs "
                         f"{byte_vocabulary.unpadded_size} ids, but the model has "
                         f"{model_config.vocab_size}: it is not a ByT5 model.")
    vocabulary_model = byte_vocabulary.serialized
  elif vocabulary is not None:
    if not os.path.isfile(vocabulary):
      raise InteropError(f"--vocabulary {vocabulary} is not a file; give a SentencePiece model, "
                         "or bytes for ByT5's byte vocabulary.")
    with open(vocabulary, "rb") as f:
      vocabulary_model = f.read()
    check_vocabulary(vocabulary_model, vocabulary, model_config.vocab_size, extra_ids)
  params = params_from_t5x(checkpoint, model_config)
  experiment = ExperimentConfig(model=model_config, name=checkpoint.name)
  experiment.data.vocab_extra_ids = extra_ids
  save_workdir(workdir, params, experiment, vocabulary_model)
  return experiment


def export_t5x(workdir: str, output: str, step: Optional[int] = None, overwrite: bool = False,
               scanned: bool = False) -> tuple[ExperimentConfig, str]:
  """Writes a workdir's checkpoint (default: latest) as the T5X checkpoint
  OUTPUT/checkpoint_STEP, in the layout of the T5X network of its model (_export_layout);
  returns the experiment and that path. `output` must be new or empty, or hold T5X
  checkpoints only and `overwrite` be set; it is written as hf.write_folder writes, so it is
  then replaced whole."""
  check_export_folder(output, overwrite, _MODEL_DIR_ENTRY)
  meta = checkpoints.read_meta(workdir, step)  # Fixes the step: a trainer may add one meanwhile.
  model_config = from_dict(meta["config"]).model
  # A model T5X cannot hold fails here, before its arrays are read.
  entries = _entries(flat_abstract_params(model_config), model_config,
                     _export_layout(model_config, scanned))
  experiment, params, step = read_workdir_params(workdir, meta["step"])
  flat = flax.traverse_util.flatten_dict(params)
  name = f"checkpoint_{step}"
  write_folder(output, lambda folder: _write_checkpoint(os.path.join(folder, name), flat, entries,
                                                        step))
  return experiment, os.path.join(output, name)
