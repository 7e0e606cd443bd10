import argparse
import re

import pytest

from t5x_lite import cli
from t5x_lite.data import bench

from data_helpers import VOCAB_PIECES


def test_bench_data_reports_throughput_and_packing(base_config, vocab, capsys):
  del vocab  # Trained and cached by the fixture, so the command reuses it.
  parser = argparse.ArgumentParser()
  bench.add_arguments(parser)
  args = parser.parse_args([
      "--data-dir", base_config.data_dir, "--vocab-train-size", str(VOCAB_PIECES),
      "--inputs-length", "128", "--targets-length", "32", "--batch-size", "4", "--batches", "3"])
  assert bench.run(args) == 0
  out = capsys.readouterr().out
  assert 0.8 < float(re.search(r"packing efficiency (\S+),", out).group(1)) <= 1.0
  assert out.rstrip().endswith("ended in epoch 1")  # Counted from 1.


@pytest.mark.parametrize("flags, message", [
    (["--objective", "spancorr"], "--objective='spancorr' is not a valid choice"),
    (["--batches", "0"], "--batches=0 must be at least 1"),
    (["--dataset", "nothere"], "Check --dataset and --data-dir"),
])
def test_bench_data_errors_name_its_flags(tmp_path, capsys, flags, message):
  assert cli.main(["bench-data", "--data-dir", str(tmp_path), *flags]) == 2
  assert message in capsys.readouterr().err
