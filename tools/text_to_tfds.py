"""Turns .txt / .jsonl / .tsv files into a TFDS dataset for data.dataset.

Equals `t5x-lite import-text` (see `t5x-lite import-text --help`).
"""
import sys

from t5x_lite.cli.main import main

sys.exit(main(["import-text", *sys.argv[1:]]))
