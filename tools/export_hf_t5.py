"""Writes a t5x-lite workdir's checkpoint as a Hugging Face T5 folder.

Equals `t5x-lite export-hf` (see `t5x-lite export-hf --help`).
"""
import sys

from t5x_lite.cli.main import main

sys.exit(main(["export-hf", *sys.argv[1:]]))
