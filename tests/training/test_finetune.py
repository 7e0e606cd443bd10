"""Fine-tuning the tiny pretrained run on the built-in addition task learns: exact match on held-out
sums far above blind guessing (about 1%), measured by `t5x-lite eval` over the whole split."""

import json
import os

import jax
import pytest
from helpers import REPO

from t5x_lite.checkpoints import VOCABULARY_FILE, CheckpointError
from t5x_lite.cli.main import main
from t5x_lite.config import load_experiment
from t5x_lite.data import addition
from t5x_lite.data.splits import assign_split
from t5x_lite.training.loop import train

EXPERIMENT = os.path.join(REPO, "experiments", "finetune_addition.py")
STEPS = 400
# Shorter than the experiment (400 steps, no dropout), so the test takes seconds, not minutes.
SETTINGS = [
    f"train.steps={STEPS}", "train.batch_size=32", "optimizer.learning_rate=0.01",
    "model.dropout_rate=0", f"train.eval_every={STEPS}", f"checkpoint.every_steps={STEPS}",
    "train.log_every=100", "data.max_eval_examples=64",
]


def test_finetuned_addition_learns(tiny_run, tmp_path, capsys):
  workdir = str(tmp_path / "addition")
  config = load_experiment(EXPERIMENT, [f"checkpoint.init_from={tiny_run}", *SETTINGS])
  result = train(config, workdir, devices=jax.devices()[:1])
  assert result.step == STEPS and "exact_match" in result.validation
  # The fine-tuned run took the pretrained run's vocabulary; its config.json names its own copy.
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  own = os.path.join(workdir, VOCABULARY_FILE)
  assert saved["data"]["vocabulary"] == os.path.abspath(own)
  with open(own, "rb") as copy, open(os.path.join(tiny_run, VOCABULARY_FILE), "rb") as source:
    assert copy.read() == source.read()
  assert saved["model"]["dropout_rate"] == 0.0 and saved["data"]["data_dir"]  # As resolved.

  assert main(["eval", "--workdir", workdir]) == 0
  assert "exact_match" in capsys.readouterr().out
  with open(os.path.join(workdir, "eval", f"step_{STEPS}_validation.json")) as f:
    record = json.load(f)
  held_out = sum(assign_split(key, addition.VALIDATION_FRACTION) == "validation"
                 for key, _ in addition.pairs())
  assert record["metrics"]["examples"] == held_out  # Every held-out sum once, none twice.
  assert record["metrics"]["exact_match"] > 0.2, record["metrics"]
  sample = record["samples"][0]
  a, b = (int(word) for word in sample["inputs"].split()[1::2])
  assert sample["target"] == str(a + b)


def test_init_from_a_missing_run_names_the_setting(tmp_path):
  missing = str(tmp_path / "nowhere")
  config = load_experiment(EXPERIMENT, [f"checkpoint.init_from={missing}", *SETTINGS])
  with pytest.raises(CheckpointError, match=r"^checkpoint\.init_from='.*nowhere': .* does not exist"):
    train(config, str(tmp_path / "run"), devices=jax.devices()[:1])
