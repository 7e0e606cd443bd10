"""Random access to the text of a TFDS dataset stored as array_record, with errors that say how to fix.

Datasets are found on disk ("name[/config][:version]" under data_dir) and read through
`tfds.builder_from_directory(...).as_data_source(split)`, so no dataset code is imported and no
TensorFlow is needed. The built-in datasets ("python_docs", "addition") are built on first use,
or up front by `prepare`. `fingerprint` identifies the data a run reads, for its checkpoints.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from typing import Optional, Sequence

from t5x_lite.config import DataConfig
from t5x_lite.data.errors import DataError

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_INFO = "dataset_info.json"
# Datasets built on first use: name -> the module whose build(data_dir) makes them. Imported
# only when needed, like tensorflow_datasets itself, so that importing the data package
# (the trainer, the benchmark) works on machines without tensorflow-datasets.
BUILT_IN = {"python_docs": "t5x_lite.data.python_docs", "addition": "t5x_lite.data.addition"}
# Written by import-text next to a dataset's files: split -> a digest of its records, for
# fingerprint (text replaced by other text of the same length leaves every size as it was).
RECORDS_DIGEST = "records_digest.json"


def resolve_data_dir(data_dir: Optional[str]) -> str:
  """data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (TFDS's own default)."""
  chosen = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  return os.path.abspath(os.path.expanduser(chosen))


def _split_name(name: str) -> tuple[str, Optional[str]]:
  """'c4/en:3.1.0' -> ('c4/en', '3.1.0')."""
  base, _, version = name.partition(":")
  return base.strip("/"), (version or None)


def dataset_dirname(name: str) -> str:
  """The dataset's folder relative to data_dir ('c4/en:3.1.0' -> 'c4/en')."""
  return _split_name(name)[0]


def dataset_path(name: str, data_dir: Optional[str]) -> str:
  """The dataset's folder (holding its version folders) under the resolved data_dir."""
  return os.path.join(resolve_data_dir(data_dir), dataset_dirname(name))


def _versions(path: str) -> list[str]:
  if not os.path.isdir(path):
    return []
  found = [v for v in os.listdir(path)
           if _VERSION.match(v) and os.path.isfile(os.path.join(path, v, _INFO))]
  return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def available_datasets(data_dir: str) -> list[str]:
  """Every prepared 'name[/config]:version' under data_dir (two levels of configs at most)."""
  found = []
  for root, dirs, _ in os.walk(data_dir):
    depth = os.path.relpath(root, data_dir).count(os.sep)
    if os.path.isfile(os.path.join(root, _INFO)) and _VERSION.match(os.path.basename(root)):
      found.append(f"{os.path.relpath(os.path.dirname(root), data_dir)}:{os.path.basename(root)}")
      dirs.clear()
    elif depth >= 3 or os.path.basename(root) == "downloads":
      dirs.clear()
  return sorted(found)


def _version_dir(name: str, data_dir: str) -> str:
  """The folder of the requested (or newest) prepared version; a DataError if there is none."""
  base, version = _split_name(name)
  path = os.path.join(data_dir, base)
  if not os.path.isdir(data_dir):
    raise DataError(
        f"Dataset {name!r}: data_dir {data_dir} does not exist. Set data.data_dir to the folder "
        "holding your TFDS datasets (or $TFDS_DATA_DIR), or prepare the dataset there first "
        "(`tfds build NAME --data_dir=DIR --file_format=array_record`, or `t5x-lite import-text` "
        "for your own text).")
  versions = _versions(path)
  if not versions:
    existing = available_datasets(data_dir)
    configs = [d for d in existing if d.startswith(base + "/")]
    if configs:
      hint = f"It has configs; name one of them: {', '.join(c.split(':')[0] for c in configs)}."
    else:
      listing = ", ".join(existing) if existing else "none"
      hint = (f"Datasets prepared there: {listing}. Check data.dataset and data.data_dir, or "
              "prepare it (`tfds build NAME --data_dir=DIR --file_format=array_record`, or "
              "`t5x-lite import-text` for your own .txt/.jsonl files).")
    raise DataError(f"Dataset {name!r} not found in data_dir {data_dir} (looked in {path}). {hint}")
  if version is None:
    return os.path.join(path, versions[-1])
  if version not in versions:
    raise DataError(
        f"Dataset {name!r}: version {version} not found in {path}; prepared versions: "
        f"{', '.join(versions)}. Drop the ':{version}' to use the newest.")
  return os.path.join(path, version)


class TextSource:
  """Random access to some string features of one split: len() and get(indices)."""

  def __init__(self, source, features: Sequence[str], description: str):
    self._source = source
    self.features = tuple(features)
    self.description = description

  def __len__(self) -> int:
    return len(self._source)

  def get(self, indices: Sequence[int]) -> list[tuple[str, ...]]:
    """The features of the records at `indices`, as text (invalid UTF-8 replaced)."""
    records = self._source.__getitems__(list(indices))
    return [tuple(_text(r[f]) for f in self.features) for r in records]

  def records(self, indices: Sequence[int]) -> list[dict]:
    """The records at `indices`, every feature (text decoded, invalid UTF-8 replaced)."""
    return [{k: _text(v) if isinstance(v, bytes) else v for k, v in r.items()}
            for r in self._source.__getitems__(list(indices))]


class RecordSource:
  """Records held in memory (a task's Python generator), with TextSource's records()."""

  def __init__(self, records: list[dict], description: str):
    self._records = records
    self.description = description

  def __len__(self) -> int:
    return len(self._records)

  def records(self, indices: Sequence[int]) -> list[dict]:
    return [dict(self._records[int(i)]) for i in indices]


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  return str(value)


def text_features(data_config: DataConfig) -> tuple[str, ...]:
  """The features an objective reads: inputs and targets for seq2seq, else the text."""
  if data_config.objective == "seq2seq":
    return data_config.inputs_feature, data_config.targets_feature
  return (data_config.text_feature,)


def _build_if_missing(name: str, data_dir: str) -> None:
  """Builds dataset `name` (all its splits) under data_dir if it is built-in and not there yet."""
  module = BUILT_IN.get(dataset_dirname(name))
  if module is not None:
    importlib.import_module(module).build(data_dir)


def prepare_dataset(name: str, data_dir: Optional[str]) -> None:
  """Builds dataset `name` under data_dir if it is built-in and missing (see prepare)."""
  _build_if_missing(name, resolve_data_dir(data_dir))


def prepare(data_config: DataConfig) -> None:
  """Builds the built-in dataset the config reads (train and eval splits) if it is missing.

  Building writes into data_dir, so in a multi-process run call this on one process and let the
  others open the data after it: processes building into one folder at once would clash.
  Datasets that are not built-in are left alone (open_source says how to prepare them).
  """
  _build_if_missing(data_config.dataset, resolve_data_dir(data_config.data_dir))


def _split_info(name: str, version_dir: str, info, split: str):
  """The SplitInfo of `split` ('train[:10%]' -> train's); a DataError naming the splits there are."""
  split_base = split.split("[")[0]
  if split_base not in info.splits:
    raise DataError(
        f"Dataset {name!r} at {version_dir} has no split {split_base!r}; its splits are: "
        f"{', '.join(sorted(info.splits))}. Set data.train_split / data.eval_split accordingly.")
  return info.splits[split_base]


def open_source(
    name: str, split: str, data_dir: Optional[str], features: Sequence[str] = ()) -> TextSource:
  """Opens split `split` of dataset `name` for random access; builds a missing built-in one.

  `features` (one text feature, or inputs and targets) must be in the dataset; () checks none.
  """
  data_dir = resolve_data_dir(data_dir)
  _build_if_missing(name, data_dir)
  version_dir = _version_dir(name, data_dir)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  (see BUILT_IN)
  builder = tfds.builder_from_directory(version_dir)
  info = builder.info
  formats = {str(f.value) for f in info.available_file_formats()} | {str(info.file_format.value)}
  if "array_record" not in formats:
    raise DataError(
        f"Dataset {name!r} at {version_dir} is stored as {', '.join(sorted(formats))}, which has "
        "no random access; t5x-lite reads array_record. Rebuild it with `tfds build "
        f"{dataset_dirname(name)} --data_dir={data_dir} --file_format=array_record`, or convert "
        f"it in place with `tfds convert_format --dataset_version_dir={version_dir} "
        "--out_file_format=array_record` (converting needs TensorFlow to read TFRecord).")
  _split_info(name, version_dir, info, split)
  keys = sorted(info.features.keys())
  # The features come from text_features: the text, or the inputs and the targets.
  settings = (("data.text_feature",) if len(features) == 1
              else ("data.inputs_feature", "data.targets_feature"))
  for feature, setting in zip(features, settings):
    if feature not in keys:
      raise DataError(
          f"Dataset {name!r} at {version_dir} has no feature {feature!r}; its features are: "
          f"{', '.join(keys)}. Set {setting} to one of them.")
  source = builder.as_data_source(split=split, file_format="array_record")
  return TextSource(source, features, f"{name} {split} ({version_dir})")


def fingerprint(data_config: DataConfig) -> dict:
  """What identifies the data of a run's train and eval splits, from the dataset's metadata and
  file sizes (no record is read), as JSON: a checkpoint records it, so that resuming on data
  replaced since (`import-text --overwrite`) is refused instead of going on with other text.

  Per split: its examples, shards, bytes and shard file sizes, and the digest of its records
  where import-text wrote one; also the dataset's folder and the sha256 of its dataset_info.json.
  """
  name = data_config.dataset
  version_dir = _version_dir(name, resolve_data_dir(data_config.data_dir))
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  (see BUILT_IN)
  info = tfds.builder_from_directory(version_dir).info
  digests_path = os.path.join(version_dir, RECORDS_DIGEST)
  digests = {}
  if os.path.isfile(digests_path):
    with open(digests_path, encoding="utf-8") as f:
      digests = json.load(f)

  def split_fingerprint(split: str) -> dict:
    split_info = _split_info(name, version_dir, info, split)
    lengths = [int(n) for n in split_info.shard_lengths]
    paths = [os.fspath(p) for p in split_info.filepaths]
    found = {"split": split, "examples": sum(lengths), "shards": len(lengths),
             "num_bytes": int(split_info.num_bytes),
             "shard_bytes": [os.path.getsize(p) if os.path.isfile(p) else None for p in paths]}
    if split_info.name in digests:
      found["records_digest"] = digests[split_info.name]
    return found

  with open(os.path.join(version_dir, _INFO), "rb") as f:
    info_sha256 = hashlib.sha256(f.read()).hexdigest()
  return {"dataset": name, "path": version_dir, "dataset_info_sha256": info_sha256,
          "train_split": split_fingerprint(data_config.train_split),
          "eval_split": split_fingerprint(data_config.eval_split)}
