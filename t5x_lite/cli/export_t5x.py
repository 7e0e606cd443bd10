"""`t5x-lite export-t5x`: a workdir's checkpoint as a T5X checkpoint."""

from __future__ import annotations

import argparse

from t5x_lite import checkpoints
from t5x_lite.interop import t5x as t5x_interop


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, help="t5x-lite workdir (or its checkpoints/)")
  parser.add_argument("--output", required=True,
                      help="T5X MODEL_DIR to write; the checkpoint goes to OUTPUT/checkpoint_STEP")
  parser.add_argument("--step", type=int, default=None, help="step to export (default: latest)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace T5X checkpoints already at --output (the whole folder)")
  parser.add_argument("--scanned", action="store_true",
                      help="layers stacked as T5X's scanned scalable_t5 network stores them "
                           "(models with a relative position bias in every layer, as umT5)")


def run(args: argparse.Namespace) -> int:
  checkpoints.use_host_only()
  _, path = t5x_interop.export_t5x(args.workdir, args.output, args.step, overwrite=args.overwrite,
                                   scanned=args.scanned)
  print(f"Exported {args.workdir} to {path}; T5X restores it with "
        f"t5x.checkpoints.load_t5x_checkpoint({path!r}) or as INITIAL_CHECKPOINT_PATH.")
  return 0
