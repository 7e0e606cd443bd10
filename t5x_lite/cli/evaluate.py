"""`t5x-lite eval`: a run's checkpoint scored on a whole split, results kept in WORKDIR/eval."""

from __future__ import annotations

import argparse
import os

import jax

from t5x_lite import api, evaluation
from t5x_lite.cli.common import add_distributed_arguments, add_override_argument, initialize_distributed
from t5x_lite.compare import format_table
from t5x_lite.fileio import check_writable_directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, help="directory of a `t5x-lite train` run")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--split", default=None, help="split to evaluate (default: data.eval_split)")
  add_override_argument(parser)
  add_distributed_arguments(parser)


def run(args: argparse.Namespace) -> int:
  # The results are written into WORKDIR/eval: a workdir that cannot take them fails now.
  if os.path.isdir(args.workdir):
    check_writable_directory(os.path.join(args.workdir, evaluation.EVAL_DIRNAME),
                             "--workdir's results folder")
  initialize_distributed(args)
  model = api.load(args.workdir, step=args.step, overrides=args.overrides)
  split = args.split or model.config.data.eval_split
  # The whole split unless an override limits it (data.max_eval_examples limits training's).
  limited = any(override.startswith("data.max_eval_examples=") for override in args.overrides)
  max_examples = model.config.data.max_eval_examples if limited else None
  metrics, samples = model.evaluate_with_samples(split, max_examples=max_examples)
  if jax.process_index() == 0:
    path = evaluation.write_results(args.workdir, model.step, split, metrics, samples)
    rows = [[name, f"{value:.6g}"] for name, value in metrics.items()]
    print(f"{model.config.name} step {model.step}, split {split!r}:")
    print(format_table(["metric", "value"], rows))
    print(f"Wrote {path}")
  return 0
