"""The built-in corpus: the English text of Python's documentation topics (no download needed).

`pydoc_data.topics.topics` ships with CPython (~65k words in ~80 topics). Each topic is cut at its
section headings into documents, and a stable hash of the document key puts ~5% of them in the
validation split, so the splits are identical on every machine and Python version.
"""

from __future__ import annotations

import re
from typing import Iterator

import tensorflow_datasets as tfds

from t5x_lite.data import builders

NAME = "python_docs"
VALIDATION_FRACTION = 0.05

# A heading is a line followed by an underline of three or more *, = or - characters.
_HEADING = re.compile(r"\n(?=[^\n]+\n(?:\*{3,}|={3,}|-{3,})\n)")


def documents() -> Iterator[tuple[str, str]]:
  """Yields (key, text) for every non-empty section of every topic, in a fixed order."""
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  for topic in sorted(topics.topics):
    for i, section in enumerate(_HEADING.split(topics.topics[topic])):
      if section.strip():
        yield f"{topic}/{i}", section.strip("\n")


def build(data_dir: str) -> tfds.core.DatasetBuilder:
  """Builds the corpus as array_record under data_dir if it is not there yet (a second or two)."""
  return builders.build_once(builders.RecordsDataset(
      name=NAME, features=("text",), description=__doc__, data_dir=data_dir,
      records=lambda: ((key, {"text": text}) for key, text in documents()),
      validation_fraction=VALIDATION_FRACTION))
