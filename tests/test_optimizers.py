"""Schedules and optimizers: T5's rsqrt numbers, Adafactor's state and defaults, AdamW decay."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import relative_difference, tiny_model
from jax.sharding import PartitionSpec as P

from t5x_lite import model as model_lib
from t5x_lite.config import OptimizerConfig
from t5x_lite.optimizers import make_optimizer, make_schedule


def _lr(schedule, step):
  return float(schedule(jnp.asarray(step, jnp.int32)))


def test_rsqrt_is_t5s_flat_then_inverse_sqrt():
  schedule = make_schedule(OptimizerConfig(), total_steps=100_000)  # lr 1.0, warmup 10000
  for step in (0, 1, 5000, 10_000):
    assert _lr(schedule, step) == pytest.approx(0.01, rel=1e-6)
  for step in (10_001, 40_000, 100_000):
    assert _lr(schedule, step) == pytest.approx(1 / math.sqrt(step), rel=1e-6)


def test_rsqrt_without_warmup_is_finite_at_step_zero():
  schedule = make_schedule(OptimizerConfig(learning_rate=0.5, warmup_steps=0), total_steps=10)
  assert _lr(schedule, 0) == pytest.approx(0.5)
  assert _lr(schedule, 4) == pytest.approx(0.25)


def test_cosine_endpoints():
  opt = OptimizerConfig(schedule="cosine", learning_rate=2.0, warmup_steps=10,
                        final_learning_rate_fraction=0.1)
  schedule = make_schedule(opt, total_steps=110)
  expected = {0: 0.0, 5: 1.0, 10: 2.0, 60: 0.2 + 1.8 * 0.5, 110: 0.2, 500: 0.2}
  for step, lr in expected.items():
    assert _lr(schedule, step) == pytest.approx(lr, abs=1e-6), step
  with pytest.raises(ValueError, match="cosine"):
    make_schedule(opt, total_steps=10)


def test_constant_with_and_without_warmup():
  flat = make_schedule(OptimizerConfig(schedule="constant", learning_rate=0.3, warmup_steps=0), 10)
  assert [_lr(flat, s) for s in (0, 7, 10_000)] == pytest.approx([0.3] * 3)
  opt = OptimizerConfig(schedule="constant", learning_rate=0.3, warmup_steps=4)
  ramped = make_schedule(opt, 10)
  assert [_lr(ramped, s) for s in (0, 2, 4, 100)] == pytest.approx([0.0, 0.15, 0.3, 0.3])


def _params():
  keys = jax.random.split(jax.random.key(0), 3)
  return {
      "matrix": jax.random.normal(keys[0], (512, 1024)),  # factored
      "narrow": jax.random.normal(keys[1], (64, 512)),  # second dim < 128: unfactored
      "vector": jax.random.normal(keys[2], (1024,)),
  }


def test_adafactor_state_is_factored_only_for_large_matrices():
  state = make_optimizer(OptimizerConfig(), 1000).init(_params())
  shapes = lambda name: jax.tree.map(jnp.shape, optax.tree_utils.tree_get(state, name))
  # (512, 1024): row statistics drop the largest dim (1024), column ones the other.
  assert shapes("v_row") == {"matrix": (512,), "narrow": (1,), "vector": (1,)}
  assert shapes("v_col") == {"matrix": (1024,), "narrow": (1,), "vector": (1,)}
  assert shapes("v") == {"matrix": (1,), "narrow": (64, 512), "vector": (1024,)}
  # No momentum: nothing else is as large as a parameter.
  assert sum(x.size for x in jax.tree.leaves(state)) < 64 * 512 + 1024 + 512 + 1024 + 16


def _quadratic(params, target):
  return sum(jax.tree.leaves(jax.tree.map(lambda p, t: jnp.sum((p - t) ** 2), params, target)))


def test_adafactor_steps_reduce_a_quadratic():
  params = _params()
  target = jax.tree.map(jnp.zeros_like, params)
  optimizer = make_optimizer(OptimizerConfig(), 1000)
  state = optimizer.init(params)
  losses = [float(_quadratic(params, target))]
  for _ in range(3):
    grads = jax.grad(_quadratic)(params, target)
    updates, state = optimizer.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    losses.append(float(_quadratic(params, target)))
  assert losses[1] < losses[0] and losses[3] < losses[1]


def test_adafactor_first_update_is_lr_times_max_epsilon2_param_rms():
  # At step 0 the second moment is g**2, so the unfactored update is sign(g) (RMS 1,
  # untouched by clipping); zero parameters then take the epsilon2 floor as their scale.
  opt = OptimizerConfig(schedule="constant", learning_rate=2.0, warmup_steps=0, epsilon2=0.25)
  optimizer = make_optimizer(opt, 10)
  params = {"vector": jnp.zeros((8,))}
  grads = {"vector": jnp.linspace(-1.0, 1.0, 8) + 0.01}
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  np.testing.assert_allclose(updates["vector"], -2.0 * 0.25 * np.sign(grads["vector"]), rtol=1e-5)


def _unscan(tree):
  """Scanned params -> the unscanned layout: the stack ``layers`` -> layers_0, layers_1, ..."""
  out = {}
  for name, sub in tree.items():
    if name == "layers":
      count = jax.tree.leaves(sub)[0].shape[0]
      out.update({f"layers_{i}": jax.tree.map(lambda x, i=i: x[i], sub) for i in range(count)})
    else:
      out[name] = _unscan(sub) if isinstance(sub, dict) else sub
  return out


def _per_layer(scales, specs, tree):
  """Multiplies layer i of every stacked leaf by scales[i]."""
  def scale(x, spec):
    return x * scales.reshape((-1,) + (1,) * (x.ndim - 1)) if "layers" in spec else x
  return jax.tree.map(scale, tree, specs)


def test_adafactor_updates_a_scanned_stack_layer_by_layer_as_unscanned():
  # Layers of very different parameter scales, and gradient scales that change differently
  # per layer between the two steps: an RMS over the whole stack, for the parameter scale
  # or for the update clipping, would mix the layers (each alone fails this test).
  config = tiny_model(scan_layers=True, num_encoder_layers=3, num_decoder_layers=3)
  shapes, specs = model_lib.abstract_params(config)
  unscanned_shapes, unscanned_specs = model_lib.abstract_params(
      dataclasses.replace(config, scan_layers=False))
  rng = np.random.default_rng(0)
  noise = lambda: jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)
  params = _per_layer(jnp.array([1.0, 30.0, 1e3]), specs, noise())
  assert jax.tree.map(jnp.shape, _unscan(params)) == jax.tree.map(jnp.shape, unscanned_shapes)
  grads = [noise(), _per_layer(jnp.array([1.0, 1e2, 1e-2]), specs, noise())]

  def updates(params, specs, grads):
    # min_dim_size_to_factor=16 factors the tiny kernels too.
    optimizer = make_optimizer(OptimizerConfig(min_dim_size_to_factor=16), 100, specs)
    update_fn, state, out = jax.jit(optimizer.update), optimizer.init(params), []
    for g in grads:
      update, state = update_fn(g, state, params)
      params = optax.apply_updates(params, update)
      out.append(update)
    return out

  scanned = updates(params, specs, grads)
  unscanned = updates(_unscan(params), unscanned_specs, [_unscan(g) for g in grads])
  for step in range(2):
    differences = jax.tree.map(relative_difference, _unscan(scanned[step]), unscanned[step])
    assert max(jax.tree.leaves(differences)) < 1e-5, step


def _decay_step(opt, params, params_logical_axes=None):
  """One update with zero gradients: only weight decay moves parameters."""
  optimizer = make_optimizer(opt, 10, params_logical_axes)
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  return optax.apply_updates(params, updates)


def test_adamw_weight_decay_skips_vectors_and_scanned_norm_scales():
  opt = OptimizerConfig(name="adamw", schedule="constant", learning_rate=0.1, warmup_steps=0,
                        weight_decay=0.5)
  params = {"kernel": jnp.ones((4, 8)), "scale": jnp.ones((8,)), "stacked_scale": jnp.ones((3, 8))}
  # Decoupled decay scaled by the learning rate: 1 - 0.1 * 0.5.
  decayed = _decay_step(opt, params)
  np.testing.assert_allclose(decayed["kernel"], 0.95)
  np.testing.assert_allclose(decayed["scale"], 1.0)
  np.testing.assert_allclose(decayed["stacked_scale"], 0.95)  # 2-D without axis names
  axes = {"kernel": P("embed", "mlp"), "scale": P("embed"), "stacked_scale": P("layers", "embed")}
  decayed = _decay_step(opt, params, axes)
  np.testing.assert_allclose(decayed["kernel"], 0.95)
  np.testing.assert_allclose(decayed["stacked_scale"], 1.0)


def test_adafactor_weight_decay_is_per_step_not_lr_scaled():
  opt = OptimizerConfig(schedule="constant", learning_rate=0.1, warmup_steps=0, weight_decay=0.5)
  decayed = _decay_step(opt, {"kernel": jnp.ones((4, 8)), "scale": jnp.ones((8,))})
  np.testing.assert_allclose(decayed["kernel"], 0.5)
  np.testing.assert_allclose(decayed["scale"], 1.0)


def test_global_norm_clipping_caps_the_gradient():
  # With a huge eps, Adam's first update is lr * g / eps: linear in the (clipped) gradient.
  opt = OptimizerConfig(name="adamw", schedule="constant", learning_rate=1.0, warmup_steps=0,
                        eps=1e6, weight_decay=0.0)
  params = {"w": jnp.zeros((3, 4))}
  grads = {"w": jnp.full((3, 4), 10.0 / math.sqrt(12))}  # global norm 10

  def update_norm(o):
    optimizer = make_optimizer(o, 10)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return float(optax.tree.norm(updates))

  assert update_norm(opt) == pytest.approx(10 / 1e6, rel=1e-4)
  clipped = dataclasses.replace(opt, grad_clip_norm=1.0)
  assert update_norm(clipped) == pytest.approx(1 / 1e6, rel=1e-4)


def test_unknown_names_are_rejected():
  with pytest.raises(ValueError, match="optimizer.name"):
    make_optimizer(OptimizerConfig(name="sgd"), 10)
  with pytest.raises(ValueError, match="optimizer.schedule"):
    make_schedule(OptimizerConfig(schedule="linear"), 10)
