"""`t5x-lite compare`: runs side by side, as a table and a PNG of their loss curves."""

from __future__ import annotations

import argparse

from t5x_lite import compare
from t5x_lite.cli.common import check_output_directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("workdirs", nargs="+", metavar="WORKDIR", help="run directories to compare")
  parser.add_argument("--output", default=compare.DEFAULT_PLOT,
                      help=f"PNG of the loss curves (default: ./{compare.DEFAULT_PLOT})")


def run(args: argparse.Namespace) -> int:
  check_output_directory(args.output)  # The plot is written after reading every run.
  print(compare.compare(args.workdirs, args.output))
  print(f"Wrote {args.output}")
  return 0
