"""`t5x-lite benchmark`: steady-state speed and MFU of an experiment's real train step.

The step is training.step.make_train_step on the experiment's model, optimizer and
shardings; the batch is synthetic (random tokens, no padding), so the timed
figures measure the model, optimizer and compiler, not the input pipeline. The step
is the one `train` would run, packed rows' masks included when data.pack is set
(`--set data.pack=false` times the unpacked step, whose fused attention masks by
lengths: the synthetic rows hold one example each, so both are exact). FLOPs
are counted as docs/reference.md says (flops.train_flops_per_sequence), the same
formula tools/bench_hf_t5.py uses for the PyTorch peer, so the two compare.
With --data real, the record also has an "input" section: the same compiled
step fed by the experiment's training loader as `t5x-lite train` feeds it,
against the same loop on the synthetic batch, so any wait for input shows.
Prints one JSON line on stdout.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import itertools
import os
import statistics
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional

import flax
import jax
import numpy as np

from t5x_lite import aot, distributed, flops, info
from t5x_lite import model as model_lib
from t5x_lite.config import ConfigError, ExperimentConfig

if TYPE_CHECKING:  # The data pipeline is imported only where it is used (see benchmark).
  from t5x_lite.data.vocabulary import Vocabulary

# The model's shape in each record; both tools report these.
MODEL_FIELDS = ("architecture", "vocab_size", "d_model", "d_ff", "num_heads", "d_kv", "num_encoder_layers",
                "num_decoder_layers", "ffn_activation")

def synthetic_batch(rows: int, inputs_length: int, targets_length: int, vocab_size: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """Full rows of random tokens, one segment each: the batch the step sees at
  100% packing efficiency, so every token costs the FLOPs the formula counts."""
  rng = np.random.default_rng(seed)
  # Ids from 2 up: no padding (0) and no EOS (1) in the middle of a sequence.
  targets = rng.integers(2, vocab_size, (rows, targets_length), dtype=np.int32)
  decoder_inputs = np.zeros_like(targets)  # column 0 stays 0: T5's decoder start id
  decoder_inputs[:, 1:] = targets[:, :-1]
  return {
      "encoder_input_tokens": rng.integers(2, vocab_size, (rows, inputs_length), dtype=np.int32),
      "encoder_segment_ids": np.ones((rows, inputs_length), np.int32),
      "decoder_target_tokens": targets,
      "decoder_input_tokens": decoder_inputs,
      "decoder_segment_ids": np.ones((rows, targets_length), np.int32),
      "decoder_loss_weights": np.ones((rows, targets_length), np.float32),
  }


def peak_memory_bytes() -> Optional[int]:
  """Largest peak_bytes_in_use over the local devices; None where the backend
  does not report it (CPU)."""
  peaks = []
  for device in jax.local_devices():
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None


def _version(package: str) -> Optional[str]:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def throughput_fields(step_times: list[float], batch: int, inputs_length: int, targets_length: int,
                      flops_per_sequence: int, peak_flops: float,
                      measured_matmul_flops: float = 0.0) -> dict[str, Any]:
  """Rates from per-step times; shared with tools/bench_hf_t5.py so both
  tools derive seq/s, TFLOP/s and MFU identically (from the median step). MFU is against
  the datasheet peak; mfu_of_measured_matmul against the matmul rate measured on the device
  kind, where there is one."""
  median = statistics.median(step_times)
  seq_per_s = batch / median
  achieved = seq_per_s * flops_per_sequence
  return {
      "step_time_median_s": median,
      "step_time_mean_s": statistics.fmean(step_times),
      "step_time_min_s": min(step_times),
      "seq_per_s": seq_per_s,
      "tokens_per_s": seq_per_s * (inputs_length + targets_length),
      "flops_per_sequence": flops_per_sequence,
      "tflops_per_s": achieved / 1e12,
      "peak_tflops": peak_flops / 1e12 if peak_flops else None,
      "mfu": achieved / peak_flops if peak_flops else None,
      "mfu_of_measured_matmul": achieved / measured_matmul_flops if measured_matmul_flops else None,
  }


def resolve_vocabulary(config: ExperimentConfig, workdir: Optional[str]) -> Vocabulary:
  """The experiment's vocabulary as `t5x-lite train` resolves it (building a missing
  built-in dataset, training or reusing the cached vocabulary, a run's copy in
  `workdir` first), which also fixes model.vocab_size. Without a workdir, the copy
  train keeps there goes to a temporary directory: only the vocabulary is needed."""
  from t5x_lite.training import loop  # pylint: disable=import-outside-toplevel  (see benchmark)
  with contextlib.ExitStack() as cleanup:
    # TFDS reports a dataset build on stdout, which is the record's alone.
    cleanup.enter_context(contextlib.redirect_stdout(sys.stderr))
    if workdir is None:
      workdir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="t5x_lite_benchmark_"))
    return distributed.on_main_process_first(
        functools.partial(loop.resolve_vocabulary, config, workdir), "vocabulary")


def pipelined_step_time(step, state, batches: Iterator[dict[str, np.ndarray]], sharding, *,
                        steps: int, warmup: int, skip: int) -> tuple[float, float, Any]:
  """Seconds per step of the training loop's own pattern (training.loop._loop): next local
  batch -> to_global -> step, no host sync between steps, so input work overlaps the
  device's. After `warmup` steps and a sync, `skip` batches are dropped: those the
  loader prefetched meanwhile, which would otherwise hide up to skip / steps of a
  loader slower than the step. Returns (s/step, mean packing efficiency, new state)."""
  from t5x_lite.data.packing import packing_efficiency  # pylint: disable=import-outside-toplevel
  from t5x_lite.training.step import to_global  # pylint: disable=import-outside-toplevel  (see benchmark)
  for _ in range(warmup):
    state, _ = step(state, to_global(next(batches), sharding))
  jax.block_until_ready(state)
  for _ in range(skip):
    next(batches)
  packing = 0.0
  start = time.perf_counter()
  for _ in range(steps):
    local_batch = next(batches)
    packing += packing_efficiency(local_batch)  # As the loop's throughput window does.
    state, metrics = step(state, to_global(local_batch, sharding))
  jax.block_until_ready((state, metrics))
  return (time.perf_counter() - start) / steps, packing / steps, state


def loader_rate(loader, batches: int, skip: int) -> tuple[float, float]:
  """(batches/s, examples/s) of a training loader alone, once the `skip` batches it
  prefetched are dropped: its capacity, whatever the step's speed."""
  for _ in range(skip):
    next(loader)
  examples, start = loader_examples(loader), time.perf_counter()
  for _ in range(batches):
    next(loader)
  elapsed = time.perf_counter() - start
  return batches / elapsed, (loader_examples(loader) - examples) / elapsed


def loader_examples(loader) -> int:
  """Examples in the batches a ShardedLoader has returned (this process's shards)."""
  return sum(shard.examples_seen for shard in loader.loaders)


def input_fields(setup, step, state, local_batch: dict[str, np.ndarray], vocabulary: Vocabulary, *,
                 steps: int, warmup: int) -> dict[str, Any]:
  """The "input" record: the compiled step fed by the experiment's training loader
  against the same loop on the synthetic batch, then the loader alone (it keeps up
  while loader_batches_per_s > 1 / synthetic_step_s). Loader figures are this process's."""
  from t5x_lite.data.pipeline import make_train_loader  # pylint: disable=import-outside-toplevel
  skip = max(1, setup.config.data.prefetch)  # The loader's queue length.
  timed = functools.partial(pipelined_step_time, step, sharding=setup.batch_sharding, steps=steps,
                            warmup=warmup, skip=skip)
  synthetic_s, _, state = timed(state, itertools.repeat(local_batch))
  loader = make_train_loader(setup.config, vocabulary, jax.process_index(), jax.process_count())
  with contextlib.closing(loader):
    real_s, packing, _ = timed(state, loader)
    batches_per_s, examples_per_s = loader_rate(loader, steps, skip)
  return {
      "dataset": setup.config.data.dataset,
      "synthetic_step_s": synthetic_s,
      "real_step_s": real_s,
      "slowdown": real_s / synthetic_s - 1,
      "packing_efficiency": packing,
      "loader_batches_per_s": batches_per_s,
      "loader_examples_per_s": examples_per_s,
  }


def benchmark(config: ExperimentConfig, *, steps: int, warmup: int, peak_flops_per_device: float = 0.0,
              experiment: str = "", vocabulary: Optional[Vocabulary] = None) -> dict[str, Any]:
  """Compiles and times the experiment's train step; returns the JSON record. With
  a vocabulary (resolve_vocabulary's), also measures the real input pipeline."""
  # Imported here, not at module level: the training package pulls in the data pipeline
  # (tensorflow_datasets), which tools/bench_hf_t5.py must not need.
  from t5x_lite.training import step as training_step  # pylint: disable=import-outside-toplevel
  if steps < 1 or warmup < 0:
    raise ConfigError(f"--steps must be at least 1 and --warmup at least 0 (got {steps}, {warmup}).")
  if config.model.vocab_size is None:  # The size train would give it, as `info` reports.
    config.model.vocab_size = info.resolved_vocab_size(config.data)
  data, model_cfg = config.data, config.model
  setup = training_step.make_setup(config)
  state = training_step.init_state(setup, config.train.seed)
  rows = config.train.batch_size // jax.process_count()
  local_batch = synthetic_batch(rows, data.inputs_length, data.targets_length, model_cfg.vocab_size,
                                seed=config.train.seed + jax.process_index())
  batch = training_step.to_global(local_batch, setup.batch_sharding)
  jax.block_until_ready((state, batch))

  start = time.perf_counter()
  step = training_step.make_train_step(setup).lower(state, batch).compile()
  compile_s = time.perf_counter() - start

  metrics: dict = {}
  for _ in range(warmup):
    state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  step_times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    step_times.append(time.perf_counter() - start)
  loss = float(metrics["loss"])
  inputs = {} if vocabulary is None else {"input": input_fields(
      setup, step, state, local_batch, vocabulary, steps=steps, warmup=warmup)}

  device_count = jax.device_count()
  peak = flops.peak_flops_per_device(peak_flops_per_device) * device_count
  return {
      "system": "t5x-lite",
      "experiment": experiment or config.name,
      "batch": config.train.batch_size,
      "inputs_length": data.inputs_length,
      "targets_length": data.targets_length,
      "steps": steps,
      "warmup": warmup,
      **throughput_fields(step_times, config.train.batch_size, data.inputs_length,
                          data.targets_length,
                          flops.train_flops_per_sequence(model_cfg, data.inputs_length,
                                                         data.targets_length), peak,
                          flops.measured_matmul_flops_per_device() * device_count),
      "compile_s": compile_s,
      "peak_memory_bytes": peak_memory_bytes(),
      "compiled_memory": aot.memory_bytes(step, jax.devices()[0].platform),
      "loss": loss,
      "parameters": model_lib.count_params(model_cfg),
      "device_kind": jax.devices()[0].device_kind,
      "device_count": device_count,
      "backend": jax.default_backend(),
      "settings": {
          "dtype": np.dtype(model_lib.activation_dtype(model_cfg)).name,
          "param_dtype": model_cfg.param_dtype,
          "scan_layers": model_cfg.scan_layers,
          "remat_policy": model_cfg.remat_policy,
          "attention_impl": model_cfg.attention_impl,
          "optimizer": config.optimizer.name,
          "grad_accum_steps": config.train.grad_accum_steps,
          "loss_chunk_size": config.train.loss_chunk_size,
          "pack": data.pack,
          "mesh": dict(setup.mesh.shape),
          "rules_preset": config.mesh.rules_preset,
          "xla_flags": os.environ.get("XLA_FLAGS"),
      },
      "model": {key: getattr(model_cfg, key) for key in MODEL_FIELDS},
      "versions": {"jax": jax.__version__, "jaxlib": _version("jaxlib"), "flax": flax.__version__},
      **inputs,
  }


