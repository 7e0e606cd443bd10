"""Converts a Hugging Face T5 folder (save_pretrained output) into a t5x-lite workdir.

Writes WORKDIR/config.json and the parameters; spiece.model, if the folder has
one, is copied and becomes data.vocabulary.
"""

import argparse
import os
import sys

# Runnable as `python tools/import_hf_t5.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t5x_lite import hf_interop  # pylint: disable=wrong-import-position


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("hf_folder",
                      help="folder with config.json and model.safetensors or pytorch_model.bin")
  parser.add_argument("workdir", help="t5x-lite workdir to create")
  parser.add_argument("--scan_layers", action="store_true", help="store layers stacked for nn.scan")
  args = parser.parse_args(argv)
  try:
    experiment = hf_interop.import_hf(args.hf_folder, args.workdir, scan_layers=args.scan_layers)
  except hf_interop.InteropError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  m = experiment.model
  print(f"Imported {args.hf_folder} into {args.workdir}: d_model {m.d_model}, "
        f"{m.num_encoder_layers}/{m.num_decoder_layers} layers, {m.ffn_activation}, "
        f"{'tied' if m.tie_logits else 'untied'} logits.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
