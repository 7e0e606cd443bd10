"""Learning-rate schedules and optimizers (T5's Adafactor, AdamW) built from optax parts.

Step convention: every schedule here is called with the number of updates already
applied, i.e. ``TrainState.step`` before ``apply_gradients`` (0 for the first update).
That is the count optax passes to a schedule, so ``make_schedule(...)(state.step)`` is
exactly the learning rate the next update uses; the trainer logs it that way.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from t5x_lite.config import OptimizerConfig

# Logical name of the leading axis nn.scan adds to stacked layer parameters.
LAYERS_AXIS = "layers"


def make_schedule(opt: OptimizerConfig, total_steps: int) -> optax.Schedule:
  """Returns step -> learning rate (float32) for ``opt.schedule``.

  - rsqrt (T5): ``learning_rate / sqrt(max(step, warmup_steps))``. With T5's
    learning_rate=1.0, warmup_steps=10000 this is 0.01 for steps 0..10000 and
    1/sqrt(step) afterwards. There is no ramp from 0: T5's "warmup" is the flat part.
    warmup_steps=0 is treated as 1 so step 0 stays finite.
  - cosine: linear warmup from 0 (at step 0) to learning_rate (at warmup_steps), then
    a half cosine to ``learning_rate * final_learning_rate_fraction`` at total_steps,
    held there afterwards.
  - constant: learning_rate, after the same linear warmup from 0 when warmup_steps > 0.

  Linear warmups start at exactly 0, so the first update only fills optimizer
  statistics (as with optax.warmup_cosine_decay_schedule).
  """
  peak = float(opt.learning_rate)
  warmup = int(opt.warmup_steps)
  if warmup < 0:
    raise ValueError(f"optimizer.warmup_steps={warmup} must be >= 0.")

  def ramp(step: jax.Array) -> jax.Array:
    # 1 when there is no warmup; step / warmup during it.
    return jnp.minimum(1.0, step / warmup) if warmup > 0 else jnp.ones_like(step)

  if opt.schedule == "rsqrt":
    floor = float(max(warmup, 1))

    def rsqrt(step):
      step = jnp.asarray(step, jnp.float32)
      return peak * jax.lax.rsqrt(jnp.maximum(step, floor))

    return rsqrt

  if opt.schedule == "cosine":
    if total_steps <= warmup:
      raise ValueError(
          f"A cosine schedule needs train.steps ({total_steps}) > "
          f"optimizer.warmup_steps ({warmup}).")
    final = peak * float(opt.final_learning_rate_fraction)
    decay_steps = float(total_steps - warmup)

    def cosine(step):
      step = jnp.asarray(step, jnp.float32)
      progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
      decayed = final + (peak - final) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
      return jnp.where(step < warmup, peak * ramp(step), decayed)

    return cosine

  if opt.schedule == "constant":

    def constant(step):
      return peak * ramp(jnp.asarray(step, jnp.float32))

    return constant

  raise ValueError(
      f"Unknown optimizer.schedule {opt.schedule!r}; choose rsqrt, cosine or constant.")


def _decays(param: Any, spec: Optional[PartitionSpec]) -> bool:
  """Whether weight decay applies: only to matrices, never to vectors (norm scales).

  With logical axes the stacked ``layers`` axis of scanned parameters is not counted,
  so a scanned norm scale (layers, embed) is still treated as a vector.
  """
  if spec is None or len(spec) != param.ndim:
    return param.ndim >= 2
  return sum(name != LAYERS_AXIS for name in spec) >= 2


def weight_decay_mask(params: Any, params_logical_axes: Optional[Any] = None) -> Any:
  """Pytree of bools matching ``params``: True where weight decay applies."""
  return _map_with_specs(_decays, params_logical_axes, params)


def _block_rms(x: jax.Array, spec: Optional[PartitionSpec]) -> jax.Array:
  """RMS of ``x`` per layer when ``spec`` names a stacked ``layers`` axis, else of all of it.

  Kept dims broadcast against ``x``. T5X's Adafactor treats ``layers`` as a batch dim, so
  a scanned stack is clipped and scaled exactly as its unscanned layers would be.
  """
  layer_axis = list(spec).index(LAYERS_AXIS) if spec is not None and LAYERS_AXIS in spec else None
  axes = tuple(i for i in range(x.ndim) if i != layer_axis)
  return jnp.sqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True))


def _map_with_specs(fn, params_logical_axes: Optional[Any], *trees: Any) -> Any:
  """``fn(*leaves, spec)`` over ``trees`` (params' structure); spec None without axes."""
  if params_logical_axes is None:
    return jax.tree.map(lambda *leaves: fn(*leaves, None), *trees)
  return jax.tree.map(fn, *trees, params_logical_axes)


def _clip_by_block_rms(threshold: float,
                       params_logical_axes: Optional[Any]) -> optax.GradientTransformation:
  """optax.clip_by_block_rms, with blocks taken per layer for stacked parameters."""

  def clip(updates, params):
    del params
    return _map_with_specs(
        lambda u, spec: u / jnp.maximum(1.0, _block_rms(u, spec) / threshold),
        params_logical_axes, updates)

  return optax.stateless(clip)


def _scale_by_param_block_rms(min_scale: float,
                              params_logical_axes: Optional[Any]) -> optax.GradientTransformation:
  """optax.scale_by_param_block_rms, with blocks taken per layer for stacked parameters."""

  def scale(updates, params):
    if params is None:
      raise ValueError("Scaling by parameter RMS needs update(..., params).")
    return _map_with_specs(
        lambda u, p, spec: u * jnp.maximum(min_scale, _block_rms(p, spec)),
        params_logical_axes, updates, params)

  return optax.stateless(scale)


def make_optimizer(
    opt: OptimizerConfig,
    total_steps: int,
    params_logical_axes: Optional[Any] = None,
) -> optax.GradientTransformation:
  """The optimizer named by ``opt.name``, driven by ``make_schedule(opt, total_steps)``.

  Global-norm clipping of the raw gradients comes first when grad_clip_norm > 0.

  adafactor (T5 defaults): factored second moments for parameters whose two largest
  dims are both >= min_dim_size_to_factor (epsilon1 added to squared gradients,
  decay 1 - (step+1)^-decay_rate), update clipping to block RMS <= clipping_threshold
  (0 disables it), the learning rate, scaling by max(epsilon2, RMS(param)), no
  momentum. This is the chain optax.adafactor builds, assembled here so epsilon2 is
  honoured (optax.adafactor fixes it at 1e-3). weight_decay > 0 decays matrices by
  ``weight_decay * param`` per step, NOT multiplied by the learning rate (T5X/optax
  Adafactor semantics).

  adamw: optax.adamw; its decoupled weight decay IS multiplied by the learning rate.

  In both, weight decay skips vectors (norm scales); pass ``params_logical_axes``
  (PartitionSpecs of logical names, same structure as params) so scanned parameters'
  ``layers`` axis is not counted as a dimension.

  Scanned (stacked) parameters under Adafactor update exactly as unscanned ones, as in
  T5X where ``layers`` is a batch dim: optax factors over the two largest dims, which
  for T5 shapes never include ``layers``, so a (layers, embed, mlp) kernel gets
  per-layer statistics (v_row (layers, embed), v_col (layers, mlp)); and, given
  ``params_logical_axes``, the clipping and parameter-scale RMS are taken per layer.
  Attention kernels are stored 2-D (embed, joined_kv), so they are factored as in T5X.
  """
  schedule = make_schedule(opt, total_steps)

  def mask(params):
    return weight_decay_mask(params, params_logical_axes)

  if opt.name == "adafactor":
    parts = [
        optax.scale_by_factored_rms(
            factored=opt.factored, decay_rate=opt.decay_rate,
            min_dim_size_to_factor=opt.min_dim_size_to_factor, epsilon=opt.epsilon1),
    ]
    if opt.clipping_threshold > 0:
      parts.append(_clip_by_block_rms(opt.clipping_threshold, params_logical_axes))
    parts.append(optax.scale_by_learning_rate(schedule, flip_sign=False))
    if opt.multiply_by_parameter_scale:
      parts.append(_scale_by_param_block_rms(opt.epsilon2, params_logical_axes))
    if opt.weight_decay > 0:
      parts.append(optax.add_decayed_weights(opt.weight_decay, mask=mask))
    parts.append(optax.scale(-1.0))
    tx = optax.chain(*parts)
  elif opt.name == "adamw":
    tx = optax.adamw(
        schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=mask)
  else:
    raise ValueError(f"Unknown optimizer.name {opt.name!r}; choose adafactor or adamw.")

  if opt.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
  return tx
