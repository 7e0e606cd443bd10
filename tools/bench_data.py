"""Command-line wrapper of t5x_lite.data.bench (see its add_arguments for the flags)."""

import argparse
import os
import sys

# Runnable as `python tools/bench_data.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t5x_lite.data import bench  # pylint: disable=wrong-import-position

if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=bench.__doc__)
  bench.add_arguments(parser)
  sys.exit(bench.run(parser.parse_args()))
