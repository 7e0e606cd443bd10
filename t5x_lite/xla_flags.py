"""XLA flags for GPU runs, set by every `t5x-lite` command before jax starts a backend.

One list for train, eval, infer and the benchmark, so a benchmark's figure is what training
gets. Applied only when a GPU backend is coming and the user left XLA_FLAGS unset (setting
it, even to "", keeps the user's choice). Each flag is to be kept only if it moves the
measured number (docs/performance.md):
- latency hiding scheduler: overlaps asynchronous work (collectives, copies) with compute;
  no effect on the math.
- cuBLAS instead of Triton GEMMs: bf16 matmuls of these shapes are cuBLAS's home ground, and
  skipping Triton autotuning shortens compilation.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Mapping, MutableMapping, Optional

GPU_FLAGS = (
    "--xla_gpu_enable_latency_hiding_scheduler=true",
    "--xla_gpu_enable_triton_gemm=false",
)


def gpu_backend_expected(environ: Mapping[str, str]) -> bool:
  """Whether jax will pick a GPU, decided without initialising a backend
  (XLA reads XLA_FLAGS once, when the first backend starts)."""
  platforms = environ.get("JAX_PLATFORMS", "")
  if platforms:
    return any(p.strip() in ("cuda", "gpu", "rocm") for p in platforms.split(","))
  names = (dist.metadata["Name"] or "" for dist in importlib.metadata.distributions())
  return any(name.lower().replace("_", "-").startswith(("jax-cuda", "jax-rocm")) for name in names)


def set_gpu_flags(environ: MutableMapping[str, str] = os.environ) -> Optional[str]:
  """Sets XLA_FLAGS to GPU_FLAGS when a GPU backend is coming and the user set none;
  returns the flags set, or None. Call before jax touches a device."""
  if "XLA_FLAGS" in environ or not gpu_backend_expected(environ):
    return None
  environ["XLA_FLAGS"] = " ".join(GPU_FLAGS)
  return environ["XLA_FLAGS"]
