import argparse
import re

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
  efficiency = float(re.search(r"packing efficiency (\S+),", capsys.readouterr().out).group(1))
  assert 0.8 < efficiency <= 1.0
