"""Flags and checks that several subcommands share."""

from __future__ import annotations

import argparse
import os

from t5x_lite import distributed
from t5x_lite.errors import ConfigError


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("experiment", help="experiment file (experiments/NAME.py) or its name")
  add_override_argument(parser)


def add_override_argument(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a configuration field, e.g. --set model.d_ff=4096 (repeatable)")


def check_output_directory(path: str, flag: str = "--output") -> None:
  """Fails before the work, not after it, when an output file's directory is missing or the
  output is a directory."""
  if os.path.isdir(path):
    raise ConfigError(f"{flag} {path} is a directory; give a file path.")
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise ConfigError(f"{flag} {path}: directory {directory} does not exist; create it first.")


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("multi-process (not needed on TPU VMs or under SLURM)")
  group.add_argument("--coordinator", default=None,
                     help="HOST:PORT of process 0 (env T5X_LITE_COORDINATOR)")
  group.add_argument("--num-processes", type=int, default=None,
                     help="number of processes; 1 turns cluster detection off "
                          "(env T5X_LITE_NUM_PROCESSES)")
  group.add_argument("--process-id", type=int, default=None,
                     help="this process's id, 0..N-1 (env T5X_LITE_PROCESS_ID)")
  group.add_argument("--handshake-timeout", type=int, default=None, metavar="SECONDS",
                     help="how long processes wait for each other at start-up (default "
                          f"{distributed.HANDSHAKE_TIMEOUT_S}; env T5X_LITE_HANDSHAKE_TIMEOUT)")


def initialize_distributed(args: argparse.Namespace) -> None:
  """Joins the processes of a multi-process run, from the flags of add_distributed_arguments."""
  distributed.initialize(
      distributed.settings(args.coordinator, args.num_processes, args.process_id,
                           args.handshake_timeout),
      label=f"t5x-lite {args.command}")
