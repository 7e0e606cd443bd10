import json
import os
import shutil

import pytest

from t5x_lite.config import DataConfig
from t5x_lite.data import DataError, addition, python_docs
from t5x_lite.data.sources import available_datasets, open_source, prepare
from t5x_lite.data.splits import assign_split


def test_python_docs_builds_with_deterministic_disjoint_splits(corpus_dir, tmp_path):
  train = open_source("python_docs", "train", corpus_dir, ("text",))
  validation = open_source("python_docs", "validation", corpus_dir, ("text",))
  docs = dict(python_docs.documents())
  assert len(train) + len(validation) == len(docs) > 100
  assert 0 < len(validation) < 0.15 * len(docs)
  train_texts = {t for (t,) in train.get(range(len(train)))}
  validation_texts = {t for (t,) in validation.get(range(len(validation)))}
  assert not train_texts & validation_texts
  assert train_texts | validation_texts == set(docs.values())
  assert validation_texts == {t for k, t in docs.items() if assign_split(k, 0.05) == "validation"}
  # A second build elsewhere stores the same records in the same order.
  again = open_source("python_docs:1.0.0", "validation", str(tmp_path), ("text",))
  assert again.get(range(len(again))) == validation.get(range(len(validation)))


def test_prepare_builds_a_missing_built_in_dataset_once(tmp_path):
  data_dir = str(tmp_path)
  prepare(DataConfig(dataset="my_corpus", data_dir=data_dir))  # Not built-in: left alone.
  assert available_datasets(data_dir) == []
  prepare(DataConfig(dataset="addition", data_dir=data_dir))
  assert available_datasets(data_dir) == ["addition:1.0.0"]
  info = tmp_path / "addition" / "1.0.0" / "dataset_info.json"
  mtime = os.path.getmtime(info)
  prepare(DataConfig(dataset="addition:1.0.0", data_dir=data_dir))
  assert os.path.getmtime(info) == mtime
  sizes = [len(open_source("addition", s, data_dir, ("inputs",))) for s in ("train", "validation")]
  assert sum(sizes) == addition.LIMIT**2 and min(sizes) > 0


def test_missing_dataset_lists_what_exists(corpus_dir):
  with pytest.raises(DataError, match=r"'c4/en' not found in data_dir .*python_docs:1\.0\.0"):
    open_source("c4/en", "train", corpus_dir, ("text",))


def test_wrong_data_dir(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    open_source("my_corpus", "train", str(tmp_path / "nowhere"), ("text",))
  with pytest.raises(DataError, match="Datasets prepared there: none"):
    open_source("my_corpus", "train", str(tmp_path), ("text",))


def test_unknown_version_split_and_feature(corpus_dir):
  with pytest.raises(DataError, match="prepared versions: 1.0.0"):
    open_source("python_docs:9.9.9", "train", corpus_dir, ("text",))
  with pytest.raises(DataError, match="no split 'test'; its splits are: train, validation"):
    open_source("python_docs", "test", corpus_dir, ("text",))
  with pytest.raises(DataError, match="no feature 'content'; its features are: text"):
    open_source("python_docs", "train", corpus_dir, ("content",))


def test_tfrecord_only_dataset_says_how_to_convert(corpus_dir, tmp_path):
  source_dir = os.path.join(corpus_dir, "python_docs", "1.0.0")
  target = tmp_path / "old_corpus" / "1.0.0"
  shutil.copytree(source_dir, target, ignore=shutil.ignore_patterns("*.array_record*"))
  info_path = target / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info.update(name="old_corpus", fileFormat="tfrecord")
  info_path.write_text(json.dumps(info))
  with pytest.raises(DataError, match="stored as tfrecord.*--file_format=array_record.*convert_format"):
    open_source("old_corpus", "train", str(tmp_path), ("text",))
