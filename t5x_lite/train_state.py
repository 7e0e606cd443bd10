"""Training state as a plain pytree, and the logical sharding of the optimizer state.

The optimizer (an optax.GradientTransformation, i.e. functions) is deliberately not a
field: the state then holds only arrays, so Orbax can save it and jax.jit can donate it.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec


@flax.struct.dataclass
class TrainState:
  """step: int32 scalar, updates applied so far; params: plain (unboxed) arrays."""

  step: jax.Array
  params: Any
  opt_state: optax.OptState

  @classmethod
  def create(cls, params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

  def apply_gradients(self, grads: Any, optimizer: optax.GradientTransformation) -> TrainState:
    """One optimizer update; ``grads`` has the structure of ``params``."""
    updates, opt_state = optimizer.update(grads, self.opt_state, self.params)
    return self.replace(
        step=self.step + 1, params=optax.apply_updates(self.params, updates), opt_state=opt_state)


def _is_spec(x: Any) -> bool:
  return x is None or isinstance(x, PartitionSpec)


def _normalize(params_logical_axes: Any) -> Any:
  """None leaves (no sharding intent) -> PartitionSpec(), so no leaf vanishes from the tree."""
  return jax.tree.map(lambda s: PartitionSpec() if s is None else s, params_logical_axes,
                      is_leaf=_is_spec)


def _derive_spec(state_shape: tuple[int, ...], param_shape: tuple[int, ...],
                 names: PartitionSpec) -> PartitionSpec:
  """Logical spec of one optimizer-state leaf from its parameter's shape and names.

  Same shape -> same names (Adam's mu/nu, Adafactor's unfactored v). Shape with one
  dim removed -> names with that dim removed (Adafactor's v_row / v_col). When several
  dims could have been removed (equal adjacent sizes) with different names, the shape
  alone cannot say which, so the leaf is replicated; such statistics are vectors, cheap
  to replicate. Anything else (counts, (1,) placeholders) -> replicated, always
  spelled PartitionSpec().
  """
  names = tuple(names) + (None,) * (len(param_shape) - len(names))
  candidates = set()
  if state_shape == param_shape:
    candidates.add(names)
  elif len(state_shape) == len(param_shape) - 1:
    candidates = {
        names[:i] + names[i + 1:]
        for i in range(len(param_shape))
        if param_shape[:i] + param_shape[i + 1:] == state_shape
    }
  if len(candidates) != 1:
    return PartitionSpec()
  kept = candidates.pop()
  # All-None names mean replicated: spell them PartitionSpec() like every other replica.
  return PartitionSpec(*kept) if any(n is not None for n in kept) else PartitionSpec()


def opt_state_logical_axes(
    optimizer: optax.GradientTransformation, params_logical_axes: Any, params_shapes: Any
) -> Any:
  """Logical PartitionSpecs for every leaf of ``optimizer.init(params)``.

  params_logical_axes: same structure as params, PartitionSpec of logical names (or
  None) per parameter. params_shapes: arrays or jax.ShapeDtypeStruct. Nothing is
  allocated: the state's shapes come from jax.eval_shape. Every subtree of the state
  that mirrors the params' tree structure is mapped leaf by leaf with the rule in
  ``_derive_spec``; all other leaves are replicated (PartitionSpec()).
  """
  state_shapes = jax.eval_shape(optimizer.init, params_shapes)
  params_def = jax.tree.structure(params_shapes)
  names = _normalize(params_logical_axes)

  def mirrors_params(node: Any) -> bool:
    return jax.tree.structure(node) == params_def

  def spec_of(node: Any) -> Any:
    if mirrors_params(node):
      return jax.tree.map(
          lambda s, p, n: _derive_spec(tuple(s.shape), tuple(p.shape), n),
          node, params_shapes, names)
    return PartitionSpec()

  return jax.tree.map(spec_of, state_shapes, is_leaf=mirrors_params)


def train_state_logical_axes(
    optimizer: optax.GradientTransformation, params_logical_axes: Any, params_shapes: Any
) -> TrainState:
  """A TrainState of logical PartitionSpecs (step replicated), ready for one
  flax.linen.logical_to_mesh_sharding call. None parameter specs become PartitionSpec()."""
  return TrainState(
      step=PartitionSpec(),
      params=_normalize(params_logical_axes),
      opt_state=opt_state_logical_axes(optimizer, params_logical_axes, params_shapes))
