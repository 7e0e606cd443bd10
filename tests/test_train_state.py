"""TrainState updates and jit donation; logical sharding of optimizer state."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from t5x_lite.config import OptimizerConfig
from t5x_lite.optimizers import make_optimizer, make_schedule
from t5x_lite.train_state import TrainState, opt_state_logical_axes, train_state_logical_axes

SHAPES = {
    "mlp": jax.ShapeDtypeStruct((512, 1024), jnp.float32),
    "scale": jax.ShapeDtypeStruct((1024,), jnp.float32),
    "attn": jax.ShapeDtypeStruct((512, 6, 64), jnp.float32),
}
AXES = {"mlp": P("embed", "mlp"), "scale": P("embed"), "attn": P("embed", "heads", "kv")}


def _is_spec(x):
  return isinstance(x, P)


def _counts(specs):
  return [spec for _, spec in optax.tree_utils.tree_get_all_with_path(specs, "count")]


def test_create_and_apply_gradients_under_jit_with_donation():
  optimizer = make_optimizer(OptimizerConfig(), 100)
  params = {"w": jnp.ones((4, 3)), "b": jnp.zeros((3,))}
  state = TrainState.create(params, optimizer)
  assert state.step.dtype == jnp.int32 and state.step.shape == ()
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(optimizer.init(params))

  @jax.jit
  def loss(params, x):
    return jnp.sum((x @ params["w"] + params["b"]) ** 2)

  def train_step(state, x):
    return state.apply_gradients(jax.grad(loss)(state.params, x), optimizer)

  step = jax.jit(train_step, donate_argnums=0)
  x = jnp.ones((2, 4))
  before = float(loss(params, x))
  for _ in range(2):
    state = step(state, x)
  assert int(state.step) == 2
  assert float(loss(state.params, x)) < before
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))


def test_adafactor_specs_follow_factored_statistics():
  # min_dim 32 also factors the 3-D attention kernel over its two largest dims.
  for min_dim in (128, 32):
    optimizer = make_optimizer(OptimizerConfig(min_dim_size_to_factor=min_dim), 100)
    specs = opt_state_logical_axes(optimizer, AXES, SHAPES)
    shapes = jax.eval_shape(optimizer.init, SHAPES)
    assert jax.tree.structure(specs, is_leaf=_is_spec) == jax.tree.structure(shapes)
    v_row, v_col, v = (optax.tree_utils.tree_get(specs, k) for k in ("v_row", "v_col", "v"))
    row_shapes = optax.tree_utils.tree_get(shapes, "v_row")
    col_shapes = optax.tree_utils.tree_get(shapes, "v_col")
    assert _counts(specs) == [P(), P()]  # Adafactor's and the schedule's step counts
    # (512, 1024): rows drop the largest dim (mlp), columns the other (embed).
    assert row_shapes["mlp"].shape == (512,) and v_row["mlp"] == P("embed")
    assert col_shapes["mlp"].shape == (1024,) and v_col["mlp"] == P("mlp")
    assert v["mlp"] == P()  # (1,) placeholder
    assert v["scale"] == P("embed") and v_row["scale"] == v_col["scale"] == P()
    if min_dim == 128:  # (512, 6, 64): 64 < 128, unfactored
      assert v["attn"] == AXES["attn"] and v_row["attn"] == v_col["attn"] == P()
    else:  # factored over embed (512) and kv (64)
      assert row_shapes["attn"].shape == (6, 64) and v_row["attn"] == P("heads", "kv")
      assert col_shapes["attn"].shape == (512, 6) and v_col["attn"] == P("embed", "heads")
      assert v["attn"] == P()


def test_scanned_kernels_keep_the_layers_axis_and_ambiguous_stats_replicate():
  shapes = {"stacked": jax.ShapeDtypeStruct((4, 512, 1024), jnp.float32),
            "square": jax.ShapeDtypeStruct((256, 256), jnp.float32),
            "unnamed": jax.ShapeDtypeStruct((256, 512), jnp.float32)}
  axes = {"stacked": P("layers", "embed", "mlp"), "square": P("embed", "mlp"), "unnamed": None}
  optimizer = make_optimizer(OptimizerConfig(), 100)
  specs = opt_state_logical_axes(optimizer, axes, shapes)
  v_row, v_col = (optax.tree_utils.tree_get(specs, k) for k in ("v_row", "v_col"))
  assert v_row["stacked"] == P("layers", "embed") and v_col["stacked"] == P("layers", "mlp")
  # (256,) could come from either dim of a square matrix: replicated rather than guessed.
  assert v_row["square"] == v_col["square"] == P()
  assert v_row["unnamed"] == v_col["unnamed"] == P()


def test_adamw_moments_share_parameter_specs():
  opt = OptimizerConfig(name="adamw", weight_decay=0.1, grad_clip_norm=1.0)
  optimizer = make_optimizer(opt, 100)
  specs = opt_state_logical_axes(optimizer, AXES, SHAPES)
  shapes = jax.eval_shape(optimizer.init, SHAPES)
  assert jax.tree.structure(specs, is_leaf=_is_spec) == jax.tree.structure(shapes)
  assert optax.tree_utils.tree_get(specs, "mu") == AXES
  assert optax.tree_utils.tree_get(specs, "nu") == AXES
  assert _counts(specs) == [P(), P()]


def test_train_state_specs_become_shardings_for_jit():
  optimizer = make_optimizer(OptimizerConfig(), 100)
  axes = dict(AXES, scale=None)
  specs = train_state_logical_axes(optimizer, axes, SHAPES)
  assert specs.step == P() and specs.params["scale"] == P()
  mesh = jax.make_mesh((1, 1), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
  rules = (("mlp", "model"), ("heads", "model"), ("embed", None), ("kv", None))
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  assert shardings.opt_state[0].v_col["mlp"] == NamedSharding(mesh, P("model"))

  def init():
    params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), SHAPES)
    return TrainState.create(params, optimizer)

  state = jax.jit(init, out_shardings=shardings)()
  assert int(state.step) == 0
  np.testing.assert_array_equal(state.params["scale"], 1.0)


def test_schedule_at_state_step_is_the_rate_of_the_next_update():
  # Constant gradients keep Adafactor's unfactored second moment at g**2, so without
  # clipping or parameter scaling each update is exactly -lr(step) * sign(g).
  opt = OptimizerConfig(schedule="constant", learning_rate=1.0, warmup_steps=4,
                        clipping_threshold=0.0, multiply_by_parameter_scale=False)
  optimizer = make_optimizer(opt, 100)
  schedule = make_schedule(opt, 100)
  grads = {"v": jnp.array([0.5, -2.0, 3.0])}
  state = TrainState.create({"v": jnp.zeros((3,))}, optimizer)
  for _ in range(3):
    lr = float(schedule(state.step))
    new = state.apply_gradients(grads, optimizer)
    np.testing.assert_allclose(new.params["v"] - state.params["v"], -lr * np.sign(grads["v"]),
                               rtol=1e-5, atol=1e-7)
    state = new
  assert [float(schedule(s)) for s in range(3)] == [0.0, 0.25, 0.5]
