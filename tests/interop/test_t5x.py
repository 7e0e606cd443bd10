"""T5X checkpoints: small random models written as T5X's Checkpointer writes them (msgpack
file, zarr arrays through tensorstore, both of T5X's layer layouts, with and without
optimizer state), converted both ways."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil

import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece as spm
import tensorstore as ts
from helpers import tiny_model

from t5x_lite import checkpoints
from t5x_lite.cli.main import main
from t5x_lite.config import load_json
from t5x_lite.data import ByteVocabulary, load_vocabulary
from t5x_lite.interop import t5x as t5x_interop
from t5x_lite.interop.hf import InteropError, read_workdir_params
from t5x_lite.model import Transformer, abstract_params

_KERNELS = ("query", "key", "value", "out", "wi", "wi_0", "wi_1", "wo")


def _config(**changes):
  """1 + 1 layers, d_model 32, 4 heads of 8, vocab 128: gated-GELU and untied unless changed."""
  return tiny_model(**{"num_encoder_layers": 1, "num_decoder_layers": 1, **changes})


_SHAPES: dict[str, dict] = {}  # repr(config) -> its flattened abstract params (0.3 s each)


def _random_params(config, seed: int = 0) -> dict:
  """A t5x-lite tree whose every value differs, in config.param_dtype."""
  if repr(config) not in _SHAPES:
    _SHAPES[repr(config)] = flax.traverse_util.flatten_dict(abstract_params(config)[0])
  rng = np.random.default_rng(seed)
  return flax.traverse_util.unflatten_dict({path: rng.normal(size=leaf.shape).astype(leaf.dtype)
                                            for path, leaf in _SHAPES[repr(config)].items()})


def _scanned(params) -> dict:
  """The tree of the same values for model.scan_layers: each stack's layers_N as `layers`,
  the layers on axis 0."""
  flat, layers = {}, {}
  for path, value in flax.traverse_util.flatten_dict(params).items():
    if len(path) > 2 and path[1].startswith("layers_"):
      layers.setdefault((path[0], "layers", *path[2:]), {})[int(path[1][7:])] = value
    else:
      flat[path] = value
  flat.update({path: np.stack([by_layer[i] for i in sorted(by_layer)])
               for path, by_layer in layers.items()})
  return flax.traverse_util.unflatten_dict(flat)


def _t5x_arrays(params, config, split_heads: bool, scanned: bool) -> dict[str, np.ndarray]:
  """The T5X arrays of a t5x-lite tree, by the rules T5X's networks follow: dense kernels
  end in /kernel, the output layer is decoder/logits_dense/kernel, scalable_t5 stores
  attention kernels split by head and, scanned, one array per parameter under STACK/STACK
  with the layers on axis 1."""
  h, k = config.num_heads, config.d_kv
  arrays, stacked = {}, {}
  for path, value in flax.traverse_util.flatten_dict(params).items():
    if path == ("logits_dense",):
      arrays["decoder/logits_dense/kernel"] = value
      continue
    if len(path) < 3 or not path[1].startswith("layers"):
      arrays["/".join(path)] = value
      continue
    layers = list(value) if path[1] == "layers" else [value]
    first = 0 if path[1] == "layers" else int(path[1].split("_")[1])
    rest = path[2:] + (("kernel",) if path[-1] in _KERNELS else ())
    for i, layer in enumerate(layers, first):
      if split_heads and path[-1] in ("query", "key", "value"):
        layer = layer.reshape(layer.shape[0], h, k)
      elif split_heads and path[-1] == "out":
        layer = layer.reshape(h, k, layer.shape[1])
      if scanned:
        stacked.setdefault("/".join((path[0], path[0]) + rest), {})[i] = layer
      else:
        arrays["/".join((path[0], f"layers_{i}") + rest)] = layer
  for name, by_layer in stacked.items():
    arrays[name] = np.stack([by_layer[i] for i in sorted(by_layer)], axis=1)
  return arrays


def _write_t5x(folder, arrays: dict[str, np.ndarray], step: int = 0, optimizer_state: bool = False,
               inline: tuple[str, ...] = ()) -> str:
  """A T5X checkpoint folder as t5x.checkpoints.Checkpointer.save writes it: each array a
  gzip-compressed zarr array named by its path with dots, in chunks along its first axis, and
  the msgpack `checkpoint` file holding the arrays' tensorstore specs (or, for `inline`
  names, the arrays), the step and, with `optimizer_state`, Adafactor's slots."""
  os.makedirs(folder)

  def stored(name: str, array: np.ndarray):
    if name in inline:
      return array
    relative = name.replace("/", ".")
    spec = ts.Spec({"driver": "zarr", "dtype": array.dtype.name,
                    "kvstore": {"driver": "file", "path": relative},
                    "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape),
                                 "chunks": [max(1, array.shape[0] // 2), *array.shape[1:]]}})
    absolute = spec.to_json()
    absolute["kvstore"]["path"] = os.path.join(folder, relative)
    ts.open(absolute, create=True).result().write(array).result()
    return spec.to_json()

  state = {"step": np.asarray(step, np.int32)}
  if optimizer_state:
    slots = {}
    for name, array in arrays.items():
      factored = array.ndim >= 2
      slots[name] = {"v_row": np.zeros(array.shape[:-1], np.float32) if factored else np.zeros(1),
                     "v_col": np.zeros(array.shape[:-2] + array.shape[-1:], np.float32)
                              if factored else np.zeros(1),
                     "v": np.zeros(1) if factored else np.ones(array.shape, np.float32),
                     "m": np.zeros(1, np.float32)}
      slots[name] = {slot: stored(f"state/param_states/{name}/{slot}", value) if value.size > 1
                     else value for slot, value in slots[name].items()}
    state["param_states"] = flax.traverse_util.unflatten_dict(slots, sep="/")
  target = {name: stored(f"target/{name}", array) for name, array in arrays.items()}
  contents = {"version": 3, "optimizer": {
      "target": flax.traverse_util.unflatten_dict(target, sep="/"), "state": state}}
  with open(os.path.join(folder, "checkpoint"), "wb") as f:
    f.write(flax.serialization.msgpack_serialize(contents))
  return str(folder)


def _load_like_t5x(folder) -> tuple[dict, dict[str, np.ndarray]]:
  """(msgpack contents, target arrays) read as t5x.checkpoints.load_t5x_checkpoint reads
  them (its _read_ts): each spec stripped of its chunks and compressor, its relative path
  joined to the checkpoint folder, opened and read whole."""
  with open(os.path.join(folder, "checkpoint"), "rb") as f:
    contents = flax.serialization.msgpack_restore(f.read())
  flat = flax.traverse_util.flatten_dict(contents["optimizer"]["target"], sep="/",
                                         is_leaf=lambda _, node: "driver" in node)
  arrays = {}
  for name, spec in flat.items():
    spec = dict(spec, metadata=dict(spec["metadata"]), kvstore=dict(spec["kvstore"]))
    del spec["metadata"]["chunks"], spec["metadata"]["compressor"]
    spec["kvstore"]["path"] = os.path.join(folder, spec["kvstore"]["path"])
    arrays[name] = ts.open(spec, open=True).result().read().result()
  return contents, arrays


def _logits(config, *trees) -> list[np.ndarray]:
  """The logits of each parameter tree (of the same shapes) on a padded batch."""
  rng = np.random.default_rng(1)
  encoder = rng.integers(2, config.vocab_size, (2, 12))
  encoder[1, 7:] = 0
  decoder = rng.integers(2, config.vocab_size, (2, 6))
  decoder[:, 0] = 0
  # One compile (about 1 s) beats the first eager apply's per-op compiles (about 6 s).
  apply = jax.jit(lambda params: Transformer(config).apply(
      {"params": params}, jnp.asarray(encoder), jnp.asarray(decoder)))
  return [np.asarray(apply(tree)) for tree in trees]


def _assert_same_tree(a, b) -> None:
  flat_a, flat_b = flax.traverse_util.flatten_dict(a), flax.traverse_util.flatten_dict(b)
  assert flat_a.keys() == flat_b.keys()
  for path, value in flat_a.items():
    assert value.dtype == flat_b[path].dtype, path
    np.testing.assert_array_equal(value, flat_b[path], err_msg="/".join(path))


def _assert_same_arrays(a: dict, b: dict) -> None:
  assert sorted(a) == sorted(b)
  for name, value in a.items():
    assert value.dtype == b[name].dtype and value.shape == b[name].shape, name
    np.testing.assert_array_equal(value, b[name], err_msg=name)


def test_the_t5x_arrays_of_the_two_layouts():
  """Names and shapes from T5X's examples/t5 network (2-D kernels, one bias per stack) and
  its scanned examples/scalable_t5 (umT5: a bias in every layer, heads split, layers on
  axis 1), for 1 + 1 layers, d_model 32, d_ff 64, 4 heads of 8, vocab 128."""
  t5 = {name: a.shape for name, a in _t5x_arrays(_random_params(_config()), _config(), False,
                                                    False).items()}
  attention = {f"{m}/kernel": (32, 32) for m in ("query", "key", "value", "out")}
  mlp = {"wi_0/kernel": (32, 64), "wi_1/kernel": (32, 64), "wo/kernel": (64, 32)}
  assert t5 == {
      "token_embedder/embedding": (128, 32),
      "encoder/relpos_bias/rel_embedding": (4, 32),
      "encoder/layers_0/pre_attention_layer_norm/scale": (32,),
      **{f"encoder/layers_0/attention/{k}": s for k, s in attention.items()},
      "encoder/layers_0/pre_mlp_layer_norm/scale": (32,),
      **{f"encoder/layers_0/mlp/{k}": s for k, s in mlp.items()},
      "encoder/encoder_norm/scale": (32,),
      "decoder/relpos_bias/rel_embedding": (4, 32),
      "decoder/layers_0/pre_self_attention_layer_norm/scale": (32,),
      **{f"decoder/layers_0/self_attention/{k}": s for k, s in attention.items()},
      "decoder/layers_0/pre_cross_attention_layer_norm/scale": (32,),
      **{f"decoder/layers_0/encoder_decoder_attention/{k}": s for k, s in attention.items()},
      "decoder/layers_0/pre_mlp_layer_norm/scale": (32,),
      **{f"decoder/layers_0/mlp/{k}": s for k, s in mlp.items()},
      "decoder/decoder_norm/scale": (32,),
      "decoder/logits_dense/kernel": (32, 128),
  }
  config = _config(position_scheme="relative_per_layer", num_encoder_layers=3)
  scanned = _t5x_arrays(_random_params(config), config, True, True)
  assert {name: a.shape for name, a in scanned.items() if name.startswith("encoder/")} == {
      "encoder/encoder/relpos_bias/rel_embedding": (4, 3, 32),
      "encoder/encoder/pre_attention_layer_norm/scale": (32, 3),
      **{f"encoder/encoder/attention/{m}/kernel": (32, 3, 4, 8) for m in ("query", "key", "value")},
      "encoder/encoder/attention/out/kernel": (4, 3, 8, 32),
      "encoder/encoder/pre_mlp_layer_norm/scale": (32, 3),
      "encoder/encoder/mlp/wi_0/kernel": (32, 3, 64),
      "encoder/encoder/mlp/wi_1/kernel": (32, 3, 64),
      "encoder/encoder/mlp/wo/kernel": (64, 3, 32),
      "encoder/encoder_norm/scale": (32,),
  }


# (model changes, T5X layout: split_heads, scanned; t5x-lite scan_layers, optimizer state, logits)
_CASES = {
    "t5_1_1": (dict(), (False, False), False, True, True),
    "t5_1_0_bfloat16_into_scanned": (dict(ffn_activation="relu", tie_logits=True,
                                          param_dtype="bfloat16"), (False, False), True, False, False),
    "umt5_unscanned_into_scanned": (dict(position_scheme="relative_per_layer"), (True, False), True,
                                    False, False),
    "umt5_scanned": (dict(position_scheme="relative_per_layer", num_encoder_layers=2), (True, True),
                     False, True, True),
    "umt5_scanned_into_scanned": (dict(position_scheme="relative_per_layer", num_decoder_layers=2),
                                  (True, True), True, False, False),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_import_then_export_is_exact(tmp_path, case):
  changes, (split_heads, scanned), scan_layers, optimizer_state, check_logits = _CASES[case]
  config = _config(**changes)
  params = _random_params(config)
  arrays = _t5x_arrays(params, config, split_heads, scanned)
  folder = _write_t5x(tmp_path / "t5x" / "checkpoint_7", arrays, step=7,
                      optimizer_state=optimizer_state, inline=("encoder/encoder_norm/scale",))

  experiment = t5x_interop.import_t5x(folder, str(tmp_path / "work"), config, scan_layers)
  assert experiment.name == "t5x" and experiment.model.scan_layers == scan_layers
  _, imported, step = read_workdir_params(str(tmp_path / "work"))
  assert step == 0
  expected = _scanned(params) if scan_layers else params
  _assert_same_tree(imported, expected)
  if check_logits:  # The imported model computes what the tree built directly does.
    imported_logits, direct_logits = _logits(experiment.model, imported, expected)
    np.testing.assert_array_equal(imported_logits, direct_logits)

  _, path = t5x_interop.export_t5x(str(tmp_path / "work"), str(tmp_path / "out"), scanned=scanned)
  assert path == str(tmp_path / "out" / "checkpoint_0")
  contents, exported = _load_like_t5x(path)
  assert contents["version"] == 3 and contents["optimizer"].keys() == {"target", "state"}
  assert contents["optimizer"]["state"] == {"step": 0}
  _assert_same_arrays(exported, arrays)


def _tiny_spiece(path) -> str:
  stream = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(["the quick brown fox jumps over the lazy dog"] * 20),
      model_writer=stream, vocab_size=28, model_type="char", pad_id=0, eos_id=1, unk_id=2,
      bos_id=-1, minloglevel=2)
  path.write_bytes(stream.getvalue())
  return str(path)


def test_commands_round_trip_with_the_model_read_from_the_shapes(tmp_path, capsys):
  config = _config(num_encoder_layers=2)
  arrays = _t5x_arrays(_random_params(config), config, False, False)
  _write_t5x(tmp_path / "t5_1_1_tiny" / "checkpoint_1000", arrays, step=1000, optimizer_state=True)
  spiece = _tiny_spiece(tmp_path / "spiece.model")
  work, out = tmp_path / "work", tmp_path / "out"
  assert main(["import-t5x", str(tmp_path / "t5_1_1_tiny"), "--workdir", str(work),
               "--set", "model.ffn_activation=gated-gelu", "--set", "model.dtype=float32",
               "--vocabulary", spiece]) == 0
  assert capsys.readouterr().out == (
      f"Imported {tmp_path / 't5_1_1_tiny'} into {work}: d_model 32, 2/1 layers, gated-gelu, "
      "untied logits.\n")
  experiment = load_json(str(work / "config.json"))
  assert experiment.model == dataclasses.replace(config, dropout_rate=0.0)  # load_json resolves it
  assert experiment.name == "t5_1_1_tiny"
  assert experiment.data.vocabulary == str(work / "vocabulary.model")
  assert (work / "vocabulary.model").read_bytes() == open(spiece, "rb").read()
  assert checkpoints.read_meta(str(work))["vocabulary"]["path"] == str(work / "vocabulary.model")

  assert main(["export-t5x", "--workdir", str(work), "--output", str(out)]) == 0
  assert f"Exported {work} to {out / 'checkpoint_0'}" in capsys.readouterr().out
  _assert_same_arrays(_load_like_t5x(out / "checkpoint_0")[1], arrays)


@pytest.mark.parametrize("vocabulary,settings,extra_ids", [
    ("bytes", [], 125), ("bytes", ["--set", "data.vocab_extra_ids=100"], 100),
    ("spiece", ["--set", "data.vocab_extra_ids=300"], 300)])
def test_import_records_the_vocabulary_and_its_sentinels(tmp_path, vocabulary, settings, extra_ids):
  """ByT5's checkpoints take the byte vocabulary (ByT5Tokenizer's 125 sentinels unless --set
  says otherwise), umT5's a spiece model with 300: eval, infer and fine-tuning then find both."""
  config = _config(vocab_size=384)
  _write_t5x(tmp_path / "model" / "checkpoint_0",
             _t5x_arrays(_random_params(config), config, False, False))
  if vocabulary == "spiece":
    vocabulary = _tiny_spiece(tmp_path / "spiece.model")
  work = str(tmp_path / "work")
  assert main(["import-t5x", str(tmp_path / "model"), "--workdir", work,
               "--set", "model.ffn_activation=gated-gelu", "--vocabulary", vocabulary,
               *settings]) == 0
  experiment = load_json(os.path.join(work, "config.json"))
  assert experiment.data.vocab_extra_ids == extra_ids
  loaded = load_vocabulary(experiment.data.vocabulary, experiment.data.vocab_extra_ids)
  assert isinstance(loaded, ByteVocabulary) == (vocabulary == "bytes")
  assert loaded.unpadded_size <= 384 and len(loaded.sentinel_ids) == extra_ids


@pytest.fixture(name="checkpoint")
def _checkpoint(tmp_path):
  """A T5.1.1-style T5X checkpoint of _config()."""
  config = _config()
  return _write_t5x(tmp_path / "model" / "checkpoint_5",
                    _t5x_arrays(_random_params(config), config, False, False), step=5)


def test_specs_of_checkpoints_written_to_a_bucket_or_by_old_tensorstore(checkpoint):
  """A checkpoint saved to gs:// names the gcs driver (T5X reads the copy beside its file);
  tensorstore before 0.1.14 kept the path beside the kvstore."""
  file = os.path.join(checkpoint, "checkpoint")
  with open(file, "rb") as f:
    contents = flax.serialization.msgpack_restore(f.read())
  target = contents["optimizer"]["target"]
  gcs = target["token_embedder"]["embedding"]
  gcs["kvstore"] = {"bucket": "t5x-dummy-bucket", "driver": "gcs", "path": gcs["kvstore"]["path"]}
  old = target["decoder"]["logits_dense"]["kernel"]
  old["path"] = old["kvstore"].pop("path")
  with open(file, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(contents))
  config = _config()
  params = t5x_interop.params_from_t5x(t5x_interop.read_checkpoint(checkpoint), config)
  _assert_same_tree(params, _random_params(config))


def test_what_is_not_a_t5x_checkpoint(tmp_path, checkpoint):
  config = _config()
  work = str(tmp_path / "work")
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  with pytest.raises(InteropError, match=r"other is not a T5X checkpoint: it has no `checkpoint` "
                                         r"file and no checkpoint_STEP folder \(it holds notes.txt\)"):
    t5x_interop.import_t5x(str(tmp_path / "other"), work, config)
  with pytest.raises(InteropError, match="nowhere does not exist"):
    t5x_interop.import_t5x(str(tmp_path / "nowhere"), work, config)
  shutil.copytree(checkpoint, tmp_path / "model" / "checkpoint_12")
  with pytest.raises(InteropError, match=r"model holds 2 T5X checkpoints \(steps 5, 12\); pass the "
                                         r"one to convert, e\.g\. .*model/checkpoint_12"):
    t5x_interop.import_t5x(str(tmp_path / "model"), work, config)
  (tmp_path / "orbax" / "checkpoint_3" / "state").mkdir(parents=True)
  with pytest.raises(InteropError, match="is a T5X checkpoint in Orbax's format"):
    t5x_interop.import_t5x(str(tmp_path / "orbax"), work, config)
  with open(os.path.join(checkpoint, "checkpoint"), "r+b") as f:
    f.truncate(100)
  with pytest.raises(InteropError, match="cannot be read as T5X's msgpack"):
    t5x_interop.import_t5x(checkpoint, work, config)
  assert not os.path.exists(work)


def test_a_missing_array_or_chunk_is_named(tmp_path, checkpoint):
  config = _config()
  os.remove(os.path.join(checkpoint, "target.token_embedder.embedding", "1.0"))
  with pytest.raises(InteropError, match=r"Array token_embedder/embedding \(.*\) is incomplete: it "
                                         r"lacks the chunk files 1\.0; copy the checkpoint again"):
    t5x_interop.params_from_t5x(t5x_interop.read_checkpoint(checkpoint), config)
  shutil.rmtree(os.path.join(checkpoint, "target.encoder.layers_0.mlp.wo.kernel"))
  with pytest.raises(InteropError, match=r"Array encoder/layers_0/mlp/wo/kernel \(.*\) is missing: "
                                         "the checkpoint is incomplete"):
    t5x_interop.import_t5x(checkpoint, str(tmp_path / "work"), config)
  assert not os.path.exists(tmp_path / "work")


def test_arrays_that_do_not_fit_the_model_are_listed(tmp_path, checkpoint):
  with pytest.raises(InteropError) as error:
    t5x_interop.import_t5x(checkpoint, str(tmp_path / "work"), _config(d_ff=48))
  message = str(error.value)
  assert message.startswith(f"The T5X checkpoint {checkpoint} does not fit the model (closest T5X "
                            "layout: examples/t5):\n  array decoder/layers_0/mlp/wi_0/kernel has "
                            "shape (32, 64), expected (32, 48)\n")
  assert message.count("\n") == 7  # Six wi_0, wi_1 and wo arrays, and the hint.
  assert message.endswith("Its arrays' shapes fit model.d_ff=64: choose the checkpoint's preset "
                          "(--preset) or set these with --set.")

  spec = t5x_interop.read_checkpoint(checkpoint).target["encoder/encoder_norm/scale"]
  contents = flax.serialization.msgpack_restore(open(os.path.join(checkpoint, "checkpoint"),
                                                     "rb").read())
  contents["optimizer"]["target"]["encoder"]["layers_0"]["attention"]["bias"] = np.ones(4)
  del contents["optimizer"]["target"]["decoder"]["logits_dense"]
  with open(os.path.join(checkpoint, "checkpoint"), "wb") as f:
    f.write(flax.serialization.msgpack_serialize(contents))
  assert spec["kvstore"]["path"] == "target.encoder.encoder_norm.scale/"
  with pytest.raises(InteropError) as error:
    t5x_interop.import_t5x(checkpoint, str(tmp_path / "work"), _config())
  assert str(error.value).splitlines()[1:] == [
      "  missing array decoder/logits_dense/kernel (expected shape (32, 128)) for t5x-lite "
      "logits_dense",
      "  unexpected array encoder/layers_0/attention/bias (4,): no t5x-lite parameter for it",
      "Its arrays' shapes fit model.tie_logits=True: choose the checkpoint's preset (--preset) or "
      "set these with --set."]


def test_the_model_comes_from_a_preset_or_the_shapes(tmp_path, checkpoint, capsys):
  work = str(tmp_path / "work")
  assert main(["import-t5x", checkpoint, "--workdir", work]) == 2
  err = capsys.readouterr().err
  assert err.startswith("t5x-lite import-t5x: error: T5X checkpoints do not record their model: "
                        "pass --preset NAME (t5_1_1_small, ")
  assert err.endswith("or --set model.ffn_activation=ACTIVATION and the rest is read from the "
                      "arrays' shapes (this FFN is gated: gated-gelu (T5.1.1, mT5, umT5, ByT5, "
                      "Flan-T5), swiglu (UL2) or gated-relu).\n")
  assert main(["import-t5x", checkpoint, "--workdir", work, "--preset", "t5_1_1"]) == 2
  assert "Unknown preset 't5_1_1'; choose one of t5_1_1_small, " in capsys.readouterr().err
  assert main(["import-t5x", checkpoint, "--workdir", work, "--preset", "tiny",
               "--set", "train.steps=5"]) == 2
  assert ("--set train.steps: importing sets model.* fields and data.vocab_extra_ids only"
          in capsys.readouterr().err)
  assert main(["import-t5x", checkpoint, "--workdir", work, "--preset", "t5_1_1_small"]) == 2
  err = capsys.readouterr().err
  assert "\n  array decoder/decoder_norm/scale has shape (32,), expected (512,)\n" in err
  assert "\n  ... and 170 more\nIts arrays' shapes fit model.vocab_size=128, model.d_model=32, " in err
  # tiny's vocab_size comes from the embedding; its widths from --set.
  settings = ["--set", "model.d_model=32", "--set", "model.d_ff=64", "--set", "model.d_kv=8",
              "--set", "model.num_encoder_layers=1", "--set", "model.num_decoder_layers=1"]
  assert main(["import-t5x", checkpoint, "--workdir", work, "--preset", "tiny", *settings]) == 0
  assert "; it has no vocabulary: pass --vocabulary" in capsys.readouterr().out
  assert load_json(os.path.join(work, "config.json")).model.vocab_size == 128
  assert main(["import-t5x", checkpoint, "--workdir", str(tmp_path / "b"), "--preset", "tiny",
               *settings, "--vocabulary", "bytes"]) == 2
  assert ("--vocabulary bytes with 125 sentinels needs 384 ids, but the model has 128: it is not "
          "a ByT5 model." in capsys.readouterr().err)


def test_destinations(tmp_path, checkpoint, capsys):
  """The workdir must be new or empty; export writes a new or empty MODEL_DIR, replaces one
  holding T5X checkpoints only with --overwrite, and never one holding anything else."""
  work, out = tmp_path / "work", tmp_path / "out"
  work.mkdir()
  (work / "notes.txt").write_text("mine")
  with pytest.raises(InteropError, match="work is not empty; import into a new workdir"):
    t5x_interop.import_t5x(checkpoint, str(work), _config())
  (work / "notes.txt").unlink()
  t5x_interop.import_t5x(checkpoint, str(work), _config())

  shutil.copytree(checkpoint, out / "checkpoint_5")
  assert main(["export-t5x", "--workdir", str(work), "--output", str(out)]) == 2
  err = capsys.readouterr().err
  assert "holds a model already (checkpoint_5); pass --overwrite to replace it" in err
  assert main(["export-t5x", "--workdir", str(work), "--output", str(out), "--overwrite"]) == 0
  assert sorted(os.listdir(out)) == ["checkpoint_0"]
  (out / "notes.txt").write_text("mine")
  assert main(["export-t5x", "--workdir", str(work), "--output", str(out), "--overwrite"]) == 2
  assert "holds files that are not a model's (checkpoint_0, notes.txt)" in capsys.readouterr().err
  assert main(["export-t5x", "--workdir", str(work), "--output", str(tmp_path / "x"),
               "--scanned"]) == 2
  assert "this model has one per stack: export it unscanned" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "x")
  with pytest.raises(InteropError, match="architecture='decoder_only': only encoder-decoder models"):
    t5x_interop.import_t5x(checkpoint, str(tmp_path / "w2"),
                           _config(architecture="decoder_only", num_encoder_layers=0))
