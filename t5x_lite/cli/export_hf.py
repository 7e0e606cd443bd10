"""`t5x-lite export-hf`: a workdir's checkpoint as a Hugging Face T5 folder."""

from __future__ import annotations

import argparse

from t5x_lite import checkpoints
from t5x_lite.interop import hf as hf_interop


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, help="t5x-lite workdir (or its checkpoints/)")
  parser.add_argument("--output", required=True, help="folder to write")
  parser.add_argument("--step", type=int, default=None, help="step to export (default: latest)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace a model folder already at --output (the whole folder)")


def run(args: argparse.Namespace) -> int:
  checkpoints.use_host_only()
  hf_interop.export_hf(args.workdir, args.output, args.step, overwrite=args.overwrite)
  print(f"Exported {args.workdir} to {args.output}; load it with "
        f"T5ForConditionalGeneration.from_pretrained({args.output!r}).")
  return 0
