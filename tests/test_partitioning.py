"""Sharded training on 8 CPU devices: every rule preset and mesh shape computes the
same step as one device, and the arrays are really laid out as the rules say."""

import functools

import jax
import numpy as np
import pytest
from helpers import random_batch, relative_difference, tiny_model
from jax.sharding import PartitionSpec

from t5x_lite import config as config_lib
from t5x_lite import model as model_lib
from t5x_lite import partitioning
from t5x_lite.config import ConfigError, MeshConfig
from t5x_lite.train_state import TrainState
from t5x_lite.training import step as step_lib

# Each rule preset on the mesh shapes where what it shards is split: over the data axis
# alone (8x1) or the model axis alone (1x8), and beside the other axis split too (2x4, 4x2).
SHARDED_STEPS = [("data_parallel", (8, 1)), ("data_parallel", (2, 4)), ("fsdp", (8, 1)),
                 ("fsdp", (2, 4)), ("model_parallel", (1, 8)), ("model_parallel", (4, 2)),
                 ("2d", (2, 4)), ("2d", (4, 2))]


def _experiment(preset="data_parallel", shape=(1, 1), rules=(), **train_changes) -> config_lib.ExperimentConfig:
  config = config_lib.ExperimentConfig(
      model=tiny_model(vocab_size=128),
      data=config_lib.DataConfig(inputs_length=16, targets_length=8),
      optimizer=config_lib.OptimizerConfig(name="adafactor", warmup_steps=10),
      train=config_lib.TrainConfig(steps=10, batch_size=8, **train_changes),
      mesh=MeshConfig(axes=("data", "model"), shape=shape, rules_preset=preset, rules=rules))
  # Large enough for Adafactor to factor some statistics (min dim 128), and
  # 8 heads so that every mesh shape divides them.
  config.model.d_model, config.model.d_ff, config.model.num_heads = 128, 256, 8
  config.optimizer.min_dim_size_to_factor = 128
  return config_lib.validate(config)


@functools.lru_cache(maxsize=None)
def _initial_params():
  return jax.device_get(model_lib.init_params(_experiment().model, jax.random.key(0)))


def _batch():
  return random_batch(np.random.default_rng(0), 8, 16, 8, 128)


def _one_step(config, devices):
  setup = step_lib.make_setup(config, devices)
  state = jax.device_put(
      TrainState.create(_initial_params(), setup.optimizer), setup.state_shardings)
  batch = step_lib.to_global(_batch(), setup.batch_sharding)
  state, metrics = step_lib.make_train_step(setup)(state, batch)
  return setup, state, metrics


@functools.lru_cache(maxsize=None)
def _reference():
  _, state, metrics = _one_step(_experiment(), jax.devices()[:1])
  return jax.device_get(state.params), float(metrics["loss"])


def test_eight_cpu_devices():
  assert jax.device_count() == 8, "tests/conftest.py must set --xla_force_host_platform_device_count=8"


@pytest.mark.parametrize("preset, shape", SHARDED_STEPS,
                         ids=[f"{shape[0]}x{shape[1]}-{preset}" for preset, shape in SHARDED_STEPS])
def test_sharded_step_matches_single_device(preset, shape):
  setup, state, metrics = _one_step(_experiment(preset, shape), jax.devices())
  reference_params, reference_loss = _reference()
  assert abs(float(metrics["loss"]) - reference_loss) / reference_loss < 1e-5
  params = jax.device_get(state.params)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(reference_params)):
    assert relative_difference(got, want) < 1e-5
  # Every parameter is laid out as the rules say.
  _, logical = model_lib.abstract_params(setup.config.model)
  rules = partitioning.RULE_PRESETS[preset]
  specs = jax.tree.leaves(logical, is_leaf=lambda x: isinstance(x, PartitionSpec))
  for array, spec in zip(jax.tree.leaves(state.params), specs):
    expected = partitioning.logical_to_mesh_spec(spec, rules)
    assert array.sharding.spec == expected or _same_up_to_trailing_none(array.sharding.spec, expected)


def _same_up_to_trailing_none(a: PartitionSpec, b: PartitionSpec) -> bool:
  def strip(spec):
    entries = list(spec)
    while entries and entries[-1] is None:
      entries.pop()
    return tuple(entries)
  return strip(a) == strip(b)


def _bytes_on_first_device(tree) -> int:
  return sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(tree))


def test_memory_per_device_falls_with_fsdp_and_model_parallelism():
  def state_bytes(preset, shape):
    setup = step_lib.make_setup(_experiment(preset, shape), jax.devices())
    state = step_lib.init_state(setup, seed=0)
    return _bytes_on_first_device(state.params), _bytes_on_first_device(state.opt_state)

  replicated_params, replicated_opt = state_bytes("data_parallel", (8, 1))
  for preset, shape in (("fsdp", (8, 1)), ("model_parallel", (1, 8)), ("2d", (2, 4))):
    params_bytes, opt_bytes = state_bytes(preset, shape)
    assert params_bytes < 0.4 * replicated_params, preset
    assert opt_bytes < replicated_opt, preset


def test_adafactor_statistics_follow_parameter_sharding():
  setup = step_lib.make_setup(_experiment("2d", (2, 4)), jax.devices())
  factored = setup.state_shardings.opt_state[0]
  mlp_wi = setup.state_shardings.params["encoder"]["layers_0"]["mlp"]["wi_0"]
  assert mlp_wi.spec == PartitionSpec("data", "model")
  v_row = factored.v_row["encoder"]["layers_0"]["mlp"]["wi_0"]
  v_col = factored.v_col["encoder"]["layers_0"]["mlp"]["wi_0"]
  shapes = setup.abstract_state.opt_state[0]
  assert shapes.v_row["encoder"]["layers_0"]["mlp"]["wi_0"].shape == (128,)
  assert shapes.v_col["encoder"]["layers_0"]["mlp"]["wi_0"].shape == (256,)
  assert v_row.spec == PartitionSpec("data") and v_col.spec == PartitionSpec("model")


def test_mesh_shape_that_does_not_divide_devices():
  with pytest.raises(ConfigError, match=r"cannot fill 8 devices: 8 is not divisible by 3"):
    partitioning.make_mesh(MeshConfig(shape=(-1, 3)))
  with pytest.raises(ConfigError, match=r"needs 6 devices but 8 are available"):
    partitioning.make_mesh(MeshConfig(shape=(2, 3)))


def test_parameter_that_does_not_divide_its_mesh_axis():
  config = _experiment("model_parallel", (1, 8))
  config.model.num_heads = 4
  with pytest.raises(ConfigError,
                     match=r"relpos_bias/rel_embedding.*dimension 0 \(heads\) of size 4, which .* split 8 ways"):
    step_lib.make_setup(config, jax.devices())


def test_batch_that_does_not_divide_the_data_axis():
  config = _experiment("data_parallel", (8, 1))
  config.train.batch_size = 12
  with pytest.raises(ConfigError, match=r"batch_size=12 .* does not divide over the 8-way batch sharding"):
    step_lib.make_setup(config, jax.devices())


def test_custom_rules_from_the_experiment():
  config = _experiment("custom", (2, 4), rules=(("batch", "data"), ("vocab", "model")))
  setup = step_lib.make_setup(config, jax.devices())
  assert setup.state_shardings.params["token_embedder"]["embedding"].spec == PartitionSpec("model", None)
  assert setup.state_shardings.params["encoder"]["layers_0"]["mlp"]["wi_0"].spec == PartitionSpec(None, None)


def test_rules_and_mesh_axes_that_do_not_match():
  # Axes named unlike the presets' (a typo in mesh.axes) would replicate everything.
  with pytest.raises(ConfigError, match=r"mesh.axes \('foo', 'bar'\): the rules of "
                                        r"mesh.rules_preset='data_parallel' shard over \['data'\]"):
    partitioning.make_mesh(MeshConfig(axes=("foo", "bar"), shape=(8, 1)))
  # Custom rules naming an axis the mesh lacks.
  with pytest.raises(ConfigError, match=r"mesh.rules name mesh axes \['dta'\] that mesh.axes"):
    partitioning.make_mesh(MeshConfig(shape=(8, 1), rules_preset="custom", rules=(("batch", "dta"),)))
  with pytest.raises(ConfigError, match=r"mesh.rules name logical axes \['hedas'\] that the model"):
    partitioning.make_mesh(MeshConfig(shape=(2, 4), rules_preset="custom",
                                      rules=(("batch", "data"), ("hedas", "model"))))


def test_processes_must_hold_their_own_rows():
  """Two processes of two devices each: a mesh that splits the batch over the devices of one
  process only would take each process's rows as the same rows."""
  class Device:
    def __init__(self, process_index):
      self.process_index = process_index

  class Sharding:
    def __init__(self, slices):
      self.slices = slices

    def devices_indices_map(self, shape):
      return {Device(i // 2): (slices, slice(None)) for i, slices in enumerate(self.slices)}

  over_processes = Sharding([slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)])
  within_each_process = Sharding([slice(0, 4), slice(4, 8), slice(0, 4), slice(4, 8)])
  assert not partitioning.processes_share_rows(over_processes, 8)
  assert partitioning.processes_share_rows(within_each_process, 8)
  assert not partitioning.processes_share_rows(batch_sharding_on_one_process(), 8)


def batch_sharding_on_one_process():
  mesh = partitioning.make_mesh(MeshConfig(shape=(4, 2), rules_preset="model_parallel"))
  return partitioning.batch_sharding(mesh, partitioning.RULE_PRESETS["model_parallel"])
