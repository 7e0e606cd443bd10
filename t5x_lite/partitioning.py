"""All sharding decisions: the device mesh and logical-axis rules.

The model names every parameter and activation dimension with a logical axis
('batch', 'embed', 'mlp', 'heads', ...). Rules map logical names to mesh axes;
the same model then runs data-parallel, FSDP, model-parallel or 2-D just by
changing the rules.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from t5x_lite.config import ConfigError, MeshConfig

LogicalRules = tuple[tuple[str, Any], ...]

# Logical names that are never sharded; listed so every name has a rule.
_REPLICATED = (
    ("length", None), ("kv", None), ("relpos_buckets", None), ("layers", None),
)

RULE_PRESETS: dict[str, LogicalRules] = {
    # Parameters replicated, batch split over the data axis.
    "data_parallel": (
        ("batch", "data"), ("embed", None), ("mlp", None), ("heads", None),
        ("joined_kv", None), ("vocab", None), *_REPLICATED),
    # ZeRO-3 style: parameters and optimizer state split over the data axis
    # along 'embed'; activations keep their batch split (data is taken there).
    "fsdp": (
        ("batch", "data"), ("embed", "data"), ("mlp", None), ("heads", None),
        ("joined_kv", None), ("vocab", None), *_REPLICATED),
    # T5X's standard 1-D model parallelism: heads, mlp and vocab over 'model'.
    "model_parallel": (
        ("batch", "data"), ("embed", None), ("mlp", "model"), ("heads", "model"),
        ("joined_kv", "model"), ("vocab", "model"), *_REPLICATED),
    # 2-D: model parallel plus parameters' embed dimension over 'data'.
    "2d": (
        ("batch", "data"), ("mlp", "model"), ("heads", "model"), ("joined_kv", "model"),
        ("vocab", "model"), ("embed", "data"), *_REPLICATED),
}


# Every logical axis name the model uses.
LOGICAL_NAMES = tuple(name for name, _ in RULE_PRESETS["data_parallel"])


def logical_rules(mesh_config: MeshConfig) -> LogicalRules:
  if mesh_config.rules_preset == "custom":
    unknown = sorted({name for name, _ in mesh_config.rules} - set(LOGICAL_NAMES))
    if unknown:  # A misspelt name would leave what it meant to shard replicated.
      raise ConfigError(f"mesh.rules name logical axes {unknown} that the model does not have; "
                        f"its logical axes are {list(LOGICAL_NAMES)}.")
    return tuple((name, _as_mesh_axes(axes)) for name, axes in mesh_config.rules)
  return RULE_PRESETS[mesh_config.rules_preset]


def _as_mesh_axes(axes: Any) -> Any:
  return tuple(axes) if isinstance(axes, list) else axes


def resolve_mesh_shape(mesh_config: MeshConfig, num_devices: int) -> tuple[int, ...]:
  """Fills in a single -1 and checks that the shape uses every device."""
  shape = list(mesh_config.shape)
  if shape.count(-1) > 1:
    raise ConfigError(f"mesh.shape {tuple(shape)} has more than one -1; at most one axis can be 'the rest'.")
  known = math.prod(s for s in shape if s != -1)
  if known <= 0 or any(s == 0 or s < -1 for s in shape):
    raise ConfigError(f"mesh.shape {tuple(shape)} must hold positive sizes (or one -1).")
  if -1 in shape:
    if num_devices % known:
      raise ConfigError(
          f"mesh.shape {tuple(mesh_config.shape)} cannot fill {num_devices} devices: "
          f"{num_devices} is not divisible by {known}. Choose sizes whose product divides {num_devices}.")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ConfigError(
        f"mesh.shape {tuple(mesh_config.shape)} needs {math.prod(shape)} devices but "
        f"{num_devices} are available. Set e.g. --set mesh.shape=[-1,1] to use them all.")
  check_rules_use_mesh(mesh_config, dict(zip(mesh_config.axes, shape)))
  return tuple(shape)


def check_rules_use_mesh(mesh_config: MeshConfig, axis_sizes: dict[str, int]) -> None:
  """Custom rules name only axes of the mesh, and a mesh of several devices has some axis
  the rules name: otherwise (mesh axes misnamed) every device would do the same work."""
  rules = logical_rules(mesh_config)
  named = {axis for _, axes in rules for axis in (axes if isinstance(axes, tuple) else (axes,))
           if axis is not None}
  absent = sorted(named - set(axis_sizes))
  if mesh_config.rules_preset == "custom" and absent:
    raise ConfigError(
        f"mesh.rules name mesh axes {absent} that mesh.axes {tuple(mesh_config.axes)} does not "
        "have; use the mesh's axis names in the rules (or add the axes to mesh.axes and mesh.shape).")
  if math.prod(axis_sizes.values()) > 1 and not named & set(axis_sizes):
    raise ConfigError(
        f"mesh.axes {tuple(mesh_config.axes)}: the rules of mesh.rules_preset="
        f"{mesh_config.rules_preset!r} shard over {sorted(named)}, none of which is an axis of "
        "this mesh, so every device would repeat the same work. Name the mesh axes as the "
        "rules do (e.g. mesh.axes=data,model).")


def make_mesh(mesh_config: MeshConfig, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A mesh over all devices of all processes, with Auto axis types.

  jax.make_mesh defaults to Explicit axes, under which GSPMD-style logical
  sharding fails; Auto keeps the compiler in charge of propagation.
  """
  devices = list(devices) if devices is not None else jax.devices()
  shape = resolve_mesh_shape(mesh_config, len(devices))
  axis_types = (jax.sharding.AxisType.Auto,) * len(shape)
  return jax.make_mesh(shape, tuple(mesh_config.axes), axis_types=axis_types, devices=devices)


def logical_to_mesh_spec(logical_spec: PartitionSpec, rules: LogicalRules) -> PartitionSpec:
  return nn.logical_to_mesh_axes(tuple(logical_spec), rules)


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules: LogicalRules) -> Any:
  """Maps a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
  def one(spec):
    if spec is None:
      spec = PartitionSpec()
    return NamedSharding(mesh, _drop_absent_axes(logical_to_mesh_spec(spec, rules), mesh))
  return jax.tree.map(one, logical_specs, is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)


def _drop_absent_axes(spec: PartitionSpec, mesh: Mesh) -> PartitionSpec:
  """Rules may name mesh axes this mesh lacks (e.g. 'model' on a 1-D mesh)."""
  def keep(entry):
    if entry is None:
      return None
    if isinstance(entry, tuple):
      kept = tuple(a for a in entry if a in mesh.axis_names)
      return kept or None
    return entry if entry in mesh.axis_names else None
  return PartitionSpec(*(keep(e) for e in spec))


@dataclasses.dataclass(frozen=True)
class ActivationSharding:
  """What the model needs to constrain activations: a mesh and the rules.

  Passed explicitly to the model (no global context); None means no
  constraints (single device, tests).
  """

  mesh: Mesh
  rules: LogicalRules

  def constrain(self, x: jax.Array, logical_axes: tuple[Optional[str], ...]) -> jax.Array:
    spec = _drop_absent_axes(logical_to_mesh_spec(PartitionSpec(*logical_axes), self.rules), self.mesh)
    return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))


def constrain(x: jax.Array, sharding: Optional[ActivationSharding], logical_axes: tuple) -> jax.Array:
  return x if sharding is None else sharding.constrain(x, logical_axes)


def batch_sharding(mesh: Mesh, rules: LogicalRules) -> NamedSharding:
  """Sharding of a (batch, length) input array."""
  return logical_to_sharding(PartitionSpec("batch", "length"), mesh, rules)


def batch_ways(rules: LogicalRules, axis_sizes: dict[str, int]) -> int:
  """How many ways the rules split the batch dimension, given mesh axis sizes."""
  spec = logical_to_mesh_spec(PartitionSpec("batch"), rules)[0]
  axes = (spec,) if isinstance(spec, str) else (spec or ())
  return math.prod(axis_sizes.get(a, 1) for a in axes)


def data_axis_size(mesh: Mesh, rules: LogicalRules) -> int:
  """How many ways the batch dimension is split on `mesh`."""
  return batch_ways(rules, dict(mesh.shape))


def processes_share_rows(sharding: jax.sharding.Sharding, batch_size: int) -> bool:
  """Whether two processes hold the same rows of a (batch, length) array under `sharding`:
  each process feeds only its own rows, so on such a mesh the processes' different rows
  would be taken as copies of one smaller batch."""
  rows: dict[int, set[int]] = {}
  for device, index in sharding.devices_indices_map((batch_size, 1)).items():
    rows.setdefault(device.process_index, set()).update(range(*index[0].indices(batch_size)))
  return sum(map(len, rows.values())) > batch_size


def per_device_bytes(abstract_tree: Any, logical_specs: Any, axis_sizes: dict[str, int],
                     rules: LogicalRules) -> int:
  """Bytes one device holds of `abstract_tree` when sharded by `logical_specs`.

  Works from axis sizes alone, so memory can be planned for devices this
  machine does not have.
  """
  leaves = jax.tree.leaves(abstract_tree)
  specs = jax.tree.leaves(logical_specs, is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)
  total = 0
  for leaf, spec in zip(leaves, specs, strict=True):
    mesh_spec = logical_to_mesh_spec(spec if spec is not None else PartitionSpec(), rules)
    shape = list(leaf.shape)
    for dim, entry in enumerate(mesh_spec):
      axes = (entry,) if isinstance(entry, str) else (entry or ())
      ways = math.prod(axis_sizes.get(a, 1) for a in axes)
      shape[dim] = -(-shape[dim] // ways)
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def check_divisible(abstract_tree: Any, logical_specs: Any, shardings: Any) -> None:
  """Names the first array dimension a mesh axis cannot split evenly."""
  flat, _ = jax.tree_util.tree_flatten_with_path(abstract_tree)
  specs = jax.tree.leaves(logical_specs, is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)
  for (path, leaf), spec, sharding in zip(flat, specs, jax.tree.leaves(shardings), strict=True):
    for dim, entry in enumerate(sharding.spec):
      axes = (entry,) if isinstance(entry, str) else (entry or ())
      ways = math.prod(sharding.mesh.shape[a] for a in axes)
      if leaf.shape[dim] % ways:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        logical = spec[dim] if spec is not None and dim < len(spec) else None
        raise ConfigError(
            f"Parameter {name} has dimension {dim} ({logical}) of size {leaf.shape[dim]}, which "
            f"mesh axes {axes} cannot split {ways} ways. Change the model size, mesh.shape or "
            f"the rule for {logical!r} in mesh.rules.")
