"""Ahead-of-time compilation of an experiment's train step for a device that need not be here.

XLA compiles for a described GPU ("deviceless" compilation through jax's CUDA plugin) or TPU
slice (through libtpu), so whether a model, batch, rematerialisation policy and attention
implementation fit an H100 or a v5e slice is known on a laptop before any accelerator time
is spent: `t5x-lite info EXPERIMENT --target h100` (or `--target v5e:2x2`) reports XLA's own
memory accounting of the step that `train` and `benchmark` would run. The compilers come
with `pip install "jax[cuda12]"` and `pip install "jax[tpu]"` (both run without the
hardware); `--target cpu` compiles for this machine's CPU devices instead.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from typing import Optional

import jax

from t5x_lite import flops
from t5x_lite.config import ConfigError, ExperimentConfig, UserError
from t5x_lite.training.step import make_setup, make_train_step


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
# A TPU slice as jax names its topologies, e.g. v5e:2x2, v5p:2x2x1, v6e:4x4: generations where
# jax has one device per chip (v4's topologies list each of a chip's two cores).
TPU_TARGET = re.compile(r"^(v5e|v5p|v6e):\d+(x\d+)*$")
TARGET_HELP = "cpu, h100, h200, a100, or a TPU slice such as v5e:2x2, v5p:2x2x1, v6e:2x4"


def is_tpu(target: str) -> bool:
  return bool(TPU_TARGET.match(target))


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


def compile_only_devices(target: str, count: Optional[int]) -> list:
  """The devices of `target` to compile for (`count` of them, default 1; a TPU slice has its
  own); GPU and TPU ones are descriptions, not hardware. Call before anything starts a jax
  backend."""
  if is_tpu(target):
    if count is not None:
      raise ConfigError(f"--devices {count}: a TPU target's topology ({target}) sets the device "
                        f"count; leave --devices out.")
    return _tpu_devices(target)
  count = 1 if count is None else count  # `info` has refused counts below 1.
  if target == "cpu":
    devices = jax.devices("cpu")
    if count > len(devices):
      raise ConfigError(
          f"--devices {count}: this machine has {len(devices)} CPU device(s); set XLA_FLAGS="
          f"--xla_force_host_platform_device_count={count} to compile for more.")
    return devices[:count]
  if target not in TARGETS:
    raise ConfigError(f"--target {target}: unknown; choose {TARGET_HELP}.")
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


def _tpu_devices(target: str) -> list:
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_platforms", "cpu")  # As for a GPU target: nothing of it is here.
  try:
    topology = topologies.get_topology_desc(topology_name=target, platform="tpu")
  except RuntimeError as e:  # libtpu missing (JaxRuntimeError, a subclass, is handled below)
    if "lockfile" in str(e):  # libtpu serves one process per machine at a time.
      raise UserError(f"--target {target}: another process on this machine is using libtpu "
                      f"(a TPU compile or job); wait for it to end and run this again.") from e
    if isinstance(e, jax.errors.JaxRuntimeError):
      raise ConfigError(f"--target {target}: not a TPU topology libtpu knows ({e}).") from e
    raise UserError(
        f"--target {target} needs libtpu to compile for a TPU (no TPU needed): pip install "
        f"\"jax[tpu]=={jax.__version__}\", or use --target cpu. ({e})") from e
  return list(topology.devices)


def resolve_auto_dtype(config: ExperimentConfig, target: str) -> None:
  """model.dtype='auto' as it resolves on the target (bfloat16 on a GPU), not on the CPU
  this compiles on."""
  if config.model.dtype == "auto" and target != "cpu":
    config.model.dtype = "bfloat16"


def abstract_batch(config: ExperimentConfig, sharding) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch's shapes and dtypes: those of the packer's rows (one row's worth is
  built to read them), config.train.batch_size of them."""
  from t5x_lite.data.packing import empty_batch  # pylint: disable=import-outside-toplevel
  row = empty_batch(1, config.data.inputs_length, config.data.targets_length)
  return {key: jax.ShapeDtypeStruct((config.train.batch_size,) + value.shape[1:], value.dtype,
                                    sharding=sharding)
          for key, value in row.items()}


class OutOfMemory(Exception):
  """The compiler itself refused the step for lack of device memory (TPU compilers do)."""


def compile_train_step(config: ExperimentConfig, devices: list) -> tuple[object, float]:
  """(compiled train step, seconds to lower and compile) on `devices`, with nothing
  allocated: state and batch are shapes. config.model.vocab_size must be resolved.
  Raises OutOfMemory when the compiler finds the step does not fit."""
  setup = make_setup(config, devices)
  return compile_timed(make_train_step(setup), setup.abstract_state,
                       abstract_batch(config, setup.batch_sharding))


def compile_timed(jitted, *abstract_args) -> tuple[object, float]:
  """(`jitted` compiled for the shapes `abstract_args`, seconds to lower and compile).
  Raises OutOfMemory when the compiler finds it does not fit the device."""
  start = time.perf_counter()
  try:
    compiled = jitted.lower(*abstract_args).compile()
  except jax.errors.JaxRuntimeError as e:
    if str(e).startswith("RESOURCE_EXHAUSTED"):
      raise OutOfMemory(str(e).splitlines()[0]) from e
    if "tile sizes" in str(e) and "triton_gemm=false" not in os.environ.get("XLA_FLAGS", ""):
      raise UserError(
          "XLA could not compile Triton GEMMs without a GPU to autotune them on; keep "
          "--xla_gpu_enable_triton_gemm=false in XLA_FLAGS (t5x-lite's default) or unset "
          "XLA_FLAGS.") from e
    raise
  return compiled, time.perf_counter() - start


def memory_fraction() -> float:
  return float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", DEFAULT_MEMORY_FRACTION))


def memory_bytes(compiled, platform: str) -> dict[str, Optional[int]]:
  """XLA's own accounting of a compiled step, per device: state and batch in (arguments),
  outputs that do not reuse a donated argument's memory, and scratch (activations kept
  for the backward pass, logits, ...: what rematerialisation and the chunked loss
  shrink). Known before running, on any backend. All None where XLA does not say.

  `platform` is the devices' (jax's Device.platform). On a TPU the scratch is what the
  compiler's peak leaves beside arguments and outputs. libtpu's temp_size_in_bytes counts
  more than is ever live at once (1.84 GiB for a two-layer scanned T5.1.1-base step at
  batch 64 whose peak holds 1.20), and its out-of-memory check measures the peak."""
  stats = compiled.memory_analysis()
  if stats is None:
    return dict.fromkeys(("arguments", "outputs_not_aliased", "temp", "total"))
  outputs = stats.output_size_in_bytes - stats.alias_size_in_bytes
  temp = stats.temp_size_in_bytes
  if platform == "tpu" and stats.peak_memory_in_bytes:
    temp = stats.peak_memory_in_bytes - stats.argument_size_in_bytes - outputs
  return {"arguments": stats.argument_size_in_bytes, "outputs_not_aliased": outputs,
          "temp": temp, "total": stats.argument_size_in_bytes + outputs + temp}


def xla_flops(compiled) -> Optional[float]:
  """FLOPs of the compiled step by XLA's cost analysis, recomputation included (None where
  the backend does not say): against the analytic count this shows what remat and the
  chunked loss redo, and work the count leaves out."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # One entry per program in older jax.
    analysis = analysis[0] if analysis else None
  flops_count = (analysis or {}).get("flops")
  return float(flops_count) if flops_count else None


def compile_report(config: ExperimentConfig, target: str, devices: list) -> dict:
  """The step compiled for `devices`: per-device memory by XLA's accounting and, on GPU and
  TPU targets, whether it fits (a TPU compiler refuses a step that does not: then the
  report carries its message instead of the memory)."""
  report = {"target": target, "device_kind": devices[0].device_kind, "devices": len(devices)}
  try:
    compiled, report["compile_s"] = compile_train_step(config, devices)
  except OutOfMemory as e:
    return {**report, "fits": False, "compiler_message": str(e)}
  memory = report["memory_per_device_bytes"] = memory_bytes(compiled, devices[0].platform)
  report["xla_flops_per_device"] = xla_flops(compiled)
  analytic = (flops.train_flops_per_sequence(config.model, config.data.inputs_length,
                                             config.data.targets_length)
              * config.train.batch_size / len(devices))
  report["xla_flops_ratio"] = (report["xla_flops_per_device"] / analytic
                               if report["xla_flops_per_device"] else None)
  # cuDNN's fused attention calls in the program: 0 means attention runs as XLA ops.
  report["fused_attention_calls"] = compiled.as_text().count('custom_call_target="__cudnn$fmha')
  return {**report, **fit(target, memory)}


def fit(target: str, memory: dict[str, Optional[int]]) -> dict:
  """Whether a compiled step with per-device `memory` (memory_bytes) fits `target`: on a TPU
  the compiler checked it against the chip's memory (it refuses a step that does not fit);
  on a GPU against the share of device memory jax's allocator takes. {} for the CPU."""
  if is_tpu(target):
    return {"fits": True}
  if target not in TARGETS or memory["total"] is None:
    return {}
  gpu, fraction = TARGETS[target], memory_fraction()
  return {"device_memory_bytes": gpu.memory_bytes, "memory_fraction": fraction,
          "needed_fraction": memory["total"] / gpu.memory_bytes,
          "fits": memory["total"] <= fraction * gpu.memory_bytes}
