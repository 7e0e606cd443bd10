import argparse
import itertools
import json
import os

import pytest

from t5x_lite.cli import import_text
from t5x_lite.cli.main import main
from t5x_lite.config import DataConfig
from t5x_lite.data import DataError, text_to_tfds
from t5x_lite.data.builders import RecordsDataset
from t5x_lite.data.sources import open_source
from t5x_lite.data.splits import assign_split
from t5x_lite.data.vocabulary import vocabulary_cache_path
from t5x_lite.errors import UserError


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
  import_text.add_arguments(parser)
  data_dir = str(tmp_path / "tfds")
  args = parser.parse_args([str(path), "--name", "my_docs", "--data-dir", data_dir,
                            "--text-field", "body", "--validation-fraction", "0.3"])
  # The underscore spelling of the flags still works.
  assert parser.parse_args([str(path), "--name", "my_docs", "--data_dir", data_dir,
                            "--text_field", "body", "--validation_fraction", "0.3"]) == args
  assert import_text.run(args) == 0
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


def keys_in(name, data_dir):
  """{text: split} of a dataset whose texts are all different."""
  return {t: split for split in ("train", "validation") for t in read_all(name, split, data_dir)}


def test_files_sharing_a_name_are_told_apart_by_their_paths(tmp_path):
  paragraphs = [f"paragraph {i}" for i in range(40)]
  for folder in ("d1", "d2"):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "a.txt").write_text("\n\n".join(f"{folder} {p}" for p in paragraphs))
  data_dir = str(tmp_path / "tfds")
  inputs = [str(tmp_path / "d1" / "a.txt"), str(tmp_path / "d2" / "a.txt")]
  text_to_tfds.convert_text(inputs, "dup", data_dir, validation_fraction=0.3)
  splits = keys_in("dup", data_dir)
  assert len(splits) == 80
  for folder in ("d1", "d2"):
    assert all(splits[f"{folder} {p}"] == assign_split(f"{folder}/a.txt:{i}", 0.3)
               for i, p in enumerate(paragraphs))
  # A file with a name of its own keeps the keys (so the split) it always had.
  text_to_tfds.convert_text([inputs[0]], "single", data_dir, validation_fraction=0.3)
  single = keys_in("single", data_dir)
  assert all(single[f"d1 {p}"] == assign_split(f"a.txt:{i}", 0.3) for i, p in enumerate(paragraphs))
  assert set(single.values()) == {"train", "validation"}


def test_a_file_given_twice_is_refused(tmp_path):
  path = tmp_path / "a.txt"
  path.write_text("one\n\ntwo\n")
  os.symlink(path, tmp_path / "link.txt")
  with pytest.raises(DataError, match="a.txt is given twice; pass each file once"):
    text_to_tfds.convert_text([str(path), str(path)], "d", str(tmp_path))
  with pytest.raises(DataError, match="link.txt and .*a.txt are the same file"):
    text_to_tfds.convert_text([str(path), str(tmp_path / "link.txt")], "d", str(tmp_path))


def test_jsonl_bytes_that_are_not_utf8_and_lone_surrogates_are_replaced(tmp_path):
  path = tmp_path / "docs.jsonl"
  lines = [b'{"text": "caf\xe9 latin-1"}', b'{"text": "lone \\ud800 surrogate"}',
           b'{"text": "pair \\ud83d\\ude00 kept"}']
  lines += [b'{"text": "document %d"}' % i for i in range(30)]
  path.write_bytes(b"\n".join(lines) + b"\n")
  data_dir = str(tmp_path / "tfds")
  text_to_tfds.convert_text([str(path)], "odd", data_dir, validation_fraction=0.2)
  texts = set(keys_in("odd", data_dir))
  assert {"caf\ufffd latin-1", "lone ? surrogate", "pair \U0001F600 kept"} <= texts


def test_jsonl_field_that_is_not_a_string(tmp_path):
  path = tmp_path / "docs.jsonl"
  path.write_text(json.dumps({"text": ["a", "list"]}) + "\n")
  with pytest.raises(DataError, match="line 1: field 'text' is an array, not a string"):
    text_to_tfds.convert_text([str(path)], "d", str(tmp_path))
  path.write_text("[1, 2]\n")
  with pytest.raises(DataError, match="line 1 is an array, not a JSON object with a field 'text'"):
    text_to_tfds.convert_text([str(path)], "d", str(tmp_path))


def test_a_directory_is_not_an_input_file(tmp_path):
  with pytest.raises(DataError, match=r"is a directory; pass the files in it instead, e.g. .*/\*.txt"):
    text_to_tfds.convert_text([str(tmp_path)], "d", str(tmp_path))


def cli_error(capsys, *args) -> str:
  assert main(["import-text", *args]) == 2
  return capsys.readouterr().err


def test_validation_fraction_errors_name_the_flag(tmp_path, capsys):
  path = tmp_path / "a.txt"
  path.write_text("\n\n".join(f"paragraph {i}" for i in range(3)))
  data_dir = str(tmp_path / "tfds")
  assert "--validation-fraction=0.0 must be in (0, 1)" in cli_error(
      capsys, str(path), "--name", "d", "--data-dir", data_dir, "--validation-fraction", "0")
  err = cli_error(capsys, str(path), "--name", "d", "--data-dir", data_dir)
  assert "3 documents with --validation-fraction=0.05 gives 3 train and 0 validation" in err
  assert "Add more data or change --validation-fraction" in err
  assert not os.path.exists(data_dir)
  with pytest.raises(DataError, match="validation_fraction=1.0 must be in"):
    text_to_tfds.convert_text([str(path)], "d", data_dir, validation_fraction=1.0)


def test_a_failed_import_leaves_no_folder_and_keeps_the_old_dataset(tmp_path, monkeypatch):
  path = tmp_path / "a.txt"
  path.write_text("\n\n".join(f"paragraph {i}" for i in range(30)))
  data_dir = tmp_path / "tfds"
  text_to_tfds.convert_text([str(path)], "old", str(data_dir), validation_fraction=0.2)
  before = keys_in("old", str(data_dir))

  def fail_midway(self, split):
    yield from itertools.islice(original(self, split), 3)
    raise OSError("disk full")
  original = RecordsDataset._generate_examples
  monkeypatch.setattr(RecordsDataset, "_generate_examples", fail_midway)
  with pytest.raises(OSError, match="disk full"):
    text_to_tfds.convert_text([str(path)], "new", str(data_dir), validation_fraction=0.2)
  with pytest.raises(OSError, match="disk full"):
    text_to_tfds.convert_text([str(path)], "old", str(data_dir), validation_fraction=0.2,
                              overwrite=True)
  assert sorted(os.listdir(data_dir)) == ["old"]
  assert keys_in("old", str(data_dir)) == before


def test_binary_files_and_a_data_dir_that_is_a_file_are_refused(tmp_path):
  binary = tmp_path / "random.txt"
  binary.write_bytes(bytes(range(128, 256)) * 200)
  with pytest.raises(DataError, match=r"random.txt is not text: .* bytes that are not UTF-8"):
    text_to_tfds.convert_text([str(binary)], "noise", str(tmp_path / "tfds"),
                              validation_fraction=0.5)
  (tmp_path / "nul.txt").write_bytes(b"text\0with a NUL")
  with pytest.raises(DataError, match="hold NUL bytes"):
    text_to_tfds.convert_text([str(tmp_path / "nul.txt")], "noise", str(tmp_path / "tfds"))
  good = tmp_path / "good.txt"
  good.write_text("one paragraph\n\nanother \ufffd one with a stray bad byte\n" * 20)
  (tmp_path / "file").write_text("")
  with pytest.raises(UserError, match="--data-dir .*/file is a file; give a directory path"):
    text_to_tfds.convert_text([str(good)], "good", str(tmp_path / "file"))
  assert (tmp_path / "file").read_text() == ""
