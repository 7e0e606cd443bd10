"""Compares t5x-lite runs: configuration differences, final/best metrics and a loss plot.

Usage: python tools/compare_runs.py WORKDIR1 WORKDIR2 ... [--output PNG]
(the same as `t5x-lite compare`).
"""

import argparse
import os
import sys

# Runnable as `python tools/compare_runs.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t5x_lite import compare  # pylint: disable=wrong-import-position

if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=compare.__doc__.splitlines()[0])
  compare.add_arguments(parser)
  sys.exit(compare.run(parser.parse_args()))
