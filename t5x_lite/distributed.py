"""Multi-process start-up through JAX's own runtime (jax.distributed).

TPU VMs and SLURM jobs are detected by jax itself; other clusters pass a
coordinator, a process count and an id, by flag or environment variable.
"""

from __future__ import annotations

import argparse
import os

import jax

from t5x_lite.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("multi-process")
  group.add_argument("--coordinator", default=os.environ.get("T5X_LITE_COORDINATOR"),
                     help="HOST:PORT of process 0 (env T5X_LITE_COORDINATOR)")
  group.add_argument("--num-processes", type=int, default=_env_int("T5X_LITE_NUM_PROCESSES"),
                     help="number of processes (env T5X_LITE_NUM_PROCESSES)")
  group.add_argument("--process-id", type=int, default=_env_int("T5X_LITE_PROCESS_ID"),
                     help="this process's id, 0..N-1 (env T5X_LITE_PROCESS_ID)")


def _env_int(name: str):
  value = os.environ.get(name)
  return int(value) if value else None


def initialize(args: argparse.Namespace) -> None:
  """Joins the run's processes; a no-op for a single process."""
  if args.coordinator is None and args.num_processes in (None, 1):
    return
  if args.coordinator and (args.num_processes is None or args.process_id is None):
    raise ConfigError("--coordinator needs --num-processes and --process-id as well.")
  # CPU processes exchange collectives over gloo; GPUs and TPUs ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                             process_id=args.process_id)
