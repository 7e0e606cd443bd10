"""`t5x-lite` command line: one subcommand per job, each a thin layer over the library.

User mistakes (bad experiment file, unknown override, missing dataset,
mismatched checkpoint, mesh that does not divide the devices) end in one
clear message and exit status 2, never a traceback into library internals. In a
multi-process run an error on any process ends every process at once, each
printing the error (distributed.stop_all_processes).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Callable, Optional

from t5x_lite import xla_flags
from t5x_lite.config import ConfigError, UserError

# Subcommands: name -> (module, help). Each module has add_arguments(parser)
# and run(args).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("t5x_lite.info", "parameter counts, FLOPs and memory of an experiment's model"),
    "train": ("t5x_lite.trainer", "pretrain or fine-tune a model (resumes from WORKDIR/checkpoints)"),
    "eval": ("t5x_lite.evaluation", "score a run's checkpoint on a whole split (seq2seq: decoded)"),
    "infer": ("t5x_lite.inference", "decode text with a run's checkpoint"),
    "compare": ("t5x_lite.compare", "configuration differences, metrics and loss curves of runs"),
    "benchmark": ("t5x_lite.benchmark",
                  "train-step speed and MFU (synthetic batches; --data real adds the input pipeline)"),
    "inspect": ("t5x_lite.checkpoints", "steps, sizes, parameter tree and config of a checkpoint"),
    "import-hf": ("t5x_lite.hf_interop", "convert a Hugging Face T5 folder into a t5x-lite workdir"),
    "export-hf": ("t5x_lite.hf_interop", "write a workdir's checkpoint as a Hugging Face T5 folder"),
    "import-text": ("t5x_lite.data.text_to_tfds", "turn .txt/.jsonl/.tsv files into a TFDS dataset"),
    "train-vocab": ("t5x_lite.data.vocabulary", "train a SentencePiece vocabulary on a dataset"),
    "bench-data": ("t5x_lite.data.bench", "input pipeline throughput (examples/s into packed batches)"),
}


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("experiment", help="experiment file (experiments/NAME.py) or its name")
  add_override_argument(parser)


def add_override_argument(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a configuration field, e.g. --set model.d_ff=4096 (repeatable)")


def check_output_directory(path: str, flag: str = "--output") -> None:
  """Fails before the work, not after it, when an output file's directory is missing."""
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise ConfigError(f"{flag} {path}: directory {directory} does not exist; create it first.")


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
  """The parser; only `command`'s module is imported, so each subcommand loads
  just what it needs (the benchmark never imports the data pipeline)."""
  parser = argparse.ArgumentParser(
      prog="t5x-lite", description="T5 pretraining, fine-tuning and evaluation in JAX.")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  subparsers.required = True
  for name, (module, help_text) in SUBCOMMANDS.items():
    sub = subparsers.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(module=module)
    if name == command:
      importlib.import_module(module).add_arguments(sub)
  return parser


def _process_tag() -> str:
  """' (process I of N)' in multi-process runs, so an error says where it happened."""
  jax = sys.modules.get("jax")
  if jax is None or jax.process_count() == 1:
    return ""
  return f" (process {jax.process_index()} of {jax.process_count()})"


def _error_line(line: str) -> None:
  """One write, so threads writing to the same stream (XLA's, a collective library's)
  cannot split the line."""
  sys.stderr.write(line + "\n")


def _stop(status: int, reason: str) -> int:
  """In a multi-process run, ends this process now and the others with it (they may be
  waiting for it in a collective); otherwise returns `status`."""
  distributed = sys.modules.get("t5x_lite.distributed")  # Not imported: one process.
  if distributed is not None:
    distributed.stop_all_processes(status, reason)
  return status


def main(argv: Optional[list[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  command = next((arg for arg in argv if not arg.startswith("-")), None)
  args = build_parser(command).parse_args(argv)
  run: Callable[[argparse.Namespace], Optional[int]] = importlib.import_module(args.module).run
  xla_flags.set_gpu_flags()  # Before the command starts a backend: XLA reads them only then.
  try:
    return run(args) or 0
  except UserError as e:
    _error_line(f"t5x-lite {args.command}{_process_tag()}: error: {e}")
    return _stop(2, str(e))
  except KeyboardInterrupt:
    _error_line(f"t5x-lite {args.command}{_process_tag()}: interrupted")
    return _stop(130, "interrupted")
  except BrokenPipeError:  # Output piped into `head` and the like: not an error.
    sys.stdout = open(os.devnull, "w")
    return 0
  except Exception as e:
    tag = _process_tag()
    if not tag:
      raise
    _error_line(f"t5x-lite {args.command}{tag}: failed with the error below")
    traceback.print_exc()
    first_line = (str(e).splitlines() or [""])[0]
    return _stop(1, f"{type(e).__name__}: {first_line} (its output has the traceback)")


if __name__ == "__main__":
  sys.exit(main())
