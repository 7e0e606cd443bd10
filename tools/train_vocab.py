"""Command-line wrapper of t5x_lite.data.vocabulary (see its add_arguments for the flags)."""

import argparse
import os
import sys

# Runnable as `python tools/train_vocab.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t5x_lite.data import vocabulary  # pylint: disable=wrong-import-position

if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=vocabulary.__doc__)
  vocabulary.add_arguments(parser)
  sys.exit(vocabulary.run(parser.parse_args()))
