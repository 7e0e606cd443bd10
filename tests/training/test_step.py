"""The sharded train and eval steps: gradient accumulation and the chunked loss give the
full-batch update, unpacked rows the packed sums, on one device and sharded."""

import functools

import jax
import numpy as np
import pytest
from helpers import random_batch, relative_difference, tiny_model

from t5x_lite import config as config_lib
from t5x_lite import losses
from t5x_lite import model as model_lib
from t5x_lite.training import step as step_lib


def _step_config(**train_changes) -> config_lib.ExperimentConfig:
  return config_lib.validate(config_lib.ExperimentConfig(
      model=tiny_model(vocab_size=128, dropout_rate=0.0),
      data=config_lib.DataConfig(inputs_length=16, targets_length=8),
      optimizer=config_lib.OptimizerConfig(name="adamw", schedule="constant", learning_rate=1e-2,
                                           warmup_steps=0),
      train=config_lib.TrainConfig(steps=10, batch_size=8, **train_changes),
      mesh=config_lib.MeshConfig(shape=(1, 1))))


def _one_step(config, batch):
  """(params after one update, train loss, eval sums of the initial params)."""
  setup = step_lib.make_setup(config, jax.devices()[:1])
  state = step_lib.init_state(setup, seed=0)
  global_batch = step_lib.to_global(batch, setup.batch_sharding)
  eval_sums = jax.device_get(step_lib.make_eval_step(setup)(state.params, global_batch))
  state, metrics = step_lib.make_train_step(setup)(state, global_batch)
  return jax.device_get(state.params), float(metrics["loss"]), eval_sums


@pytest.fixture(scope="module")
def full_batch_step():
  """A batch and one plain step on it, shared by the variants compared with it."""
  batch = random_batch(np.random.default_rng(0), 8, 16, 8, 128, segments=2)
  # Uneven token counts per microbatch: normalisation must be over the whole batch.
  batch["decoder_loss_weights"][:2] = 0.0
  return batch, _one_step(_step_config(), batch)


@pytest.mark.parametrize("changes", [{"grad_accum_steps": 4}, {"loss_chunk_size": 2}])
def test_step_variants_give_the_full_batch_update(changes, monkeypatch, full_batch_step):
  """Gradient accumulation and the chunked loss change memory, never the update."""
  chunked_calls = []
  chunked = losses.chunked_output_sums
  monkeypatch.setattr(losses, "chunked_output_sums",
                      lambda *args, **kwargs: chunked_calls.append(1) or chunked(*args, **kwargs))
  batch, (full_params, full_loss, full_eval) = full_batch_step
  params, loss, eval_sums = _one_step(_step_config(**changes), batch)
  assert abs(full_loss - loss) / full_loss < 1e-5
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(full_params)):
    assert relative_difference(a, b) < 1e-5
  for key, value in full_eval.items():
    assert float(eval_sums[key]) == pytest.approx(float(value), rel=1e-5), key
  assert len(chunked_calls) == (2 if "loss_chunk_size" in changes else 0)  # train and eval steps


def _forward_sums_and_grads(model, params, batch, loss_chunk_size, packed=True):
  forward = functools.partial(step_lib._forward_sums, model, z_loss=1e-2, label_smoothing=0.1,
                              dropout_rng=None, loss_chunk_size=loss_chunk_size, packed=packed)
  grads, sums = jax.jit(jax.grad(forward, has_aux=True))(params, batch)
  return jax.device_get(sums), jax.device_get(grads)


def _assert_same_sums_and_grads(got, want):
  (sums, grads), (want_sums, want_grads) = got, want
  assert sums.keys() == want_sums.keys()
  for key in sums:
    assert float(sums[key]) == pytest.approx(float(want_sums[key]), rel=1e-5), key
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
    assert relative_difference(a, b) < 1e-5


@pytest.mark.parametrize("tie_logits", [False, True])
def test_chunked_loss_matches_plain_train_sums(tie_logits):
  """train.loss_chunk_size gives the step the same sums and gradients (with label
  smoothing and z-loss), only without the full logits."""
  cfg = tiny_model(tie_logits=tie_logits)
  params = model_lib.init_params(cfg, jax.random.key(10))
  batch = random_batch(np.random.default_rng(10), 4, 16, 8, cfg.vocab_size)
  model = model_lib.Transformer(cfg)
  _assert_same_sums_and_grads(_forward_sums_and_grads(model, params, batch, 2),
                              _forward_sums_and_grads(model, params, batch, 0))


@pytest.mark.parametrize("impl", ["xla", "auto"])
def test_unpacked_rows_give_the_packed_sums(impl):
  """data.pack=False leaves segment ids out of the model call (masks become lengths and a
  causal flag); on rows of one example each, loss sums and gradients do not change."""
  cfg = tiny_model(attention_impl=impl)
  params = model_lib.init_params(cfg, jax.random.key(13))
  batch = random_batch(np.random.default_rng(13), 4, 16, 8, cfg.vocab_size, segments=1)
  model = model_lib.Transformer(cfg)
  _assert_same_sums_and_grads(_forward_sums_and_grads(model, params, batch, 0, packed=False),
                              _forward_sums_and_grads(model, params, batch, 0, packed=True))


def test_chunked_loss_matches_plain_when_sharded():
  """On 8 CPU devices, batch over 'data' and vocab over 'model' (2d rules): the chunks keep
  the batch sharding and compute what one device computes without chunks."""
  config = config_lib.validate(config_lib.ExperimentConfig(
      model=tiny_model(), data=config_lib.DataConfig(inputs_length=16, targets_length=8),
      train=config_lib.TrainConfig(batch_size=8, loss_chunk_size=4),
      mesh=config_lib.MeshConfig(shape=(4, 2), rules_preset="2d")))
  setup = step_lib.make_setup(config, jax.devices())
  params = model_lib.init_params(config.model, jax.random.key(11))
  batch = random_batch(np.random.default_rng(11), 8, 16, 8, config.model.vocab_size)
  sharded = _forward_sums_and_grads(
      setup.model, jax.device_put(params, setup.state_shardings.params),
      step_lib.to_global(batch, setup.batch_sharding), config.train.loss_chunk_size)
  _assert_same_sums_and_grads(
      sharded, _forward_sums_and_grads(model_lib.Transformer(config.model), params, batch, 0))


def test_decoder_only_train_step_on_eight_devices():
  """A prefix LM through the sharded train step (2d rules: its one stack split over 'model'
  as T5's stacks are) takes a finite step from about log(vocab)."""
  config = config_lib.validate(config_lib.ExperimentConfig(
      model=tiny_model(architecture="decoder_only", num_encoder_layers=0, dropout_rate=0.0),
      data=config_lib.DataConfig(inputs_length=16, targets_length=8),
      train=config_lib.TrainConfig(batch_size=8),
      mesh=config_lib.MeshConfig(shape=(4, 2), rules_preset="2d")))
  setup = step_lib.make_setup(config, jax.devices())
  state = step_lib.init_state(setup, seed=0)
  before = jax.device_get(state.params)
  batch = step_lib.to_global(random_batch(np.random.default_rng(16), 8, 16, 8, 128), setup.batch_sharding)
  state, metrics = step_lib.make_train_step(setup)(state, batch)
  assert abs(float(metrics["loss"]) - np.log(128)) < 1.0
  wi = state.params["decoder"]["layers_0"]["mlp"]["wi_0"]
  assert wi.sharding.spec == jax.sharding.PartitionSpec("data", "model")
  assert relative_difference(wi, before["decoder"]["layers_0"]["mlp"]["wi_0"]) > 0
