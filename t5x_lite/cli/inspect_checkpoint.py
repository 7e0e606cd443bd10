"""`t5x-lite inspect`: the steps, sizes, parameter tree and config of a checkpoint."""

from __future__ import annotations

import argparse
import json

from t5x_lite import checkpoints


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("directory", help="a workdir or its checkpoints/ directory")
  parser.add_argument("--step", type=int, default=None, help="step to describe (default: latest)")
  parser.add_argument("--json", action="store_true", help="print the description as JSON")


def run(args: argparse.Namespace) -> int:
  checkpoints.use_host_only()
  info = checkpoints.describe(args.directory, args.step)
  print(json.dumps(info, indent=2) if args.json else checkpoints.format_description(info))
  return 0
