"""Turns the user's .txt / .jsonl files into a TFDS array_record dataset that the loader reads.

.txt: one document per blank-line-separated paragraph. .jsonl: one JSON object per line, the
document in a named field. A stable hash of (file name, document number) puts a fraction of the
documents in "validation" and the rest in "train", the same on every run and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from typing import Iterator, Optional

import tensorflow_datasets as tfds

from t5x_lite.data import sources
from t5x_lite.data.errors import DataError
from t5x_lite.data.splits import assign_split

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")
VERSION = "1.0.0"


def read_documents(path: str, text_field: str = "text") -> Iterator[tuple[str, str]]:
  """Yields (key, text) of the non-empty documents of one .txt or .jsonl file."""
  base = os.path.basename(path)
  if not os.path.isfile(path):
    raise DataError(f"Input file {path} does not exist.")
  if path.endswith(".txt"):
    with open(path, "rb") as f:
      text = f.read().decode("utf-8", errors="replace")
    for i, paragraph in enumerate(_PARAGRAPH_BREAK.split(text)):
      if paragraph.strip():
        yield f"{base}:{i}", paragraph.strip("\n")
  elif path.endswith(".jsonl"):
    with open(path, "rb") as f:
      for i, line in enumerate(f):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise DataError(f"{path} line {i + 1} is not valid JSON: {e}.") from e
        value = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
          fields = sorted(record) if isinstance(record, dict) else []
          raise DataError(
              f"{path} line {i + 1} has no string field {text_field!r}; its fields are: "
              f"{', '.join(fields) or 'none (not an object)'}. Pass --text_field with the right one.")
        if value.strip():
          yield f"{base}:{i}", value
  else:
    raise DataError(f"Input file {path}: expected a .txt or .jsonl file.")


class _TextFiles(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A dataset with one "text" feature built from the user's files under the user's name."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, name: str, inputs: list[str], text_field: str, validation_fraction: float,
               **kwargs):
    self.name = name
    self._inputs = inputs
    self._text_field = text_field
    self._validation_fraction = validation_fraction
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"Text from {', '.join(os.path.basename(p) for p in self._inputs)}.",
        features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in ("train", "validation")}

  def _generate_examples(self, split: str):
    for path in self._inputs:
      for key, text in read_documents(path, self._text_field):
        if assign_split(key, self._validation_fraction) == split:
          yield key, {"text": text}


def convert_text(inputs: list[str], name: str, data_dir: Optional[str] = None, *,
                 text_field: str = "text", validation_fraction: float = 0.05,
                 overwrite: bool = False) -> str:
  """Builds dataset `name` (splits train/validation, feature "text") from the files.

  Returns the folder of the prepared version. Use it with data.dataset=name, data.data_dir=data_dir.
  """
  if not _NAME.match(name):
    raise DataError(f"Dataset name {name!r} must be snake_case (lowercase letters, digits, _).")
  if not 0.0 <= validation_fraction < 1.0:
    raise DataError(f"validation_fraction={validation_fraction} must be in [0, 1).")
  if not inputs:
    raise DataError("No input files given.")
  counts = {"train": 0, "validation": 0}
  for path in inputs:
    for key, _ in read_documents(path, text_field):
      counts[assign_split(key, validation_fraction)] += 1
  if counts["train"] == 0 or (validation_fraction > 0 and counts["validation"] == 0):
    raise DataError(
        f"Splitting {sum(counts.values())} documents gives {counts['train']} train and "
        f"{counts['validation']} validation; both need at least one. Add text or change "
        "validation_fraction.")
  data_dir = sources.resolve_data_dir(data_dir)
  version_dir = os.path.join(data_dir, name, VERSION)
  if os.path.exists(version_dir):
    if not overwrite:
      raise DataError(f"Dataset {name!r} already exists at {version_dir}; pass overwrite=True "
                      "(--overwrite) or choose another name.")
    shutil.rmtree(version_dir)
  builder = _TextFiles(
      name=name, inputs=list(inputs), text_field=text_field,
      validation_fraction=validation_fraction, data_dir=data_dir,
      file_format=tfds.core.FileFormat.ARRAY_RECORD)
  builder.download_and_prepare()
  return version_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("inputs", nargs="+", help=".txt (paragraph per document) or .jsonl files")
  parser.add_argument("--name", required=True, help="dataset name (snake_case), for data.dataset")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  parser.add_argument("--text_field", default="text", help="field holding the text in .jsonl")
  parser.add_argument("--validation_fraction", type=float, default=0.05)
  parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")


def run(args: argparse.Namespace) -> int:
  path = convert_text(args.inputs, args.name, args.data_dir, text_field=args.text_field,
                      validation_fraction=args.validation_fraction, overwrite=args.overwrite)
  info = tfds.builder_from_directory(path).info
  splits = ", ".join(f"{s} {info.splits[s].num_examples}" for s in sorted(info.splits))
  print(f"Wrote {path} ({splits} documents). Train with "
        f"--set data.dataset={args.name} --set data.data_dir={os.path.dirname(os.path.dirname(path))}")
  return 0
