import argparse
import json
import os

import pytest

from t5x_lite.config import DataConfig
from t5x_lite.data import DataError
from t5x_lite.data import text_to_tfds
from t5x_lite.data.sources import open_source
from t5x_lite.data.vocabulary import vocabulary_cache_path


def read_all(name, split, data_dir):
  source = open_source(name, split, data_dir, ("text",))
  return [t for (t,) in source.get(range(len(source)))]


def test_txt_paragraphs(tmp_path):
  paragraphs = [f"Paragraph {i} line one.\nline two of {i}." for i in range(40)]
  path = tmp_path / "book.txt"
  path.write_text("\n\n".join(paragraphs[:20]) + "\n  \n\n" + "\n\n".join(paragraphs[20:]) + "\n")
  data_dir = str(tmp_path / "tfds")
  version_dir = text_to_tfds.convert_text([str(path)], "my_book", data_dir, validation_fraction=0.2)
  assert version_dir.endswith("my_book/1.0.0")
  train, validation = read_all("my_book", "train", data_dir), read_all("my_book", "validation", data_dir)
  assert sorted(train + validation) == sorted(paragraphs)
  assert validation and not set(train) & set(validation)
  with pytest.raises(DataError, match="already exists .*; pass --overwrite to replace it"):
    text_to_tfds.convert_text([str(path)], "my_book", data_dir)
  cached = vocabulary_cache_path(DataConfig(dataset="my_book", data_dir=data_dir))
  with open(cached, "wb") as f:  # Stands for a vocabulary trained on the text replaced below.
    f.write(b"old")
  text_to_tfds.convert_text([str(path)], "my_book", data_dir, validation_fraction=0.2, overwrite=True)
  assert read_all("my_book", "validation", data_dir) == validation  # Deterministic.
  assert not os.path.exists(cached)


def test_jsonl_field_and_cli_helpers(tmp_path, capsys):
  path = tmp_path / "docs.jsonl"
  records = [{"body": f"document number {i}", "id": i} for i in range(30)]
  path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
  parser = argparse.ArgumentParser()
  text_to_tfds.add_arguments(parser)
  data_dir = str(tmp_path / "tfds")
  args = parser.parse_args([str(path), "--name", "my_docs", "--data-dir", data_dir,
                            "--text-field", "body", "--validation-fraction", "0.3"])
  # The underscore spelling of the flags still works.
  assert parser.parse_args([str(path), "--name", "my_docs", "--data_dir", data_dir,
                            "--text_field", "body", "--validation_fraction", "0.3"]) == args
  assert text_to_tfds.run(args) == 0
  assert "data.dataset=my_docs" in capsys.readouterr().out
  texts = read_all("my_docs", "train", data_dir) + read_all("my_docs", "validation", data_dir)
  assert sorted(texts) == sorted(r["body"] for r in records)


def test_bad_inputs(tmp_path):
  path = tmp_path / "docs.jsonl"
  path.write_text(json.dumps({"body": "x"}) + "\n")
  with pytest.raises(DataError, match="no string field 'text'; its fields are: body. Pass --text-field"):
    text_to_tfds.convert_text([str(path)], "d", str(tmp_path))
  with pytest.raises(DataError, match="snake_case"):
    text_to_tfds.convert_text([str(path)], "My-Data", str(tmp_path))
  with pytest.raises(DataError, match="both need at least one"):
    text_to_tfds.convert_text([str(path)], "d", str(tmp_path), text_field="body")
  (tmp_path / "x.csv").write_text("a,b\n")
  with pytest.raises(DataError, match=".txt or .jsonl"):
    text_to_tfds.convert_text([str(tmp_path / "x.csv")], "d", str(tmp_path))
  with pytest.raises(DataError, match="does not exist"):
    text_to_tfds.convert_text([str(tmp_path / "missing.txt")], "d", str(tmp_path))
