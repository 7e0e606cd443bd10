"""Prints what a checkpoint directory holds: steps, bytes on disk, parameter tree, config.

Usage: python tools/inspect_checkpoint.py WORKDIR_OR_CHECKPOINTS_DIR [--step N] [--json]
(also wired as ``t5x-lite inspect DIR`` through add_arguments / run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from absl import logging

from t5x_lite.checkpoints import CheckpointError, describe, format_description


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("directory", help="A workdir or its checkpoints/ directory.")
  parser.add_argument("--step", type=int, default=None, help="Step to describe (default: latest).")
  parser.add_argument("--json", action="store_true", help="Print the description as JSON.")


def run(args: argparse.Namespace) -> int:
  """Prints the description; returns the exit status (1 with a message on a bad checkpoint)."""
  # Only metadata is read: keep JAX off accelerators a running trainer may be using.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  logging.set_verbosity(logging.ERROR)  # Orbax warns that a read-only directory is read-only.
  try:
    info = describe(args.directory, args.step)
  except CheckpointError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(json.dumps(info, indent=2) if args.json else format_description(info))
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_arguments(parser)
  return run(parser.parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
