"""`t5x-lite train`: t5x_lite.train with a progress bar, and the final figures printed."""

from __future__ import annotations

import argparse

import jax

from t5x_lite.cli.common import add_distributed_arguments, add_experiment_arguments, initialize_distributed
from t5x_lite.config import load_experiment
from t5x_lite.training.callbacks import ProgressBarCallback
from t5x_lite.training.loop import PREEMPTED_EXIT_STATUS, format_validation, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_experiment_arguments(parser)
  parser.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, config)")
  add_distributed_arguments(parser)


def run(args: argparse.Namespace) -> int:
  initialize_distributed(args)
  config = load_experiment(args.experiment, args.overrides)
  result = train(config, args.workdir, callbacks=[ProgressBarCallback()])
  if result.preempted:  # Saved, not finished: a scheduler must not count the job done.
    return PREEMPTED_EXIT_STATUS
  if jax.process_index() != 0:
    return 0
  if not result.validation:  # Resumed at the last step: nothing left to do.
    print(f"{args.workdir} is already at step {result.step} (train.steps); "
          f"raise train.steps with --set to train further, or use `t5x-lite eval`.")
  else:
    print(f"final {format_validation(result.config, result.validation)}; checkpoint "
          f"{result.checkpoint}")
  return 0
