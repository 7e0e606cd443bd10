import argparse
import re
import time

import pytest
from data_helpers import VOCAB_PIECES

from t5x_lite.cli import bench_data as bench_data_command
from t5x_lite.cli.main import main
from t5x_lite.data import bench, pipeline


def test_bench_data_reports_throughput_and_packing(base_config, vocab, capsys):
  del vocab  # Trained and cached by the fixture, so the command reuses it.
  parser = argparse.ArgumentParser()
  bench_data_command.add_arguments(parser)
  args = parser.parse_args([
      "--data-dir", base_config.data_dir, "--vocab-train-size", str(VOCAB_PIECES),
      "--inputs-length", "128", "--targets-length", "32", "--batch-size", "4", "--batches", "3"])
  assert bench_data_command.run(args) == 0
  out = capsys.readouterr().out
  assert 0.8 < float(re.search(r"packing efficiency (\S+),", out).group(1)) <= 1.0
  assert out.rstrip().endswith("ended in epoch 1")  # Counted from 1.


@pytest.mark.parametrize("flags, message", [
    (["--objective", "spancorr"], "--objective='spancorr' is not a valid choice"),
    (["--batches", "0"], "--batches=0 must be at least 1"),
    (["--dataset", "nothere"], "Check --dataset and --data-dir"),
])
def test_bench_data_errors_name_its_flags(tmp_path, capsys, flags, message):
  assert main(["bench-data", "--data-dir", str(tmp_path), *flags]) == 2
  assert message in capsys.readouterr().err


def test_only_batches_made_after_the_clock_starts_are_timed(base_config, vocab, monkeypatch):
  """Each block of 8 batches costs 0.5 s to make, then comes at once (as a block of tokenized
  documents does): batches the loader had ready when the clock started must not count."""
  del vocab
  make_batches = pipeline._BatchIterator._make

  def slow_blocks(self, state):
    for i, item in enumerate(make_batches(self, state)):
      if i % 8 == 0:
        time.sleep(0.5)
      yield item
  monkeypatch.setattr(pipeline._BatchIterator, "_make", slow_blocks)
  result = bench.measure(base_config, batch_size=4, batches=2, warmup=3)
  assert result["rows_per_s"] <= 2 * 4 / 0.5  # The 2 timed batches took the 0.5 s to make.


@pytest.mark.parametrize("flags, message", [
    (["--text-feature", "body"], "Set --text-feature to one of them"),
    (["--split", "tset"], "Set --split accordingly"),
    (["--vocab-extra-ids", "1"], "Raise --vocab-extra-ids, shorten the lengths, or raise "
                                 "--mean-noise-span-length"),
    (["--inputs-length", "4", "--targets-length", "2"],
     "--inputs-length=4 / --targets-length=2 are too short for span corruption"),
])
def test_bench_data_has_the_flags_its_errors_name(base_config, vocab, capsys, flags, message):
  del vocab
  argv = ["bench-data", "--data-dir", base_config.data_dir, "--vocab-train-size", str(VOCAB_PIECES),
          "--batches", "1", *flags]
  assert main(argv) == 2
  assert message in capsys.readouterr().err
