"""`t5x-lite train-vocab`: a SentencePiece vocabulary trained on a dataset's text."""

from __future__ import annotations

import argparse

from t5x_lite.data import sources, vocabulary
from t5x_lite.data.errors import DataError, name_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--dataset", default="python_docs", help="TFDS name, e.g. c4/en:3.1.0")
  parser.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None)
  parser.add_argument("--split", default="train")
  parser.add_argument("--text-feature", "--text_feature", dest="text_feature", default="text")
  parser.add_argument("--vocab-size", "--vocab_size", dest="vocab_size", type=int, default=32000,
                      help="pieces, before extra ids")
  parser.add_argument("--max-characters", "--max_characters", dest="max_characters", type=int,
                      default=20_000_000)
  parser.add_argument("--output", required=True, help="model prefix; writes PREFIX.model")


# The settings data errors name, as train-vocab's flags.
_FLAGS = {"data.dataset": "--dataset", "data.data_dir": "--data-dir",
          "data.train_split / data.eval_split": "--split", "data.text_feature": "--text-feature"}


def run(args: argparse.Namespace) -> int:
  try:
    source = sources.open_source(args.dataset, args.split, args.data_dir, (args.text_feature,))
  except DataError as e:
    raise name_flags(e, _FLAGS) from e
  path = vocabulary.train_vocabulary(vocabulary.shuffled_texts(source), args.output,
                                    args.vocab_size, max_characters=args.max_characters,
                                    size_name="--vocab-size")
  trained = vocabulary.SentencePieceVocabulary(path)
  print(f"Wrote {path}: {trained.pieces} pieces, vocab_size {trained.vocab_size} with "
        f"{trained.extra_ids} extra ids. Use it with --set data.vocabulary={path}")
  return 0
