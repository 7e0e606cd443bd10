"""Multi-process start-up through JAX's own runtime (jax.distributed).

TPU VM slices and SLURM jobs are detected by JAX itself; other clusters pass a
coordinator, a process count and an id, by flag or environment variable. Only
process 0 writes logs and metrics; every process saves and restores checkpoints.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional

import jax
import numpy as np

from t5x_lite.config import ConfigError

# Seconds to wait for all processes to reach the coordinator before giving up.
HANDSHAKE_TIMEOUT_S = 300


def add_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("multi-process (not needed on TPU VMs or under SLURM)")
  group.add_argument("--coordinator", default=os.environ.get("T5X_LITE_COORDINATOR") or None,
                     help="HOST:PORT of process 0 (env T5X_LITE_COORDINATOR)")
  group.add_argument("--num-processes", type=int, default=_env_int("T5X_LITE_NUM_PROCESSES"),
                     help="number of processes (env T5X_LITE_NUM_PROCESSES)")
  group.add_argument("--process-id", type=int, default=_env_int("T5X_LITE_PROCESS_ID"),
                     help="this process's id, 0..N-1 (env T5X_LITE_PROCESS_ID)")


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  return int(value) if value else None


def _cluster_detected() -> bool:
  """A multi-worker TPU slice or a multi-task SLURM job, which JAX configures itself."""
  tpu_workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return "," in tpu_workers or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def initialize(args: argparse.Namespace) -> None:
  """Joins the run's processes; a no-op for a single process."""
  explicit = args.coordinator is not None or (args.num_processes or 1) > 1
  if not explicit and not _cluster_detected():
    return
  if explicit and (args.coordinator is None or args.num_processes is None or args.process_id is None):
    raise ConfigError(
        "A multi-process run needs --coordinator HOST:PORT, --num-processes N and --process-id I "
        "(or T5X_LITE_COORDINATOR, T5X_LITE_NUM_PROCESSES and T5X_LITE_PROCESS_ID).")
  if explicit and not 0 <= args.process_id < args.num_processes:
    raise ConfigError(f"--process-id {args.process_id} must be in 0..{args.num_processes - 1}.")
  # CPU processes exchange collectives over gloo; GPUs and TPUs ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(
        coordinator_address=args.coordinator, num_processes=args.num_processes,
        process_id=args.process_id, initialization_timeout=HANDSHAKE_TIMEOUT_S)
  except Exception as e:  # The runtime's own errors do not say where it was looking.
    where = args.coordinator or "the address JAX detected from the cluster environment"
    who = f"Process {args.process_id}" if args.process_id is not None else "This process"
    raise ConfigError(
        f"{who} could not join the run through the coordinator at {where} "
        f"within {HANDSHAKE_TIMEOUT_S} s: {e}. Check that process 0 is running and that "
        "the address and port are reachable from every host.") from e


def on_main_process_first(fn, name: str):
  """Runs fn on process 0, then on the others once it has finished (e.g. building a
  dataset or training a vocabulary that all processes then read from disk). If it
  fails on process 0, the others stop too instead of waiting forever."""
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils
  result, error = None, None
  if jax.process_index() == 0:
    try:
      result = fn()
    except Exception as e:  # Re-raised below, once the others know.
      error = e
  failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
  if error is not None:
    raise error
  if failed:
    raise ConfigError(f"Process 0 failed while preparing the {name}; its output says why.")
  return fn() if jax.process_index() != 0 else result


def any_process(flag: bool) -> bool:
  """True on every process if it is True on any (e.g. a SIGTERM seen by one host)."""
  if jax.process_count() == 1:
    return flag
  return bool(allgather_rows(np.array([[int(flag)]], np.int32)).any())


def allgather_rows(table: np.ndarray) -> np.ndarray:
  """(k, m) int32 rows from every process -> (processes * k, m), in process order."""
  if jax.process_count() == 1:
    return table
  from jax.experimental import multihost_utils
  gathered = multihost_utils.process_allgather(table.astype(np.int32))
  return np.asarray(gathered).reshape(-1, table.shape[-1])
