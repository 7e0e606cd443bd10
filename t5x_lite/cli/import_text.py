"""`t5x-lite import-text`: .txt, .jsonl and .tsv files as a TFDS dataset."""

from __future__ import annotations

import argparse
import os

import tensorflow_datasets as tfds

from t5x_lite.data import text_to_tfds

_FRACTION_FLAG = "--validation-fraction"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("inputs", nargs="+",
                      help=".txt (paragraph per document) or .jsonl files; with --pairs, .tsv or .jsonl")
  parser.add_argument("--name", required=True, help="dataset name (snake_case), for data.dataset")
  parser.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                      help="TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  parser.add_argument("--text-field", "--text_field", dest="text_field", default="text",
                      help="field holding the text in .jsonl")
  parser.add_argument("--pairs", action="store_true",
                      help='(inputs, targets) pairs for seq2seq: "inputs<TAB>targets" lines or .jsonl')
  parser.add_argument("--inputs-field", "--inputs_field", dest="inputs_field", default="inputs",
                      help="with --pairs: .jsonl inputs field")
  parser.add_argument("--targets-field", "--targets_field", dest="targets_field", default="targets",
                      help="with --pairs: .jsonl targets field")
  parser.add_argument(_FRACTION_FLAG, "--validation_fraction", dest="validation_fraction",
                      type=float, default=0.05, help="share of the records in the validation split")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")


def run(args: argparse.Namespace) -> int:
  if args.pairs:
    path = text_to_tfds.convert_pairs(args.inputs, args.name, args.data_dir, inputs_field=args.inputs_field,
                         targets_field=args.targets_field,
                         validation_fraction=args.validation_fraction, overwrite=args.overwrite,
                         fraction_name=_FRACTION_FLAG)
  else:
    path = text_to_tfds.convert_text(args.inputs, args.name, args.data_dir, text_field=args.text_field,
                        validation_fraction=args.validation_fraction, overwrite=args.overwrite,
                        fraction_name=_FRACTION_FLAG)
  info = tfds.builder_from_directory(path).info
  splits = ", ".join(f"{s} {info.splits[s].num_examples}" for s in sorted(info.splits))
  objective = " --set data.objective=seq2seq" if args.pairs else ""
  print(f"Wrote {path} ({splits} {'pairs' if args.pairs else 'documents'}). Train with "
        f"--set data.dataset={args.name} --set data.data_dir={os.path.dirname(os.path.dirname(path))}"
        f"{objective}")
  return 0
