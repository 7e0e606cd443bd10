"""Trains a SentencePiece vocabulary on a dataset's text.

Equals `t5x-lite train-vocab` (see `t5x-lite train-vocab --help`).
"""
import sys

from t5x_lite.cli.main import main

sys.exit(main(["train-vocab", *sys.argv[1:]]))
