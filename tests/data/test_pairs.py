"""Seq2seq data: (inputs, targets) pairs from .tsv / .jsonl files and the built-in addition task,
read through the loader's seq2seq objective; evaluation rows hold one example each."""

import argparse
import dataclasses
import json

import numpy as np
import pytest
from data_helpers import unpack

from t5x_lite.cli import import_text
from t5x_lite.config import ExperimentConfig, TrainConfig
from t5x_lite.data import DataError, Loader, addition, make_eval_loader, text_to_tfds
from t5x_lite.data.sources import open_source

PAIRS = [(f"question {i}?", f"answer {i * i}") for i in range(30)]


def read_pairs(name, data_dir):
  out = []
  for split in ("train", "validation"):
    source = open_source(name, split, data_dir, ("inputs", "targets"))
    out += source.get(range(len(source)))
  return sorted(out)


def test_tsv_and_jsonl_pairs(tmp_path, capsys):
  tsv, jsonl = tmp_path / "pairs.tsv", tmp_path / "pairs.jsonl"
  tsv.write_text("".join(f"{q}\t{a}\n" for q, a in PAIRS[:15]) + "\n")
  jsonl.write_text("".join(json.dumps({"q": q, "a": a}) + "\n" for q, a in PAIRS[15:]))
  parser = argparse.ArgumentParser()
  import_text.add_arguments(parser)
  data_dir = str(tmp_path / "tfds")
  args = parser.parse_args([str(tsv), str(jsonl), "--pairs", "--name", "qa", "--data-dir", data_dir,
                            "--inputs-field", "q", "--targets-field", "a",
                            "--validation-fraction", "0.2"])
  assert import_text.run(args) == 0
  assert "--set data.objective=seq2seq" in capsys.readouterr().out
  assert read_pairs("qa", data_dir) == sorted(PAIRS)


def test_bad_pair_files(tmp_path):
  bad = tmp_path / "bad.tsv"
  bad.write_text("one\ttwo\nthree\n")
  with pytest.raises(DataError, match="line 2 has 1 tab-separated fields"):
    text_to_tfds.convert_pairs([str(bad)], "bad", str(tmp_path))
  jsonl = tmp_path / "x.jsonl"
  jsonl.write_text(json.dumps({"inputs": "a"}) + "\n")
  with pytest.raises(DataError, match="no string field 'targets'; its fields are: inputs"):
    text_to_tfds.convert_pairs([str(jsonl)], "x", str(tmp_path))
  with pytest.raises(DataError, match=r"\.tsv holds pairs"):
    text_to_tfds.convert_text([str(bad)], "x", str(tmp_path))


def test_addition_through_the_seq2seq_loader(config, vocab):
  config = dataclasses.replace(config, dataset="addition", objective="seq2seq", inputs_length=32,
                               targets_length=8, pack=True)
  experiment = ExperimentConfig(data=config, train=TrainConfig(batch_size=64))
  loader = make_eval_loader(experiment, vocab)
  source = open_source("addition", "validation", config.data_dir, ("inputs", "targets"))
  expected = [(vocab.encode(i).tolist() + [1], vocab.encode(t).tolist() + [1])
              for i, t in source.get(range(len(source)))]
  examples = []
  for batch in loader:
    # Unpacked: one example per row, padding rows empty.
    assert (batch["encoder_segment_ids"].max(axis=1) <= 1).all()
    examples += [(list(i), list(t)) for i, t in unpack(batch)]
  assert examples == expected
  assert len(expected) == sum(1 for _ in addition.pairs()) - len(Loader(
      config, vocab, split="train", batch_size=8, seed=0).tasks[0].source)
  packed = next(iter(Loader(config, vocab, split="train", batch_size=8, seed=0)))
  assert np.max(packed["encoder_segment_ids"]) > 1  # Training rows are packed.
