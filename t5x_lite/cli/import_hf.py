"""`t5x-lite import-hf`: a Hugging Face T5 folder as a t5x-lite workdir."""

from __future__ import annotations

import argparse
import os
import sys

from t5x_lite import checkpoints
from t5x_lite.data import vocabulary
from t5x_lite.interop import hf as hf_interop


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("path", help="HF T5 folder (save_pretrained output: config.json and weights)")
  parser.add_argument("--workdir", required=True, help="new t5x-lite workdir to write")
  parser.add_argument("--scan-layers", action="store_true",
                      help="store layers stacked for model.scan_layers")


def run(args: argparse.Namespace) -> int:
  checkpoints.use_host_only()
  experiment = hf_interop.import_hf(args.path, args.workdir, scan_layers=args.scan_layers)
  m = experiment.model
  print(f"Imported {args.path} into {args.workdir}: d_model {m.d_model}, "
        f"{m.num_encoder_layers}/{m.num_decoder_layers} layers, {m.ffn_activation}, "
        f"{'tied' if m.tie_logits else 'untied'} logits. Evaluate or infer with --workdir "
        f"{args.workdir}; fine-tune in a new workdir with --set "
        f"checkpoint.init_from={args.workdir}")
  if not experiment.data.vocabulary:
    print(f"t5x-lite import-hf: warning: {args.path} has no {hf_interop.SPIECE_FILE} or {hf_interop.TOKENIZER_FILE}, "
          f"so {args.workdir} has no vocabulary, which eval, infer and fine-tuning need: copy "
          f"the model's spiece.model to "
          f"{os.path.join(args.workdir, checkpoints.VOCABULARY_FILE)}; {hf_interop.VOCABULARY_HINT}.",
          file=sys.stderr)
  elif vocabulary.holds_byte_vocabulary(experiment.data.vocabulary):
    print(f"The folder's tokenizer is ByT5's: its vocabulary is UTF-8 bytes, with "
          f"{experiment.data.vocab_extra_ids} extra ids.")
  elif not os.path.isfile(os.path.join(args.path, hf_interop.SPIECE_FILE)):
    print(f"The folder has no {hf_interop.SPIECE_FILE}: its vocabulary was converted from "
          f"{hf_interop.TOKENIZER_FILE}.")
  return 0
