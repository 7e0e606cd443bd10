"""Writes a t5x-lite workdir's model as a Hugging Face T5 folder.

The folder (config.json, model.safetensors, spiece.model when the workdir's
vocabulary is a file) loads with T5ForConditionalGeneration.from_pretrained.
"""

import argparse
import os
import sys

# Runnable as `python tools/export_hf_t5.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t5x_lite import hf_interop  # pylint: disable=wrong-import-position


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("workdir", help="t5x-lite workdir with config.json and parameters")
  parser.add_argument("output", help="folder to write")
  args = parser.parse_args(argv)
  try:
    hf_interop.export_hf(args.workdir, args.output)
  except hf_interop.InteropError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"Exported {args.workdir} to {args.output}.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
