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
import logging
import os
import sys
import traceback
from typing import Callable, Optional

from tqdm import tqdm

from t5x_lite import xla_flags
from t5x_lite.errors import UserError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("info", "parameter counts, FLOPs and memory of an experiment's model"),
    "train": ("train", "pretrain or fine-tune a model (resumes from WORKDIR/checkpoints)"),
    "eval": ("evaluate", "score a run's checkpoint on a whole split (seq2seq: decoded)"),
    "infer": ("infer", "generate text with a run's checkpoint, or score input/target pairs"),
    "compare": ("compare", "configuration differences, metrics and loss curves of runs"),
    "benchmark": ("benchmark",
                  "train-step speed and MFU (synthetic batches; --data real adds the input pipeline)"),
    "inspect": ("inspect_checkpoint", "steps, sizes, parameter tree and config of a checkpoint"),
    "import-hf": ("import_hf", "convert a Hugging Face T5 folder into a t5x-lite workdir"),
    "export-hf": ("export_hf", "write a workdir's checkpoint as a Hugging Face T5 folder"),
    "import-t5x": ("import_t5x", "convert a T5X checkpoint into a t5x-lite workdir"),
    "export-t5x": ("export_t5x", "write a workdir's checkpoint as a T5X checkpoint"),
    "import-text": ("import_text", "turn .txt/.jsonl/.tsv files into a TFDS dataset"),
    "train-vocab": ("train_vocab", "train a SentencePiece vocabulary on a dataset"),
    "bench-data": ("bench_data", "input pipeline throughput (examples/s into packed batches)"),
}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
  """The parser; only `command`'s module is imported, so each subcommand loads
  just what it needs (the benchmark never imports the data pipeline)."""
  parser = argparse.ArgumentParser(
      prog="t5x-lite", description="T5 pretraining, fine-tuning and evaluation in JAX.")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  subparsers.required = True
  for name, (module, help_text) in SUBCOMMANDS.items():
    sub = subparsers.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(module=f"t5x_lite.cli.{module}")
    if name == command:
      importlib.import_module(f"t5x_lite.cli.{module}").add_arguments(sub)
  return parser


class _TerminalHandler(logging.Handler):
  """The library's log records on the terminal: INFO on stdout through tqdm.write, so a
  progress bar is redrawn below the line instead of being torn; warnings on stderr."""

  def emit(self, record: logging.LogRecord) -> None:
    message = self.format(record)
    if record.levelno >= logging.WARNING:
      _error_line(f"t5x-lite: {message}")
    else:
      tqdm.write(message, file=sys.stdout)


def _log_to_terminal() -> None:
  logger = logging.getLogger("t5x_lite")
  if not any(isinstance(h, _TerminalHandler) for h in logger.handlers):
    logger.addHandler(_TerminalHandler())
  logger.setLevel(logging.INFO)
  logger.propagate = False  # Printed here once, not again by a root handler.


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
  _log_to_terminal()
  try:
    return run(args) or 0
  except UserError as e:
    if os.environ.get("T5X_LITE_TRACEBACK"):  # The whole story, for a bug report.
      traceback.print_exc()
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
