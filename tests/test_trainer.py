"""The training loop: gradient accumulation, learning, determinism, NaN handling."""

import jax
import numpy as np
import pytest

from t5x_lite import checkpoints
from t5x_lite import config as config_lib
from t5x_lite import metrics as metrics_lib
from t5x_lite import trainer
from helpers import random_batch, relative_difference, tiny_model


def _step_config(grad_accum_steps: int) -> config_lib.ExperimentConfig:
  return config_lib.validate(config_lib.ExperimentConfig(
      model=tiny_model(vocab_size=128, dropout_rate=0.0),
      data=config_lib.DataConfig(inputs_length=16, targets_length=8),
      optimizer=config_lib.OptimizerConfig(name="adamw", schedule="constant", learning_rate=1e-2,
                                           warmup_steps=0),
      train=config_lib.TrainConfig(steps=10, batch_size=8, grad_accum_steps=grad_accum_steps),
      mesh=config_lib.MeshConfig(shape=(1, 1))))


def test_gradient_accumulation_matches_full_batch():
  batch = random_batch(np.random.default_rng(0), 8, 16, 8, 128, segments=2)
  # Uneven token counts per microbatch: normalisation must be over the whole batch.
  batch["decoder_loss_weights"][:2] = 0.0
  results = []
  for accum in (1, 4):
    setup = trainer.make_setup(_step_config(accum), jax.devices()[:1])
    state = trainer.init_state(setup, seed=0)
    state, metrics = trainer.make_train_step(setup)(state, trainer.to_global(batch, setup.batch_sharding))
    results.append((jax.device_get(state.params), float(metrics["loss"])))
  (full_params, full_loss), (accum_params, accum_loss) = results
  assert abs(full_loss - accum_loss) / full_loss < 1e-5
  for a, b in zip(jax.tree.leaves(accum_params), jax.tree.leaves(full_params)):
    assert relative_difference(a, b) < 1e-5


def _tiny_run(workdir, *overrides):
  config = config_lib.load_experiment("experiments/tiny_python_docs.py", [
      "train.steps=30", "train.log_every=5", "train.eval_every=30", "train.batch_size=16",
      "data.inputs_length=64", "data.targets_length=16", "data.vocab_train_size=500",
      "data.max_eval_examples=8", "checkpoint.every_steps=30", *overrides])
  return trainer.train(config, str(workdir), devices=jax.devices()[:1])


def _train_losses(workdir):
  return [r["loss"] for r in metrics_lib.read_metrics(str(workdir)) if r["split"] == "train"]


def test_short_run_learns_and_is_deterministic(tmp_path):
  result = _tiny_run(tmp_path / "a")
  losses = _train_losses(tmp_path / "a")
  assert len(losses) == 6
  assert losses[-1] < losses[0] - 0.5
  validation = result["validation"]
  assert validation["loss"] < validation["unigram_entropy"]
  records = metrics_lib.read_metrics(str(tmp_path / "a"))
  for key in ("loss", "z_loss", "accuracy", "learning_rate", "grad_norm", "param_norm", "seq_per_s",
              "tokens_per_s"):
    assert key in records[0]
  assert {r["split"] for r in records} == {"train", "validation"}
  assert (tmp_path / "a" / "config.json").exists() and (tmp_path / "a" / "tensorboard").is_dir()
  _tiny_run(tmp_path / "b")
  assert _train_losses(tmp_path / "b") == losses


def test_nan_loss_stops_with_the_step(tmp_path):
  # The loss of step 1 is that of the initial parameters; the first update ruins them.
  # Saving every step, the NaN is caught before it is saved, not only at log steps.
  with pytest.raises(trainer.TrainingError, match=r"loss is nan at step 2"):
    _tiny_run(tmp_path, "optimizer.learning_rate=1e30", "optimizer.clipping_threshold=0",
              "checkpoint.every_steps=1")
  # What was saved before the failure is intact.
  assert checkpoints.latest_step(str(tmp_path)) == 1
