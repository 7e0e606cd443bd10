"""Checkpoints: round trips, resharding across meshes, retention, errors, crash safety."""

import errno
import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import FAST_COMPILE
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from t5x_lite import checkpoints
from t5x_lite import config as config_lib
from t5x_lite import model as model_lib
from t5x_lite.checkpoints import Checkpointer, CheckpointError
from t5x_lite.config import CheckpointConfig, ExperimentConfig, MeshConfig, OptimizerConfig
from t5x_lite.optimizers import make_optimizer
from t5x_lite.partitioning import RULE_PRESETS, logical_to_sharding, make_mesh
from t5x_lite.train_state import TrainState, train_state_logical_axes

ADAFACTOR = optax.adafactor(learning_rate=1e-2)
LOADER_STATE = {"epoch": 1, "position": np.int64(12345), "shard_offsets": [3, 4]}


def model_config(**changes) -> config_lib.ModelConfig:
  cfg = config_lib.tiny(vocab_size=128)
  for key, value in changes.items():
    setattr(cfg, key, value)
  return cfg


def abstract_state(model_cfg, optimizer, mesh_shape, rules="2d") -> TrainState:
  """TrainState of ShapeDtypeStructs with the shardings of `rules` on a mesh of that shape."""
  devices = jax.devices()[:int(np.prod(mesh_shape))]
  mesh = make_mesh(MeshConfig(axes=("data", "model"), shape=mesh_shape, rules_preset=rules), devices)
  params_shapes, specs = model_lib.abstract_params(model_cfg)
  shardings = logical_to_sharding(
      train_state_logical_axes(optimizer, specs, params_shapes), mesh, RULE_PRESETS[rules])
  shapes = jax.eval_shape(functools.partial(TrainState.create, optimizer=optimizer), params_shapes)
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


def filled_state(abstract: TrainState) -> TrainState:
  """Tiny-model params from init_params and an Adafactor state of random statistics
  (numpy on the host: nothing to compile), placed in ``abstract``'s shardings."""
  rng = np.random.default_rng(0)
  params = model_lib.init_params(model_config(), jax.random.key(0))
  opt_state = jax.tree.map(lambda x: rng.uniform(1, 2, x.shape).astype(x.dtype),
                           jax.eval_shape(ADAFACTOR.init, params))
  state = TrainState(step=np.int32(7), params=params, opt_state=opt_state)
  return jax.device_put(state, jax.tree.map(lambda a: a.sharding, abstract))


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_shardings(tree, abstract):
  for x, a in zip(jax.tree.leaves(tree), jax.tree.leaves(abstract)):
    assert isinstance(x.sharding, NamedSharding)
    assert x.sharding == a.sharding, (x.sharding, a.sharding)


def save(ckpt: Checkpointer, step: int, state, vocabulary=None, **kwargs) -> bool:
  return ckpt.save(step, state, loader_state=LOADER_STATE, experiment_config=ExperimentConfig(),
                   vocabulary_path=vocabulary, **kwargs)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A workdir with steps 10 and 20 written from a 4x2 mesh (rules '2d')."""
  workdir = str(tmp_path_factory.mktemp("saved"))
  vocabulary = os.path.join(workdir, "vocab.model")
  with open(vocabulary, "wb") as f:
    f.write(b"not really sentencepiece")
  abstract = abstract_state(model_config(), ADAFACTOR, (4, 2))
  state = filled_state(abstract)
  with Checkpointer(workdir, CheckpointConfig(every_steps=10, keep=3)) as ckpt:
    assert save(ckpt, 10, state, vocabulary)
    assert save(ckpt, 20, state, vocabulary)
  return {"workdir": workdir, "state": jax.device_get(state), "abstract": abstract,
          "vocabulary": vocabulary}


# ----------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------


def test_round_trip_restores_values_shardings_and_meta(saved):
  ckpt = Checkpointer(saved["workdir"], CheckpointConfig())
  assert ckpt.all_steps() == [10, 20] and ckpt.latest_step() == 20
  state, meta = ckpt.restore(saved["abstract"])
  assert_trees_equal(state.params, saved["state"].params)
  assert_trees_equal(state.opt_state, saved["state"].opt_state)
  assert_shardings(state, saved["abstract"])
  assert int(state.step) == 20 and state.step.dtype == jnp.int32
  assert meta["step"] == 20
  assert meta["loader_state"] == {"epoch": 1, "position": 12345, "shard_offsets": [3, 4]}
  assert config_lib.from_dict(meta["config"]) == ExperimentConfig()
  with open(saved["vocabulary"], "rb") as f:
    assert meta["vocabulary"] == {"path": os.path.realpath(saved["vocabulary"]),
                                  "sha256": hashlib.sha256(f.read()).hexdigest()}
  ckpt.close()


@pytest.mark.parametrize("mesh_shape", [(1, 1), (2, 4), (8, 1)])
def test_restore_onto_a_different_mesh(saved, mesh_shape):
  abstract = abstract_state(model_config(), ADAFACTOR, mesh_shape, rules="model_parallel")
  state, _ = Checkpointer(saved["workdir"], CheckpointConfig()).restore(abstract, step=10)
  assert_trees_equal(state.params, saved["state"].params)
  assert_trees_equal(state.opt_state, saved["state"].opt_state)
  assert_shardings(state, abstract)
  assert len(state.params["logits_dense"].sharding.device_set) == int(np.prod(mesh_shape))


def test_params_only_restore_for_a_fresh_optimizer(saved):
  adamw = make_optimizer(OptimizerConfig(name="adamw", schedule="constant", warmup_steps=0), 10)
  abstract = abstract_state(model_config(), adamw, (2, 4))
  for path in (saved["workdir"], os.path.join(saved["workdir"], "checkpoints")):
    params = checkpoints.restore_params(path, abstract.params, step=10)
    assert_trees_equal(params, saved["state"].params)
    assert_shardings(params, abstract.params)
  state = TrainState.create(params, adamw)
  assert int(state.step) == 0
  counts = optax.tree_utils.tree_get_all_with_path(state.opt_state, "count")
  assert counts and all(int(count) == 0 for _, count in counts)


def test_save_survives_donation_of_the_saved_arrays(saved, tmp_path):
  """The arrays are copied off the devices before save() returns: deleting them
  (as a donating train step does) does not corrupt the checkpoint being written."""
  abstract, expected = saved["abstract"], saved["state"]
  state = jax.device_put(expected, jax.tree.map(lambda a: a.sharding, abstract))
  ckpt = Checkpointer(str(tmp_path), CheckpointConfig(every_steps=1))
  assert save(ckpt, 1, state)
  jax.tree.map(lambda x: x.delete(), state)
  ckpt.wait_until_finished()
  restored, _ = ckpt.restore(abstract)
  assert_trees_equal(restored.params, expected.params)
  ckpt.close()


# ----------------------------------------------------------------------------
# When to save and what to keep (small toy state: fast)
# ----------------------------------------------------------------------------


def toy_state(value: float) -> TrainState:
  params = {"w": jnp.full((4, 3), value), "b": jnp.full((3,), value)}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=(jnp.zeros(()),))


def toy_abstract() -> TrainState:
  sharding = NamedSharding(make_mesh(MeshConfig(shape=(1, 1)), jax.devices()[:1]), P())
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      toy_state(0.0))


def test_saves_each_step_asked_once(tmp_path):
  ckpt = Checkpointer(str(tmp_path), CheckpointConfig(every_steps=10))
  assert save(ckpt, 10, toy_state(10))
  assert not save(ckpt, 10, toy_state(10))  # already saved: end of a run at a multiple
  assert save(ckpt, 13, toy_state(13))  # the trainer decides (end of run, preemption)
  ckpt.wait_until_finished()
  assert ckpt.all_steps() == [10, 13]
  state, meta = ckpt.restore(toy_abstract())
  assert meta["step"] == 13 and float(state.params["w"][0, 0]) == 13.0
  ckpt.close()


def test_keeps_the_last_k(tmp_path):
  ckpt = Checkpointer(str(tmp_path), CheckpointConfig(every_steps=1, keep=2))
  for step in range(1, 6):
    assert save(ckpt, step, toy_state(step))
  ckpt.close()
  assert ckpt.all_steps() == [4, 5]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "5"]
  assert checkpoints.all_steps(str(tmp_path)) == [4, 5]


def test_keeps_the_best_in_addition_to_the_last_k_across_restarts(tmp_path):
  config = CheckpointConfig(every_steps=1, keep=2, keep_best_metric="loss")
  ckpt = Checkpointer(str(tmp_path), config)
  losses = {1: 3.0, 2: 1.0, 3: 2.0, 4: 2.5}
  for step, loss in losses.items():
    save(ckpt, step, toy_state(step), metrics={"loss": loss, "accuracy": 0.5})
  save(ckpt, 5, toy_state(5))  # no metrics at this step: kept only as one of the latest
  ckpt.close()
  assert ckpt.all_steps() == [2, 4, 5]
  ckpt = Checkpointer(str(tmp_path), config)  # metrics are read back from disk
  save(ckpt, 6, toy_state(6), metrics={"loss": 1.5})
  ckpt.close()
  assert ckpt.all_steps() == [2, 5, 6]
  assert checkpoints.read_meta(str(tmp_path), 2)["metrics"] == {"loss": 1.0, "accuracy": 0.5}


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------


def test_a_different_d_model_names_parameters_and_both_shapes(saved):
  abstract = abstract_state(model_config(d_model=64), ADAFACTOR, (1, 1))
  with pytest.raises(CheckpointError) as error:
    Checkpointer(saved["workdir"], CheckpointConfig()).restore(abstract)
  message = str(error.value)
  assert "does not fit" in message
  assert "params/decoder/layers_0/mlp/wi_0: saved (128, 256), expected (64, 256)" in message
  with pytest.raises(CheckpointError, match=r"decoder/decoder_norm/scale: saved \(128,\), "
                                            r"expected \(64,\)"):
    checkpoints.restore_params(saved["workdir"], abstract.params)


@pytest.mark.parametrize("layers, expected", [
    (3, "params/encoder/layers_2/mlp/wi_0: missing from the checkpoint (expected (128, 256))"),
    (1, "params/encoder/layers_1/mlp/wi_0: in the checkpoint but not in the model "
        "(saved (128, 256))"),
])
def test_a_missing_or_extra_layer_is_named(saved, layers, expected):
  abstract = abstract_state(model_config(num_encoder_layers=layers), ADAFACTOR, (1, 1))
  with pytest.raises(CheckpointError) as error:
    checkpoints.restore_params(saved["workdir"], abstract.params)
  assert expected in str(error.value)


def test_missing_or_empty_directory_is_an_error(tmp_path):
  abstract = toy_abstract()
  with pytest.raises(CheckpointError, match="does not exist"):
    checkpoints.restore_params(str(tmp_path / "nowhere"), abstract.params)
  with pytest.raises(CheckpointError, match="does not exist"):
    checkpoints.read_meta(str(tmp_path / "nowhere"))
  ckpt = Checkpointer(str(tmp_path), CheckpointConfig())
  assert ckpt.latest_step() is None and ckpt.all_steps() == []
  with pytest.raises(CheckpointError, match="No finished checkpoint"):
    ckpt.restore(abstract)
  with pytest.raises(CheckpointError, match="No finished checkpoint"):
    checkpoints.restore_params(str(tmp_path), abstract.params)
  ckpt.close()


def test_an_unknown_step_lists_the_steps_present(saved):
  with pytest.raises(CheckpointError, match="step 15 not found .*steps present: 10, 20"):
    checkpoints.read_meta(saved["workdir"], step=15)
  with pytest.raises(CheckpointError, match="steps present: 10, 20"):
    Checkpointer(saved["workdir"], CheckpointConfig()).restore(saved["abstract"], step=30)


def test_params_only_checkpoint_restores_params_and_refuses_a_resume(saved, tmp_path):
  params, vocabulary = saved["state"].params, saved["vocabulary"]
  checkpoints.save_params(str(tmp_path), params, ExperimentConfig(), vocabulary_path=vocabulary)
  assert checkpoints.all_steps(str(tmp_path)) == [0]
  meta = checkpoints.read_meta(str(tmp_path))
  assert meta["loader_state"] is None and meta["vocabulary"]["path"] == os.path.realpath(vocabulary)
  assert_trees_equal(checkpoints.restore_params(str(tmp_path), saved["abstract"].params), params)
  with pytest.raises(CheckpointError, match="already holds step 0"):
    checkpoints.save_params(str(tmp_path), params, ExperimentConfig())
  with Checkpointer(str(tmp_path), CheckpointConfig()) as ckpt:
    with pytest.raises(CheckpointError) as error:
      ckpt.restore(saved["abstract"])
  message = str(error.value)
  assert "holds parameters only" in message and "Hugging Face" in message
  assert f"new workdir with --set checkpoint.init_from={tmp_path}" in message


def test_restore_target_needs_shardings(saved):
  params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), saved["abstract"].params)
  with pytest.raises(CheckpointError, match="with .sharding set"):
    checkpoints.restore_params(saved["workdir"], params)


# ----------------------------------------------------------------------------
# Crash safety
# ----------------------------------------------------------------------------

_ARRAYS, _SIDE = 32, 1024  # 128 MiB of random float32: a save takes a while to write

_KILLED_MID_SAVE = textwrap.dedent("""
    import os, signal, sys, time
    import jax.numpy as jnp, numpy as np
    from t5x_lite.checkpoints import Checkpointer
    from t5x_lite.config import CheckpointConfig, ExperimentConfig
    from t5x_lite.train_state import TrainState

    workdir, arrays, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    def state(seed):
      rng = np.random.default_rng(seed)
      params = {f"w{i}": jnp.asarray(rng.standard_normal((side, side), np.float32))
                for i in range(arrays)}
      return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=(jnp.zeros(()),))
    def written(path):
      total = 0
      for root, _, files in os.walk(path):
        for name in files:
          try:
            total += os.path.getsize(os.path.join(root, name))
          except OSError:  # renamed meanwhile
            pass
      return total
    ckpt = Checkpointer(workdir, CheckpointConfig(every_steps=1))
    kwargs = dict(loader_state={"seed": 1}, experiment_config=ExperimentConfig(), vocabulary_path=None)
    ckpt.save(1, state(1), **kwargs)
    ckpt.wait_until_finished()
    ckpt.save(2, state(2), **kwargs)
    directory = os.path.join(workdir, "checkpoints")
    def unfinished():
      return [os.path.join(directory, n) for n in os.listdir(directory) if n.startswith("2.orbax-")]
    while sum(written(path) for path in unfinished()) < 8 << 20:
      if os.path.exists(os.path.join(directory, "2")):
        sys.exit("step 2 was finalized before it could be killed")
      time.sleep(0.001)
    os.kill(os.getpid(), signal.SIGKILL)  # some arrays are on disk, the step is not committed
""")


def test_a_process_killed_mid_save_leaves_the_previous_checkpoint(tmp_path):
  workdir = str(tmp_path)
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
      [sys.executable, "-c", _KILLED_MID_SAVE, workdir, str(_ARRAYS), str(_SIDE)], env=env,
      capture_output=True, text=True, timeout=120)
  assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
  directory = tmp_path / "checkpoints"
  # Orbax 0.12 names the unfinished step "2.orbax-checkpoint-tmp" (older: a "-<time>" suffix).
  entries = sorted(os.listdir(directory))
  assert entries[0] == "1" and len(entries) == 2 and entries[1].startswith("2.orbax-checkpoint-tmp")

  assert checkpoints.latest_step(workdir) == 1  # readers ignore the unfinished folder
  sharding = NamedSharding(make_mesh(MeshConfig(shape=(1, 1)), jax.devices()[:1]), P())
  leaf = jax.ShapeDtypeStruct((_SIDE, _SIDE), jnp.float32, sharding=sharding)
  abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding),
                        params={f"w{i}": leaf for i in range(_ARRAYS)},
                        opt_state=(jax.ShapeDtypeStruct((), jnp.float32, sharding=sharding),))
  ckpt = Checkpointer(workdir, CheckpointConfig())  # the writer deletes unfinished saves
  state, meta = ckpt.restore(abstract)
  assert meta["step"] == 1 and int(state.step) == 1 and meta["loader_state"] == {"seed": 1}
  rng = np.random.default_rng(1)
  for i in range(_ARRAYS):
    np.testing.assert_array_equal(np.asarray(state.params[f"w{i}"]),
                                  rng.standard_normal((_SIDE, _SIDE), np.float32))
  deadline = time.time() + 30
  while len(os.listdir(directory)) > 1 and time.time() < deadline:
    time.sleep(0.05)
  assert sorted(os.listdir(directory)) == ["1"]
  ckpt.close()


# ----------------------------------------------------------------------------
# describe() (the inspect command is tested in tests/cli/test_main.py)
# ----------------------------------------------------------------------------


def test_describe_lists_steps_tree_sizes_and_config(saved):
  info = checkpoints.describe(saved["workdir"])
  assert info["steps"] == [10, 20] and info["step"] == 20
  assert set(info["bytes_on_disk"]) == {10, 20} and all(b > 0 for b in info["bytes_on_disk"].values())
  expected_count = model_lib.count_params(model_config())
  assert info["num_params"] == expected_count and info["param_bytes"] == 4 * expected_count
  assert info["params"]["encoder/layers_0/mlp/wi_0"] == {"shape": [128, 256], "dtype": "float32"}
  assert config_lib.from_dict(info["config"]) == ExperimentConfig()
  assert info["vocabulary"]["path"] == os.path.realpath(saved["vocabulary"])
  text = checkpoints.format_description(info)
  assert "encoder/layers_0/mlp/wi_0" in text and f"{expected_count:,}" in text


@pytest.mark.parametrize("error", [MemoryError("host memory"),
                                   ValueError("RESOURCE_EXHAUSTED: Out of memory allocating 4 GiB"),
                                   ValueError("Sharding NamedSharding(...) is incompatible")])
def test_failures_that_are_not_damage_keep_their_own_error(error):
  with pytest.raises(type(error), match=str(error)[:12]):
    with checkpoints._reading_step(None, 3):  # pylint: disable=protected-access
      raise error


# ----------------------------------------------------------------------------
# Another vocabulary size, and a disk that fills up while saving
# ----------------------------------------------------------------------------


def digests(workdir) -> dict[str, str]:
  """Every file under workdir with the sha256 of its bytes: what a failed call may not change."""
  return {os.path.relpath(os.path.join(root, name), workdir):
          hashlib.sha256(open(os.path.join(root, name), "rb").read()).hexdigest()
          for root, _, names in os.walk(workdir) for name in names}


def test_another_vocab_size_names_the_checkpoints_vocabulary(saved):
  """Resuming (Checkpointer.restore) and init_from / load (restore_params) alike say which
  vocabulary the checkpoint was trained with, and touch nothing."""
  before = digests(saved["workdir"])
  abstract = abstract_state(model_config(vocab_size=256), ADAFACTOR, (1, 1))
  directory = os.path.join(saved["workdir"], "checkpoints")
  vocabulary = os.path.realpath(saved["vocabulary"])
  expected = (
      f"Checkpoint step 20 in {directory} was trained with vocab_size 128 (vocabulary {vocabulary}); "
      "this run has vocab_size 256. Use the same vocabulary as the checkpoint (--set "
      f"data.vocabulary={vocabulary} model.vocab_size=128, or drop the settings that changed them), or "
      "start a new workdir to train with the new vocabulary from scratch.\n"
      "  params/logits_dense: saved (128, 128), expected (128, 256)\n"
      "  params/token_embedder/embedding: saved (128, 128), expected (256, 128)")
  with pytest.raises(CheckpointError) as error:
    checkpoints.restore_params(saved["workdir"], abstract.params)
  assert str(error.value) == expected
  with Checkpointer(saved["workdir"], CheckpointConfig()) as ckpt:
    with pytest.raises(CheckpointError) as error:
      ckpt.restore(abstract)
  assert str(error.value) == expected + (
      "\n  opt_state/0/v_col/logits_dense: saved (128,), expected (256,)"
      "\n  opt_state/0/v_col/token_embedder/embedding: saved (128,), expected (256,)")
  assert digests(saved["workdir"]) == before
  params = checkpoints.restore_params(saved["workdir"], saved["abstract"].params)
  assert_trees_equal(params, saved["state"].params)


def test_another_vocab_size_and_other_changes_counts_them(saved):
  abstract = abstract_state(model_config(vocab_size=256, num_decoder_layers=1), ADAFACTOR, (1, 1))
  with pytest.raises(CheckpointError) as error:
    checkpoints.restore_params(saved["workdir"], abstract.params)
  first, *listed = str(error.value).splitlines()
  assert first.startswith("Checkpoint step 20 in ") and "was trained with vocab_size 128" in first
  others = [line for line in listed if "logits_dense" not in line and "token_embedder" not in line]
  assert first.endswith(f"from scratch. ({len(others)} other arrays differ too.)") and others


# Saves under a disk that fills up, in a process of its own as for a real run: a write that
# fails does not stop the others of that save, which go on writing into its unfinished folder
# until the process ends. The write of the step's meta JSON (Orbax writes it through epath, in
# the background when async_save) fails as on a full disk; the last line of each case's output
# is its outcome.
_FULL_DISK = textwrap.dedent("""
    import errno, hashlib, json, os, sys
    import jax.numpy as jnp
    from etils import epath
    from t5x_lite.checkpoints import Checkpointer
    from t5x_lite.config import CheckpointConfig, ExperimentConfig
    from t5x_lite.errors import UserError
    from t5x_lite.train_state import TrainState

    def save(ckpt, step):
      params = {"w": jnp.full((4, 3), float(step)), "b": jnp.full((3,), float(step))}
      state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=(jnp.zeros(()),))
      return ckpt.save(step, state, loader_state={"seed": 1}, experiment_config=ExperimentConfig(),
                       vocabulary_path=None)

    path_class, full = type(epath.Path(os.getcwd())), False
    write_text = path_class.write_text
    def write_text_or_fail(self, *args, **kwargs):
      if full and self.name == "metadata" and self.parent.name.split(".")[0] == "meta":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self))
      return write_text(self, *args, **kwargs)
    path_class.write_text = write_text_or_fail

    def digests(path):
      return {os.path.relpath(os.path.join(root, name), path):
              hashlib.sha256(open(os.path.join(root, name), "rb").read()).hexdigest()
              for root, _, names in os.walk(path) for name in names}

    for case in sys.argv[1:]:
      workdir = os.path.join(os.getcwd(), case)
      mode, waited_by = case.split("-", 1)
      full = False
      ckpt = Checkpointer(workdir, CheckpointConfig(every_steps=1, keep=1, async_save=mode == "async"))
      if waited_by != "first":
        save(ckpt, 1)
        ckpt.wait_until_finished()
      before = digests(workdir)
      full = True
      try:
        save(ckpt, 2)  # Synchronous: fails here. Asynchronous: when it is waited for.
        if waited_by == "next_save":
          save(ckpt, 3)
        elif waited_by == "close":
          ckpt.close()
        else:
          ckpt.wait_until_finished()
        outcome = {"error": None}
      except Exception as e:
        outcome = {"error": type(e).__name__, "user_error": isinstance(e, UserError), "message": str(e)}
      ckpt.close()  # Orbax reports a failed save once: closing after it raises nothing.
      print(json.dumps({**outcome, "before": before}), flush=True)
""")

_FULL_DISK_CASES = ["sync-wait", "async-wait", "async-next_save", "async-close", "sync-first"]


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory) -> dict:
  """Each case's workdir and outcome, from one process for all of them."""
  base = tmp_path_factory.mktemp("full_disk")
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", _FULL_DISK, *_FULL_DISK_CASES], cwd=base, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  outcomes = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  assert len(outcomes) == len(_FULL_DISK_CASES), result.stderr[-3000:]
  return {case: (base / case, outcome) for case, outcome in zip(_FULL_DISK_CASES, outcomes)}


@pytest.mark.parametrize("case", _FULL_DISK_CASES[:-1])
def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(full_disk, case):
  """Whether the save fails at once (synchronous) or when it is waited for (asynchronous: by
  wait_until_finished, the next save or close), one message names the step and the one kept."""
  workdir, outcome = full_disk[case]
  directory = workdir / "checkpoints"
  assert outcome["error"] == "CheckpointError" and outcome["user_error"]
  assert outcome["message"] == (
      f"disk full while saving the checkpoint of step 2 in {directory}: the last complete "
      "checkpoint (step 1) is kept; free space (or set checkpoint.keep lower) and resume with "
      "the same command.")
  # Step 1 is as it was (keep=1 deletes it only once step 2 is complete); the unfinished
  # step 2 is no step.
  assert digests(workdir) == {**outcome["before"], **{
      name: digest for name, digest in digests(workdir).items()
      if name.startswith("checkpoints/2.orbax-checkpoint-tmp/")}}
  assert sorted(os.listdir(directory)) == ["1", "2.orbax-checkpoint-tmp"]
  assert checkpoints.all_steps(str(workdir)) == [1]
  # Resuming with the same command: the writer deletes the unfinished save; step 1 restores.
  with Checkpointer(str(workdir), CheckpointConfig(every_steps=1, keep=1)) as ckpt:
    state, meta = ckpt.restore(toy_abstract())
    assert meta["step"] == 1 and float(state.params["w"][0, 0]) == 1.0
    assert save(ckpt, 2, toy_state(2))
  assert sorted(os.listdir(directory)) == ["2"]


def test_a_full_disk_before_any_checkpoint_says_none_is_kept(full_disk):
  workdir, outcome = full_disk["sync-first"]
  assert outcome["message"] == (
      f"disk full while saving the checkpoint of step 2 in {workdir / 'checkpoints'}: no complete "
      "checkpoint is saved yet; free space and run the same command again.")
  assert checkpoints.all_steps(str(workdir)) == []


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    ExceptionGroup("commit failed", [ValueError("other"), OSError(errno.EDQUOT, "Disk quota exceeded")]),
    ValueError('UNKNOWN: Error writing local file "/x/d/7ab": [OS error 28: No space left on device]'),
])
def test_disk_full_is_found_however_orbax_wraps_it(error):
  wrapped = RuntimeError("Failed to run 5 Handler Commit operations")
  wrapped.__cause__ = error
  assert checkpoints._is_disk_full(wrapped)  # pylint: disable=protected-access


def test_other_save_failures_keep_their_own_error(tmp_path, monkeypatch):
  ckpt = Checkpointer(str(tmp_path), CheckpointConfig(async_save=False))

  def denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied")

  monkeypatch.setattr(ckpt._manager, "save", denied)  # pylint: disable=protected-access
  with pytest.raises(PermissionError):
    save(ckpt, 1, toy_state(1))
  ckpt.close()
