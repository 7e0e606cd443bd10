"""`t5x-lite compare` / tools/compare_runs.py on two tiny runs: a table of the configuration keys
that differ and of final/best metrics, and a PNG of the loss curves."""

import json
import os
import re
import subprocess
import sys

from helpers import REPO, TINY_STEPS, train_tiny

from t5x_lite import compare, metrics
from t5x_lite.cli.main import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_compare_two_runs(tiny_run, tmp_path, capsys):
  other = train_tiny(str(tmp_path / "dropout_run"), ("model.dropout_rate=0.1",))
  plot = tmp_path / "curves.png"
  assert main(["compare", tiny_run, other, "--output", str(plot)]) == 0
  table = capsys.readouterr().out
  cells = [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()[2:-1]]
  rows = {row[0]: row[1:] for row in cells}
  assert rows["model.dropout_rate"] == ["0.0000", "0.1000"]
  assert "train.steps" not in rows  # The same in both runs.
  for metric in ("final train loss", "final validation loss", "best validation loss",
                 "final validation accuracy", "best validation accuracy"):
    assert len(rows[metric]) == 2 and all(float(v) > 0 for v in rows[metric]), metric
  assert rows["final step"] == [str(TINY_STEPS), str(TINY_STEPS)]
  assert plot.read_bytes().startswith(PNG_MAGIC)


def test_compare_tool_writes_plot_in_current_directory(tiny_run, tmp_path):
  out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "compare_runs.py"), tiny_run,
                        tiny_run + "/"], cwd=tmp_path, capture_output=True, text=True, check=True)
  assert "final validation loss" in out.stdout
  assert (tmp_path / compare.DEFAULT_PLOT).read_bytes().startswith(PNG_MAGIC)


def test_output_directory_must_exist(tmp_path, capsys):
  missing = tmp_path / "missing"
  assert main(["compare", str(tmp_path), "--output", str(missing / "x.png")]) == 2
  assert f"--output {missing}/x.png: directory {missing} does not exist" in capsys.readouterr().err


def test_own_vocabulary_copy_is_no_difference(tmp_path):
  """A resumed run's config names the copy of the vocabulary in its own workdir."""
  def load(name, vocabulary):
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(json.dumps({"data": {"vocabulary": vocabulary}}))
    return compare.load_run(str(tmp_path / name))["config"]
  first = load("first", str(tmp_path / "first" / "vocabulary.model"))
  second = load("second", str(tmp_path / "second" / "vocabulary.model"))
  finetuned = load("finetuned", str(tmp_path / "first" / "vocabulary.model"))  # Another run's.
  assert compare.config_differences([first, second]) == []
  assert compare.config_differences([first, second, finetuned]) == ["data.vocabulary"]


def test_summaries_and_differences():
  records = [
      {"step": 10, "split": "train", "loss": 3.0},
      {"step": 10, "split": "validation", "loss": 2.0, "accuracy": 0.5, "exact_match": 0.1},
      {"step": 20, "split": "train", "loss": 2.5},
      {"step": 20, "split": "validation", "loss": 2.2, "accuracy": 0.6, "exact_match": 0.3},
  ]
  summary = compare.summarize(records)
  assert summary["final train loss"] == 2.5
  assert (summary["final validation loss"], summary["best validation loss"]) == (2.2, 2.0)
  assert summary["best validation exact_match"] == 0.3
  assert summary["best validation accuracy"] == 0.6
  configs = [{"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 3], "c": ""}]
  assert compare.config_differences(configs) == ["b", "c"]
  assert compare.flatten({"model": {"d": 1}, "name": "x"}) == {"model.d": 1, "name": "x"}


def test_lower_is_better_by_metric_name():
  assert all(map(metrics.lower_is_better, ("loss", "perplexity", "eval_ppl", "error_rate")))
  assert not any(map(metrics.lower_is_better, ("accuracy", "exact_match", "bleu", "rougeL")))
