"""Turns the user's .txt / .jsonl / .tsv files into a TFDS array_record dataset that the loader reads.

Text (pretraining): .txt holds one document per blank-line-separated paragraph; .jsonl one JSON
object per line, the document in a named field. Pairs (seq2seq fine-tuning, features "inputs" and
"targets"): .tsv holds one "inputs<TAB>targets" pair per line; .jsonl one object per line with
both texts in named fields. A stable hash of (file name, line or paragraph number) puts a
fraction of the records in "validation" and the rest in "train", the same on every run and machine.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
from typing import Callable, Iterator, Optional

import tensorflow_datasets as tfds

from t5x_lite.config import DataConfig
from t5x_lite.data import sources
from t5x_lite.data.builders import VERSION, Records, RecordsDataset
from t5x_lite.data.errors import DataError
from t5x_lite.data.splits import assign_split
from t5x_lite.data.vocabulary import vocabulary_cache_path

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")
PAIR_FEATURES = ("inputs", "targets")


def _jsonl_records(path: str, fields: tuple[str, ...], flag: str) -> Iterator[tuple[int, tuple[str, ...]]]:
  """Yields (line number, the string fields) of each non-blank line; `flag` names the option."""
  with open(path, "rb") as f:
    for i, line in enumerate(f):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{path} line {i + 1} is not valid JSON: {e}.") from e
      for field in fields:
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
          names = sorted(record) if isinstance(record, dict) else []
          raise DataError(
              f"{path} line {i + 1} has no string field {field!r}; its fields are: "
              f"{', '.join(names) or 'none (not an object)'}. Pass {flag} with the right one.")
      yield i, tuple(record[field] for field in fields)


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
    for i, (value,) in _jsonl_records(path, (text_field,), "--text-field"):
      if value.strip():
        yield f"{base}:{i}", value
  else:
    raise DataError(f"Input file {path}: expected a .txt or .jsonl file (.tsv holds pairs: --pairs).")


def read_pairs(path: str, inputs_field: str = "inputs",
               targets_field: str = "targets") -> Iterator[tuple[str, dict[str, str]]]:
  """Yields (key, {"inputs", "targets"}) of every pair of one .tsv or .jsonl file."""
  base = os.path.basename(path)
  if not os.path.isfile(path):
    raise DataError(f"Input file {path} does not exist.")
  if path.endswith(".tsv"):
    with open(path, "rb") as f:
      for i, line in enumerate(f):
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text.strip():
          continue
        fields = text.split("\t")
        if len(fields) != 2:
          raise DataError(
              f"{path} line {i + 1} has {len(fields)} tab-separated fields; a .tsv pair file needs "
              "exactly two (inputs, targets) per line. Use .jsonl for texts holding tabs.")
        yield f"{base}:{i}", dict(zip(PAIR_FEATURES, fields))
  elif path.endswith(".jsonl"):
    for i, values in _jsonl_records(path, (inputs_field, targets_field),
                                    "--inputs-field / --targets-field"):
      yield f"{base}:{i}", dict(zip(PAIR_FEATURES, values))
  else:
    raise DataError(f"Input file {path}: expected a .tsv or .jsonl file of (inputs, targets) pairs.")


def _remove_cached_vocabularies(name: str, data_dir: str) -> None:
  """Vocabularies trained on a dataset are cached next to it (vocabulary_cache_path, named
  vocab_*.model): one trained on the text this replaces must not be reused."""
  folder = os.path.dirname(vocabulary_cache_path(DataConfig(dataset=name, data_dir=data_dir)))
  for path in glob.glob(os.path.join(folder, "vocab_*.model")):
    os.remove(path)


def _convert(inputs: list[str], name: str, data_dir: Optional[str], features: tuple[str, ...],
             read: Callable[[str], Iterator[tuple[str, dict[str, str]]]], kind: str,
             validation_fraction: float, overwrite: bool) -> str:
  """Builds dataset `name` from the records `read(path)` yields for each file; its version folder."""
  if not _NAME.match(name):
    raise DataError(f"Dataset name {name!r} must be snake_case (lowercase letters, digits, _).")
  if not 0.0 <= validation_fraction < 1.0:
    raise DataError(f"validation_fraction={validation_fraction} must be in [0, 1).")
  if not inputs:
    raise DataError("No input files given.")
  records: Records = lambda: (record for path in inputs for record in read(path))
  counts = {"train": 0, "validation": 0}
  for key, _ in records():
    counts[assign_split(key, validation_fraction)] += 1
  if counts["train"] == 0 or (validation_fraction > 0 and counts["validation"] == 0):
    raise DataError(
        f"Splitting {sum(counts.values())} {kind} gives {counts['train']} train and "
        f"{counts['validation']} validation; both need at least one. Add more or change "
        "validation_fraction.")
  data_dir = sources.resolve_data_dir(data_dir)
  version_dir = os.path.join(data_dir, name, VERSION)
  if os.path.exists(version_dir):
    if not overwrite:
      raise DataError(f"Dataset {name!r} already exists at {version_dir}; pass --overwrite to "
                      "replace it, or choose another name.")
    shutil.rmtree(version_dir)
  _remove_cached_vocabularies(name, data_dir)
  RecordsDataset(
      name=name, features=features, records=records, data_dir=data_dir,
      description=f"{kind.capitalize()} from {', '.join(os.path.basename(p) for p in inputs)}.",
      validation_fraction=validation_fraction).download_and_prepare()
  return version_dir


def convert_text(inputs: list[str], name: str, data_dir: Optional[str] = None, *,
                 text_field: str = "text", validation_fraction: float = 0.05,
                 overwrite: bool = False) -> str:
  """Builds dataset `name` (splits train/validation, feature "text") from the files.

  Returns the folder of the prepared version. Use it with data.dataset=name, data.data_dir=data_dir.
  """
  read = lambda path: ((key, {"text": text}) for key, text in read_documents(path, text_field))
  return _convert(inputs, name, data_dir, ("text",), read, "documents", validation_fraction,
                  overwrite)


def convert_pairs(inputs: list[str], name: str, data_dir: Optional[str] = None, *,
                  inputs_field: str = "inputs", targets_field: str = "targets",
                  validation_fraction: float = 0.05, overwrite: bool = False) -> str:
  """Builds seq2seq dataset `name` (features "inputs" and "targets") from .tsv / .jsonl pairs.

  Returns the folder of the prepared version; train on it with data.objective=seq2seq.
  """
  read = lambda path: read_pairs(path, inputs_field, targets_field)
  return _convert(inputs, name, data_dir, PAIR_FEATURES, read, "pairs", validation_fraction,
                  overwrite)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("inputs", nargs="+",
                      help=".txt (paragraph per document) or .jsonl files; with --pairs, .tsv or .jsonl")
  parser.add_argument("--name", required=True, help="dataset name (snake_case), for data.dataset")
  parser.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                      help="TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  parser.add_argument("--text-field", "--text_field", dest="text_field", default="text",
                      help="field holding the text in .jsonl")
  parser.add_argument("--pairs", action="store_true",
                      help='(inputs, targets) pairs for seq2seq: "inputs<TAB>targets" lines or .jsonl')
  parser.add_argument("--inputs-field", "--inputs_field", dest="inputs_field", default="inputs",
                      help="with --pairs: .jsonl inputs field")
  parser.add_argument("--targets-field", "--targets_field", dest="targets_field", default="targets",
                      help="with --pairs: .jsonl targets field")
  parser.add_argument("--validation-fraction", "--validation_fraction", dest="validation_fraction",
                      type=float, default=0.05)
  parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")


def run(args: argparse.Namespace) -> int:
  if args.pairs:
    path = convert_pairs(args.inputs, args.name, args.data_dir, inputs_field=args.inputs_field,
                         targets_field=args.targets_field,
                         validation_fraction=args.validation_fraction, overwrite=args.overwrite)
  else:
    path = convert_text(args.inputs, args.name, args.data_dir, text_field=args.text_field,
                        validation_fraction=args.validation_fraction, overwrite=args.overwrite)
  info = tfds.builder_from_directory(path).info
  splits = ", ".join(f"{s} {info.splits[s].num_examples}" for s in sorted(info.splits))
  objective = " --set data.objective=seq2seq" if args.pairs else ""
  print(f"Wrote {path} ({splits} {'pairs' if args.pairs else 'documents'}). Train with "
        f"--set data.dataset={args.name} --set data.data_dir={os.path.dirname(os.path.dirname(path))}"
        f"{objective}")
  return 0
