"""`t5x-lite import-t5x`: a T5X checkpoint as a t5x-lite workdir."""

from __future__ import annotations

import argparse

from t5x_lite import checkpoints
from t5x_lite.cli.common import add_override_argument
from t5x_lite.interop import t5x as t5x_interop


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("path", help="T5X checkpoint folder (MODEL_DIR/checkpoint_STEP), or a "
                                   "MODEL_DIR holding one")
  parser.add_argument("--workdir", required=True, help="new t5x-lite workdir to write")
  parser.add_argument("--preset", default=None,
                      help="the checkpoint's model (T5X checkpoints do not record it), e.g. "
                           "t5_1_1_base; without it the arrays' shapes give the model and --set "
                           "model.ffn_activation=... the activation")
  add_override_argument(parser)
  parser.add_argument("--scan-layers", action="store_true",
                      help="store layers stacked for model.scan_layers")
  parser.add_argument("--vocabulary", default=None,
                      help="the model's SentencePiece model, copied in as the workdir's "
                           "vocabulary, or bytes for ByT5's; --set data.vocab_extra_ids=N gives "
                           "its sentinel count if not T5's 100 (umT5: 300; ByT5: 125, the default "
                           "for bytes)")


def run(args: argparse.Namespace) -> int:
  checkpoints.use_host_only()
  model_config = t5x_interop.resolve_model_config(args.path, args.preset, args.overrides)
  experiment = t5x_interop.import_t5x(
      args.path, args.workdir, model_config, scan_layers=args.scan_layers or model_config.scan_layers,
      vocabulary=args.vocabulary, extra_ids=t5x_interop.import_extra_ids(args.overrides, args.vocabulary))
  m = experiment.model
  vocabulary = ("" if args.vocabulary else "; it has no vocabulary: pass --vocabulary, or set "
                "data.vocabulary when you evaluate, infer or fine-tune")
  print(f"Imported {args.path} into {args.workdir}: d_model {m.d_model}, "
        f"{m.num_encoder_layers}/{m.num_decoder_layers} layers, {m.ffn_activation}, "
        f"{'tied' if m.tie_logits else 'untied'} logits{vocabulary}.")
  return 0
