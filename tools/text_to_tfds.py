"""Command-line wrapper of t5x_lite.data.text_to_tfds (see its add_arguments for the flags)."""

import argparse
import os
import sys

# Runnable as `python tools/text_to_tfds.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t5x_lite.data import text_to_tfds  # pylint: disable=wrong-import-position

if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=text_to_tfds.__doc__)
  text_to_tfds.add_arguments(parser)
  sys.exit(text_to_tfds.run(parser.parse_args()))
