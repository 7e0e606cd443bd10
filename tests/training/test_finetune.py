"""Fine-tuning the tiny pretrained run on the built-in addition task learns: exact match on held-out
sums far above blind guessing (about 1%), measured by `t5x-lite eval` over the whole split."""

import hashlib
import json
import os

import jax
import numpy as np
import pytest
from helpers import REPO

from t5x_lite import checkpoints
from t5x_lite import config as config_lib
from t5x_lite import model as model_lib
from t5x_lite.checkpoints import VOCABULARY_FILE, CheckpointError
from t5x_lite.cli.main import main
from t5x_lite.config import ConfigError, ExperimentConfig, load_experiment
from t5x_lite.data import SentencePieceVocabulary, addition, train_vocabulary
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


def _digests(path: str) -> dict[str, str]:
  return {os.path.relpath(os.path.join(root, name), path):
          hashlib.sha256(open(os.path.join(root, name), "rb").read()).hexdigest()
          for root, _, names in os.walk(path) for name in names}


def test_init_from_with_a_vocabulary_of_another_size_names_the_checkpoints(tmp_path):
  """A checkpoint's embedding has its vocabulary's size: fine-tuning it with a larger vocabulary
  is refused naming both, before anything is written, and the checkpoint is left as it was."""
  source = str(tmp_path / "pretrained")
  recorded = tmp_path / "pretrained.model"
  recorded.write_bytes(b"the pretraining run's vocabulary")
  model = config_lib.tiny(vocab_size=128)
  shapes, _ = model_lib.abstract_params(model)
  params = jax.tree.map(lambda x: np.full(x.shape, 0.5, x.dtype), shapes)
  checkpoints.save_params(source, params, ExperimentConfig(model=model), vocabulary_path=str(recorded))
  words = ["".join(chr(97 + (i * 7 + j * i) % 26) for j in range(3 + i % 5)) for i in range(3000)]
  other = train_vocabulary([" ".join(words[i:i + 12]) for i in range(0, 3000, 12)],
                           str(tmp_path / "other"), 320)  # 320 + 100 ids: vocab_size 512.
  before = _digests(source)
  expected = (
      f"checkpoint.init_from='{source}' (step 0) was trained with vocab_size 128 (vocabulary "
      f"{recorded}); this run has vocab_size {SentencePieceVocabulary(other).vocab_size}. Use the same vocabulary "
      f"as the checkpoint (--set data.vocabulary={recorded} model.vocab_size=128, or drop the "
      "settings that changed them), or start a new workdir to train with the new vocabulary from "
      "scratch.")
  config = load_experiment(EXPERIMENT, [f"checkpoint.init_from={source}", f"data.vocabulary={other}",
                                        *SETTINGS])
  for workdir in (tmp_path / "new", tmp_path / "given"):
    if workdir.name == "given":
      workdir.mkdir()
    with pytest.raises(ConfigError) as error:
      train(config, str(workdir), devices=jax.devices()[:1])
    assert str(error.value) == expected
  assert not (tmp_path / "new").exists()
  assert VOCABULARY_FILE not in os.listdir(tmp_path / "given")
  assert _digests(source) == before
  on_one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=on_one), shapes)
  restored = checkpoints.restore_params(source, abstract)
  assert all(np.all(np.asarray(x) == 0.5) for x in jax.tree.leaves(restored))
