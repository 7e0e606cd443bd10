"""`t5x-lite` command line: one subcommand per job, each a thin layer over the library.

User mistakes (bad experiment file, unknown override, missing dataset,
mismatched checkpoint, mesh that does not divide the devices) end in one
clear message and exit status 2, never a traceback into library internals.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Optional

# Subcommands: name -> (module, help). Each module has add_arguments(parser)
# and run(args).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("t5x_lite.info", "parameter counts, FLOPs and memory of an experiment's model"),
    "train": ("t5x_lite.trainer", "pretrain or fine-tune a model (resumes from WORKDIR/checkpoints)"),
}


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("experiment", help="experiment file (experiments/NAME.py) or its name")
  add_override_argument(parser)


def add_override_argument(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a configuration field, e.g. --set model.d_ff=4096 (repeatable)")


def user_errors() -> tuple[type[Exception], ...]:
  """Exception classes whose message is meant for the user, as they exist."""
  classes: list[type[Exception]] = []
  for module, name in (("t5x_lite.config", "ConfigError"), ("t5x_lite.data", "DataError"),
                       ("t5x_lite.checkpoints", "CheckpointError"),
                       ("t5x_lite.hf_interop", "InteropError"), ("t5x_lite.trainer", "TrainingError")):
    try:
      classes.append(getattr(importlib.import_module(module), name))
    except (ImportError, AttributeError):
      continue
  return tuple(classes)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="t5x-lite", description="T5 pretraining, fine-tuning and evaluation in JAX.")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  subparsers.required = True
  for name, (module, help_text) in SUBCOMMANDS.items():
    sub = subparsers.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(module=module)
    importlib.import_module(module).add_arguments(sub)
  return parser


def main(argv: Optional[list[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  run: Callable[[argparse.Namespace], Optional[int]] = importlib.import_module(args.module).run
  try:
    return run(args) or 0
  except user_errors() as e:
    print(f"t5x-lite {args.command}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"t5x-lite {args.command}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
