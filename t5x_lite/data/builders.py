"""One TFDS builder for every dataset t5x-lite writes itself: string features from keyed records.

The built-in corpora (python_docs, addition) and the user's converted files all become a
dataset with splits "train" and "validation", stored as array_record; a stable hash of each
record's key picks its split, so the splits are the same on every run and machine.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import tensorflow_datasets as tfds

from t5x_lite.data.splits import assign_split

VERSION = "1.0.0"
Records = Callable[[], Iterable[tuple[str, dict[str, str]]]]


class RecordsDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Dataset `name` whose examples are the (key, {feature: text}) pairs `records()` yields."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, name: str, features: Sequence[str], records: Records, description: str,
               validation_fraction: float, **kwargs):
    self.name = name
    self._features = tuple(features)
    self._records = records
    self._description = description
    self._validation_fraction = validation_fraction
    super().__init__(file_format=tfds.core.FileFormat.ARRAY_RECORD, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self._description,
        features=tfds.features.FeaturesDict({f: tfds.features.Text() for f in self._features}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in ("train", "validation")}

  def _generate_examples(self, split: str):
    for key, record in self._records():
      if assign_split(key, self._validation_fraction) == split:
        yield key, record


def build_once(builder: RecordsDataset) -> RecordsDataset:
  """Prepares the dataset under the builder's data_dir unless it is there already."""
  if not builder.is_prepared():
    builder.download_and_prepare()
  return builder
