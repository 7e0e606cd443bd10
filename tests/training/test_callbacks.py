"""t5x_lite.train from Python: callbacks see every logged step, evaluation and checkpoint;
the caller's config is never changed, and the same config trains the same way twice."""

import copy
import logging
import os

import jax
import numpy as np
from helpers import TINY_EXPERIMENT, TINY_SETTINGS

import t5x_lite
from t5x_lite.training.callbacks import Callback

SETTINGS = TINY_SETTINGS + ["train.steps=6", "train.log_every=2", "train.eval_every=3",
                            "checkpoint.every_steps=3", "data.max_eval_examples=8"]


class Recorder(Callback):
  def __init__(self):
    self.events = []

  def on_train_begin(self, step, total_steps):
    self.events.append(("begin", step, total_steps))

  def on_log(self, step, metrics):
    self.events.append(("log", step, sorted(metrics)))

  def on_eval(self, step, metrics):
    self.events.append(("eval", step, metrics["loss"]))

  def on_checkpoint(self, step, path):
    self.events.append(("checkpoint", step, path))

  def on_train_end(self, result):
    self.events.append(("end", result.step))


def test_train_reports_through_callbacks_and_logging_never_mutates_and_repeats(tmp_path, caplog):
  config = t5x_lite.load_experiment(TINY_EXPERIMENT, SETTINGS)
  untouched = copy.deepcopy(config)
  recorder = Recorder()
  with caplog.at_level(logging.INFO, logger="t5x_lite"):
    first = t5x_lite.train(config, tmp_path / "one", callbacks=[recorder],
                           devices=jax.devices()[:1])
  assert config == untouched  # The caller's object: vocab_size, data_dir, dropout unresolved.
  assert first.config.model.vocab_size is not None and first.config is not config
  kinds = [(event[0], event[1]) for event in recorder.events]
  assert kinds == [("begin", 0), ("log", 2), ("eval", 3), ("checkpoint", 3), ("log", 4),
                   ("log", 6), ("eval", 6), ("checkpoint", 6), ("end", 6)]
  assert "seq_per_s" in recorder.events[1][2] and "loss" in recorder.events[1][2]
  assert recorder.events[-2][2] == first.checkpoint == str(tmp_path / "one" / "checkpoints" / "6")
  assert os.path.isdir(first.checkpoint) and not first.preempted and first.step == 6
  assert first.validation["loss"] == recorder.events[-3][2]
  assert any("step 3: validation loss" in r.getMessage() for r in caplog.records)

  second = t5x_lite.train(config, tmp_path / "two", devices=jax.devices()[:1])
  assert config == untouched
  assert second.train["loss"] == first.train["loss"]
  assert second.validation == first.validation
  one, two = (t5x_lite.load(tmp_path / name) for name in ("one", "two"))
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_train_validates_the_config_first(tmp_path):
  config = t5x_lite.load_experiment(TINY_EXPERIMENT, SETTINGS)
  config.data.noise_density = 1.5
  try:
    t5x_lite.train(config, tmp_path / "run")
  except t5x_lite.ConfigError as e:
    assert "data.noise_density=1.5" in str(e)
  else:
    raise AssertionError("an invalid config trained")
  assert not (tmp_path / "run").exists()
