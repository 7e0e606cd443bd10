"""Compares t5x-lite runs: configuration differences, final and best metrics, and a PNG of
their loss curves. Equals `t5x-lite compare WORKDIR1 WORKDIR2 ... [--output PNG]`."""

import sys

from t5x_lite.cli.main import main

if __name__ == "__main__":
  sys.exit(main(["compare", *sys.argv[1:]]))
