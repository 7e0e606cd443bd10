"""Ahead-of-time compilation of an experiment's train step for a device that need not be here.

XLA compiles for a described GPU ("deviceless" compilation through jax's CUDA plugin), so
whether a model, batch, rematerialisation policy and attention implementation fit an H100
is known on a laptop before any GPU time is spent: `t5x-lite info EXPERIMENT --target h100`
reports XLA's own memory accounting of the step that `train` and `benchmark` would run.
The plugin comes with `pip install "jax[cuda12]"` (it runs without a GPU); `--target cpu`
compiles for this machine's CPU devices instead.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp

from t5x_lite.config import ConfigError, ExperimentConfig, UserError


@dataclasses.dataclass(frozen=True)
class GpuDescription:
  """What XLA needs to know of a GPU to compile for it (public specifications)."""

  name: str  # As the driver reports it: jax's device_kind.
  compute_capability: tuple[int, int]
  core_count: int  # Streaming multiprocessors.
  memory_bytes: int
  memory_bandwidth: int  # Bytes/s.
  l2_cache_bytes: int
  clock_rate_ghz: float
  shared_memory_per_core: int
  shared_memory_per_block_optin: int


_MIB = 2**20
TARGETS: dict[str, GpuDescription] = {
    "h100": GpuDescription("NVIDIA H100 80GB HBM3", (9, 0), 132, 81559 * _MIB, 3_352_320_000_000,
                           50 * _MIB, 1.98, 228 * 1024, 227 * 1024),
    "h200": GpuDescription("NVIDIA H200", (9, 0), 132, 143771 * _MIB, 4_800_000_000_000,
                           50 * _MIB, 1.98, 228 * 1024, 227 * 1024),
    "a100": GpuDescription("NVIDIA A100-SXM4-80GB", (8, 0), 108, 81920 * _MIB, 2_039_000_000_000,
                           40 * _MIB, 1.41, 164 * 1024, 163 * 1024),
}
# The share of device memory jax's allocator takes when XLA_PYTHON_CLIENT_MEM_FRACTION is unset.
DEFAULT_MEMORY_FRACTION = 0.75


def target_config(gpu: GpuDescription) -> str:
  """The GpuTargetConfig text proto XLA compiles against."""
  major, minor = gpu.compute_capability
  return f"""
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {gpu.shared_memory_per_core}
  threads_per_core_limit: 2048
  core_count: {gpu.core_count}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {gpu.memory_bandwidth}
  l2_cache_size: {gpu.l2_cache_bytes}
  clock_rate_ghz: {gpu.clock_rate_ghz}
  device_memory_size: {gpu.memory_bytes}
  shared_memory_per_block_optin: {gpu.shared_memory_per_block_optin}
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 }}
runtime_version {{ major: 12 minor: 8 }}
device_description_str: "{gpu.name}"
"""


def compile_only_devices(target: str, count: int) -> list:
  """`count` devices of `target` ("cpu" or a TARGETS key) to compile for; GPU ones are
  descriptions, not hardware. Call before anything starts a jax backend."""
  if count < 1:
    raise ConfigError(f"--devices {count}: compile for a positive number of devices.")
  if target == "cpu":
    devices = jax.devices("cpu")
    if count > len(devices):
      raise ConfigError(
          f"--devices {count}: this machine has {len(devices)} CPU device(s); set XLA_FLAGS="
          f"--xla_force_host_platform_device_count={count} to compile for more.")
    return devices[:count]
  if target not in TARGETS:
    raise ConfigError(f"--target {target}: unknown; choose cpu or one of {', '.join(TARGETS)}.")
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  # The host's own backend stays the CPU: the GPU exists only as a description (and
  # initialising the CUDA backend on a machine without one would fail).
  jax.config.update("jax_platforms", "cpu")
  try:
    topology = topologies.get_topology_desc(
        platform="cuda", target_config=target_config(TARGETS[target]), topology=f"1x1x{count}")
  except (NotImplementedError, RuntimeError) as e:
    raise UserError(
        f"--target {target} needs jax's CUDA plugin to compile for a GPU (no GPU needed): "
        f"pip install \"jax[cuda12]=={jax.__version__}\" (about 3 GB), or use --target cpu. "
        f"({type(e).__name__}: {e})") from e
  return list(topology.devices)


def resolve_auto_dtype(config: ExperimentConfig, target: str) -> None:
  """model.dtype='auto' as it resolves on the target (bfloat16 on a GPU), not on the CPU
  this compiles on."""
  if config.model.dtype == "auto" and target != "cpu":
    config.model.dtype = "bfloat16"


def abstract_batch(config: ExperimentConfig, sharding) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch's shapes and dtypes, as the loader makes it."""
  from t5x_lite.data.packing import KEYS  # pylint: disable=import-outside-toplevel

  def one(key: str) -> jax.ShapeDtypeStruct:
    length = config.data.inputs_length if key.startswith("encoder") else config.data.targets_length
    dtype = jnp.float32 if key == "decoder_loss_weights" else jnp.int32
    return jax.ShapeDtypeStruct((config.train.batch_size, length), dtype, sharding=sharding)
  return {key: one(key) for key in KEYS}


def compile_train_step(config: ExperimentConfig, devices: list) -> tuple[object, float]:
  """(compiled train step, seconds to lower and compile) on `devices`, with nothing
  allocated: state and batch are shapes. config.model.vocab_size must be resolved."""
  from t5x_lite import trainer  # pylint: disable=import-outside-toplevel  (the data pipeline)
  setup = trainer.make_setup(config, devices)
  start = time.perf_counter()
  try:
    lowered = trainer.make_train_step(setup).lower(
        setup.abstract_state, abstract_batch(config, setup.batch_sharding))
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if "tile sizes" in str(e) and "triton_gemm=false" not in os.environ.get("XLA_FLAGS", ""):
      raise UserError(
          "XLA could not compile Triton GEMMs without a GPU to autotune them on; keep "
          "--xla_gpu_enable_triton_gemm=false in XLA_FLAGS (t5x-lite's default) or unset "
          "XLA_FLAGS.") from e
    raise
  return compiled, time.perf_counter() - start


def memory_fraction() -> float:
  return float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", DEFAULT_MEMORY_FRACTION))


def memory_bytes(compiled) -> dict[str, Optional[int]]:
  """XLA's own accounting of a compiled step, per device: state and batch in (arguments),
  outputs that do not reuse a donated argument's memory, and scratch (activations kept
  for the backward pass, logits, ...: what rematerialisation and the chunked loss
  shrink). Known before running, on any backend. All None where XLA does not say."""
  stats = compiled.memory_analysis()
  if stats is None:
    return dict.fromkeys(("arguments", "outputs_not_aliased", "temp", "total"))
  outputs = stats.output_size_in_bytes - stats.alias_size_in_bytes
  return {"arguments": stats.argument_size_in_bytes, "outputs_not_aliased": outputs,
          "temp": stats.temp_size_in_bytes,
          "total": stats.argument_size_in_bytes + outputs + stats.temp_size_in_bytes}


def compiled_report(compiled, compile_seconds: float, target: str, devices: list) -> dict:
  """Per-device memory of the compiled step, and on a GPU target whether it fits."""
  memory = memory_bytes(compiled)
  total = memory["total"]
  gpu = TARGETS.get(target)
  report = {
      "target": target,
      "device_kind": devices[0].device_kind,
      "devices": len(devices),
      "compile_s": compile_seconds,
      "memory_per_device_bytes": memory,
      # cuDNN's fused attention calls in the program: 0 means attention runs as XLA ops.
      "fused_attention_calls": compiled.as_text().count('custom_call_target="__cudnn$fmha'),
  }
  if gpu is not None:
    fraction = memory_fraction()
    report.update({
        "device_memory_bytes": gpu.memory_bytes,
        "memory_fraction": fraction,
        "needed_fraction": total / gpu.memory_bytes,
        "fits": total <= fraction * gpu.memory_bytes,
    })
  return report
