"""Measures the input pipeline's throughput (examples/s into packed batches).

Equals `t5x-lite bench-data` (see `t5x-lite bench-data --help`).
"""
import sys

from t5x_lite.cli.main import main

sys.exit(main(["bench-data", *sys.argv[1:]]))
