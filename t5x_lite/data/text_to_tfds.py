"""Turns the user's .txt / .jsonl / .tsv files into a TFDS array_record dataset that the loader reads.

Text (pretraining): .txt holds one document per blank-line-separated paragraph; .jsonl one JSON
object per line, the document in a named field. Pairs (seq2seq fine-tuning, features "inputs" and
"targets"): .tsv holds one "inputs<TAB>targets" pair per line; .jsonl one object per line with
both texts in named fields. A stable hash of (file name, line or paragraph number) puts a
fraction of the records in "validation" and the rest in "train", the same on every run and machine.
Where two input files share a name, each is named by the end of its path that tells them apart
(d1/a.txt, d2/a.txt), so files with distinct names split as they always have.

The dataset is written in a hidden folder next to its final place and moved there once complete,
so a failed import leaves neither a half-written dataset nor a damaged earlier one. A digest of
each split's records goes with it (sources.RECORDS_DIGEST), so that a run resumed after the text
was replaced by other text, even of the same length, is told (sources.fingerprint).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Callable, Iterator, Optional

from t5x_lite.config import DataConfig
from t5x_lite.data import sources
from t5x_lite.data.builders import VERSION, Records, RecordsDataset
from t5x_lite.data.errors import DataError
from t5x_lite.data.splits import assign_split
from t5x_lite.data.vocabulary import vocabulary_cache_path
from t5x_lite.fileio import check_writable_directory

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")
PAIR_FEATURES = ("inputs", "targets")
_JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def _valid_text(text: str) -> str:
  """`text` with lone surrogates (JSON escapes such as "\\ud800") as "?": they are not
  Unicode characters, so no UTF-8 file (nor TFDS) can store them."""
  return text.encode("utf-8", errors="replace").decode("utf-8")


def _jsonl_records(path: str, fields: tuple[str, ...], flag: str) -> Iterator[tuple[int, tuple[str, ...]]]:
  """Yields (line number, the string fields) of each non-blank line; `flag` names the option.

  Bytes that are not UTF-8 become U+FFFD, as in .txt files, rather than ending the import.
  """
  with open(path, "rb") as f:
    for i, line in enumerate(f):
      if not line.strip():
        continue
      text = line.decode("utf-8-sig" if i == 0 else "utf-8", errors="replace")
      try:
        record = json.loads(text)
      except json.JSONDecodeError as e:
        raise DataError(f"{path} line {i + 1} is not valid JSON: {e}.") from e
      if not isinstance(record, dict):
        raise DataError(f"{path} line {i + 1} is {_JSON_TYPES[type(record)]}, not "
                        f"a JSON object with a field {fields[0]!r}.")
      for field in fields:
        if field not in record:
          raise DataError(
              f"{path} line {i + 1} has no string field {field!r}; its fields are: "
              f"{', '.join(sorted(record)) or 'none'}. Pass {flag} with the right one.")
        if not isinstance(record[field], str):
          raise DataError(
              f"{path} line {i + 1}: field {field!r} is {_JSON_TYPES[type(record[field])]}, not a "
              f"string. Pass {flag} naming a field that holds the text, or store it as a string.")
      yield i, tuple(_valid_text(record[field]) for field in fields)


def _check_inputs(paths: list[str]) -> None:
  """Every input is an existing file, given once."""
  if not paths:
    raise DataError("No input files given.")
  seen: dict[tuple[int, int], str] = {}  # (device, inode): links to one file count as one.
  for path in paths:
    if os.path.isdir(path):
      raise DataError(f"Input {path} is a directory; pass the files in it instead, e.g. "
                      f"{os.path.join(path, '*.txt')}.")
    if not os.path.isfile(path):
      raise DataError(f"Input file {path} does not exist.")
    stat = os.stat(path)
    file_id = (stat.st_dev, stat.st_ino)
    if file_id in seen:
      same = "is given twice" if seen[file_id] == path else f"and {seen[file_id]} are the same file"
      raise DataError(f"Input file {path} {same}; pass each file once.")
    seen[file_id] = path
    _check_is_text(path)


# A file whose first bytes hold a NUL or more than this share of non-UTF-8 is not text.
_TEXT_SAMPLE_BYTES = 65536
_MAX_INVALID_SHARE = 0.05


def _check_is_text(path: str) -> None:
  """Refuses binary files (an archive, a model, random bytes): decoded with replacement they
  would import as noise. A few stray bad bytes in real text are kept as U+FFFD."""
  with open(path, "rb") as f:
    sample = f.read(_TEXT_SAMPLE_BYTES)
  decoded = sample.decode("utf-8", errors="replace")
  # The sample may end inside a character: that one replacement is not the file's fault.
  invalid = decoded.count("\ufffd") - sample.count("\ufffd".encode())
  has_nul = b"\0" in sample
  if has_nul or invalid > _MAX_INVALID_SHARE * max(len(decoded), 1):
    what = "NUL bytes" if has_nul else f"{invalid} bytes that are not UTF-8"
    raise DataError(f"Input file {path} is not text: its first {len(sample)} bytes hold {what}. "
                    "Pass UTF-8 text files (.txt, .jsonl, .tsv).")


def _key_names(paths: list[str]) -> list[str]:
  """The name in each file's record keys: its file name or, where inputs share one, the
  shortest end of its path that tells them apart. Keys pick the split (module docstring)."""
  parts = [os.path.abspath(path).split(os.sep) for path in paths]
  names = []
  for i, own in enumerate(parts):
    depth = 1
    while any(j != i and other[-depth:] == own[-depth:] for j, other in enumerate(parts)):
      depth += 1
    names.append("/".join(own[-depth:]))
  return names


def read_documents(path: str, text_field: str = "text",
                   name: Optional[str] = None) -> Iterator[tuple[str, str]]:
  """Yields (key, text) of the non-empty documents of one .txt or .jsonl file.

  Keys are "name:number"; `name` defaults to the file name (see _key_names).
  """
  name = name or os.path.basename(path)
  if path.endswith(".txt"):
    with open(path, "rb") as f:
      text = f.read().decode("utf-8", errors="replace")
    for i, paragraph in enumerate(_PARAGRAPH_BREAK.split(text)):
      if paragraph.strip():
        yield f"{name}:{i}", paragraph.strip("\n")
  elif path.endswith(".jsonl"):
    for i, (value,) in _jsonl_records(path, (text_field,), "--text-field"):
      if value.strip():
        yield f"{name}:{i}", value
  else:
    raise DataError(f"Input file {path}: expected a .txt or .jsonl file (.tsv holds pairs: --pairs).")


def read_pairs(path: str, inputs_field: str = "inputs", targets_field: str = "targets",
               name: Optional[str] = None) -> Iterator[tuple[str, dict[str, str]]]:
  """Yields (key, {"inputs", "targets"}) of every pair of one .tsv or .jsonl file.

  Keys are "name:line"; `name` defaults to the file name (see _key_names).
  """
  name = name or os.path.basename(path)
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
        yield f"{name}:{i}", dict(zip(PAIR_FEATURES, fields))
  elif path.endswith(".jsonl"):
    for i, values in _jsonl_records(path, (inputs_field, targets_field),
                                    "--inputs-field / --targets-field"):
      yield f"{name}:{i}", dict(zip(PAIR_FEATURES, values))
  else:
    raise DataError(f"Input file {path}: expected a .tsv or .jsonl file of (inputs, targets) pairs.")


def _record_digest(key: str, record: dict[str, str]) -> int:
  """A record's sha256 as a number: a split's digest is their sum, which the order of the input
  files (which the dataset does not depend on) leaves as it is."""
  text = json.dumps([key, record], sort_keys=True).encode("utf-8")
  return int.from_bytes(hashlib.sha256(text).digest(), "big")


def _remove_cached_vocabularies(name: str, data_dir: str) -> None:
  """Vocabularies trained on a dataset are cached next to it (vocabulary_cache_path, named
  vocab_*.model): one trained on the text this replaces must not be reused."""
  folder = os.path.dirname(vocabulary_cache_path(DataConfig(dataset=name, data_dir=data_dir)))
  for path in glob.glob(os.path.join(folder, "vocab_*.model")):
    os.remove(path)


def _convert(inputs: list[str], name: str, data_dir: Optional[str], features: tuple[str, ...],
             read: Callable[[str, str], Iterator[tuple[str, dict[str, str]]]], kind: str,
             validation_fraction: float, overwrite: bool, fraction_name: str) -> str:
  """Builds dataset `name` from the records `read(path, key name)` yields; its version folder."""
  if not _NAME.match(name):
    raise DataError(f"Dataset name {name!r} must be snake_case (lowercase letters, digits, _).")
  if not 0.0 < validation_fraction < 1.0:
    raise DataError(
        f"{fraction_name}={validation_fraction} must be in (0, 1): training evaluates on the "
        "validation split, which needs records. Use a small fraction such as 0.01.")
  _check_inputs(inputs)
  check_writable_directory(sources.resolve_data_dir(data_dir), "--data-dir")
  names = _key_names(inputs)
  records: Records = lambda: (record for path, key_name in zip(inputs, names)
                              for record in read(path, key_name))
  counts = {"train": 0, "validation": 0}
  digests = {"train": 0, "validation": 0}  # For sources.fingerprint: see _record_digest.
  for key, record in records():
    split = assign_split(key, validation_fraction)
    counts[split] += 1
    digests[split] = (digests[split] + _record_digest(key, record)) % 2**256
  if not all(counts.values()):
    raise DataError(
        f"Splitting {sum(counts.values())} {kind} with {fraction_name}={validation_fraction} "
        f"gives {counts['train']} train and {counts['validation']} validation; both need at "
        f"least one. Add more data or change {fraction_name}.")
  data_dir = sources.resolve_data_dir(data_dir)
  version_dir = os.path.join(data_dir, name, VERSION)
  if os.path.exists(version_dir) and not overwrite:
    raise DataError(f"Dataset {name!r} already exists at {version_dir}; pass --overwrite to "
                    "replace it, or choose another name.")
  os.makedirs(data_dir, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{name}-import-", dir=data_dir)
  try:
    RecordsDataset(
        name=name, features=features, records=records, data_dir=staging,
        description=f"{kind.capitalize()} from {', '.join(names)}.",
        validation_fraction=validation_fraction).download_and_prepare()
    with open(os.path.join(staging, name, VERSION, sources.RECORDS_DIGEST), "w", encoding="utf-8") as f:
      json.dump({split: f"{total:064x}" for split, total in digests.items()}, f)
    if os.path.exists(version_dir):
      os.rename(version_dir, os.path.join(staging, "replaced"))
    os.makedirs(os.path.dirname(version_dir), exist_ok=True)
    os.rename(os.path.join(staging, name, VERSION), version_dir)
  finally:
    shutil.rmtree(staging)
  _remove_cached_vocabularies(name, data_dir)
  return version_dir


def convert_text(inputs: list[str], name: str, data_dir: Optional[str] = None, *,
                 text_field: str = "text", validation_fraction: float = 0.05,
                 overwrite: bool = False, fraction_name: str = "validation_fraction") -> str:
  """Builds dataset `name` (splits train/validation, feature "text") from the files.

  Returns the folder of the prepared version. Use it with data.dataset=name, data.data_dir=data_dir.
  Errors call the fraction `fraction_name`: how the user sets it (the CLI passes its flag).
  """
  read = lambda path, key_name: ((key, {"text": text})
                                 for key, text in read_documents(path, text_field, key_name))
  return _convert(inputs, name, data_dir, ("text",), read, "documents", validation_fraction,
                  overwrite, fraction_name)


def convert_pairs(inputs: list[str], name: str, data_dir: Optional[str] = None, *,
                  inputs_field: str = "inputs", targets_field: str = "targets",
                  validation_fraction: float = 0.05, overwrite: bool = False,
                  fraction_name: str = "validation_fraction") -> str:
  """Builds seq2seq dataset `name` (features "inputs" and "targets") from .tsv / .jsonl pairs.

  Returns the folder of the prepared version; train on it with data.objective=seq2seq.
  Errors call the fraction `fraction_name`, as in convert_text.
  """
  read = lambda path, key_name: read_pairs(path, inputs_field, targets_field, key_name)
  return _convert(inputs, name, data_dir, PAIR_FEATURES, read, "pairs", validation_fraction,
                  overwrite, fraction_name)


