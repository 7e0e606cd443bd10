"""Converts a Hugging Face T5 folder into a t5x-lite workdir (Orbax checkpoint, config).

Equals `t5x-lite import-hf` (see `t5x-lite import-hf --help`).
"""
import sys

from t5x_lite.cli.main import main

sys.exit(main(["import-hf", *sys.argv[1:]]))
