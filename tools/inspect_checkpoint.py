"""Prints what a checkpoint holds: steps, bytes on disk, parameter tree, config.

Equals `t5x-lite inspect` (see `t5x-lite inspect --help`).
"""
import sys

from t5x_lite.cli.main import main

sys.exit(main(["inspect", *sys.argv[1:]]))
