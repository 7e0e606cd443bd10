"""The training loop: gradient accumulation, the chunked loss, learning, determinism, NaN handling,
resuming."""

import functools
import glob
import os
import shutil

import jax
import numpy as np
import pytest

from t5x_lite import checkpoints, losses
from t5x_lite import config as config_lib
from t5x_lite import metrics as metrics_lib
from t5x_lite import model as model_lib
from t5x_lite import trainer
from helpers import (TINY_EXPERIMENT, TINY_SETTINGS, TINY_STEPS, random_batch, relative_difference,
                     tiny_model)


def _step_config(**train_changes) -> config_lib.ExperimentConfig:
  return config_lib.validate(config_lib.ExperimentConfig(
      model=tiny_model(vocab_size=128, dropout_rate=0.0),
      data=config_lib.DataConfig(inputs_length=16, targets_length=8),
      optimizer=config_lib.OptimizerConfig(name="adamw", schedule="constant", learning_rate=1e-2,
                                           warmup_steps=0),
      train=config_lib.TrainConfig(steps=10, batch_size=8, **train_changes),
      mesh=config_lib.MeshConfig(shape=(1, 1))))


def _one_step(config, batch):
  """(params after one update, train loss, eval sums of the initial params)."""
  setup = trainer.make_setup(config, jax.devices()[:1])
  state = trainer.init_state(setup, seed=0)
  global_batch = trainer.to_global(batch, setup.batch_sharding)
  eval_sums = jax.device_get(trainer.make_eval_step(setup)(state.params, global_batch))
  state, metrics = trainer.make_train_step(setup)(state, global_batch)
  return jax.device_get(state.params), float(metrics["loss"]), eval_sums


@pytest.mark.parametrize("changes", [{"grad_accum_steps": 4}, {"loss_chunk_size": 2}])
def test_step_variants_give_the_full_batch_update(changes, monkeypatch):
  """Gradient accumulation and the chunked loss change memory, never the update."""
  chunked_calls = []
  chunked = losses.chunked_output_sums
  monkeypatch.setattr(losses, "chunked_output_sums",
                      lambda *args, **kwargs: chunked_calls.append(1) or chunked(*args, **kwargs))
  batch = random_batch(np.random.default_rng(0), 8, 16, 8, 128, segments=2)
  # Uneven token counts per microbatch: normalisation must be over the whole batch.
  batch["decoder_loss_weights"][:2] = 0.0
  full_params, full_loss, full_eval = _one_step(_step_config(), batch)
  params, loss, eval_sums = _one_step(_step_config(**changes), batch)
  assert abs(full_loss - loss) / full_loss < 1e-5
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(full_params)):
    assert relative_difference(a, b) < 1e-5
  for key, value in full_eval.items():
    assert float(eval_sums[key]) == pytest.approx(float(value), rel=1e-5), key
  assert len(chunked_calls) == (2 if "loss_chunk_size" in changes else 0)  # train and eval steps


def _tiny_run(workdir, *overrides):
  config = config_lib.load_experiment("experiments/tiny_python_docs.py", [
      "train.steps=30", "train.log_every=5", "train.eval_every=30", "train.batch_size=16",
      "data.inputs_length=64", "data.targets_length=16", "data.vocab_train_size=500",
      "data.max_eval_examples=8", "checkpoint.every_steps=30", *overrides])
  return trainer.train(config, str(workdir), devices=jax.devices()[:1])


def test_resuming_as_another_architecture_is_refused(tiny_run, tmp_path):
  """Resuming with --set model.X changed would train the checkpoint as another model."""
  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run, workdir)
  saved_config = open(os.path.join(workdir, "config.json")).read()
  config = config_lib.load_experiment(TINY_EXPERIMENT, [
      *TINY_SETTINGS, f"train.steps={TINY_STEPS + 10}", "model.ffn_activation=swiglu",
      "model.dropout_rate=0.2"])  # A training-time setting: free to change.
  with pytest.raises(config_lib.ConfigError,
                     match=r"model\.ffn_activation: saved '[\w-]+', now 'swiglu'\)"):
    trainer.train(config, workdir, devices=jax.devices()[:1])
  assert open(os.path.join(workdir, "config.json")).read() == saved_config


def test_a_run_already_done_keeps_its_configuration(tiny_run, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run, workdir)
  saved_config = open(os.path.join(workdir, "config.json")).read()
  config = config_lib.load_experiment(TINY_EXPERIMENT, [*TINY_SETTINGS, "train.steps=5"])
  result = trainer.train(config, workdir, devices=jax.devices()[:1])
  assert result["step"] == TINY_STEPS and not result["validation"] and not result["preempted"]
  assert open(os.path.join(workdir, "config.json")).read() == saved_config
  # Settings other than the architecture may change on resume; they are listed.
  assert f"with changed settings: train.steps {TINY_STEPS} -> 5." in capsys.readouterr().out


@pytest.mark.parametrize("mesh,expected", [
    (["mesh.shape=(3, 1)"], "mesh"),
    (["mesh.shape=(1, 2)", "mesh.rules_preset=model_parallel", "model.num_heads=3"],
     r"dimension 0 \(heads\) of size 3, which .* split 2 ways"),
])
def test_a_mesh_that_cannot_run_fails_before_any_data_work(tmp_path, mesh, expected):
  """The dataset build and vocabulary training (long for C4) come after the mesh, batch and
  parameter layout checks."""
  data_dir, workdir = tmp_path / "tfds", tmp_path / "run"
  config = config_lib.load_experiment(TINY_EXPERIMENT, [
      *TINY_SETTINGS, *mesh, f"data.data_dir={data_dir}"])
  with pytest.raises(config_lib.ConfigError, match=expected):
    trainer.train(config, str(workdir), devices=jax.devices()[:2])
  assert not data_dir.exists() and not workdir.exists()


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


def test_non_finite_parameters_are_never_saved(tmp_path):
  """The loss of a step is that of the parameters before its update: the update that ruins
  them is caught by their norm, before the save (which, keeping one, would delete the last
  good checkpoint)."""
  _tiny_run(tmp_path, "train.steps=2", "checkpoint.every_steps=1", "checkpoint.keep=1")
  with pytest.raises(trainer.TrainingError, match=r"param_norm is (nan|inf) by step 3 .* stopping "
                                                  r"without saving it"):
    _tiny_run(tmp_path, "train.steps=4", "checkpoint.every_steps=1", "checkpoint.keep=1",
              "optimizer.learning_rate=1e39")  # inf in float32
  assert checkpoints.all_steps(str(tmp_path)) == [2]  # What was saved before is intact.


def _resumable_copy(tiny_run, tmp_path, *overrides):
  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run, workdir)
  return workdir, config_lib.load_experiment(
      TINY_EXPERIMENT, [*TINY_SETTINGS, f"train.steps={TINY_STEPS + 10}", *overrides])


def test_resuming_with_another_number_of_data_shards_is_refused(tiny_run, tmp_path):
  workdir, config = _resumable_copy(tiny_run, tmp_path, "data.shards=2")
  with pytest.raises(config_lib.ConfigError, match=r"trained with its data stream in 1 shard\(s\) .* "
                                                   r"would read 2, .* --set data.shards=1"):
    trainer.train(config, workdir, devices=jax.devices()[:1])


def test_resuming_with_another_vocabulary_is_refused(tmp_path):
  other = tmp_path / "other.model"
  other.write_bytes(b"another vocabulary")
  meta = {"step": 7, "loader_state": {"shards": [{}]},
          "vocabulary": {"path": "/runs/a/vocabulary.model", "sha256": "0" * 64}}
  config = config_lib.ExperimentConfig()
  config.data.vocabulary = str(other)
  loader = type("OneShard", (), {"shards": 1})()
  with pytest.raises(config_lib.ConfigError, match=r"other.model is not the vocabulary .* trained "
                                                   r"with up to step 7 \(it was /runs/a/vocabulary"):
    trainer.check_same_stream(meta, loader, config, "runs/a")


def test_a_second_job_on_the_same_workdir_is_refused(tiny_run, tmp_path):
  workdir, config = _resumable_copy(tiny_run, tmp_path)
  with trainer._only_run_in(workdir):  # pylint: disable=protected-access  (the first job)
    with pytest.raises(config_lib.ConfigError, match=r"run is being trained by another `t5x-lite "
                                                     r"train` \(pid \d+ on "):
      trainer.train(config, workdir, devices=jax.devices()[:1])


@pytest.mark.parametrize("damage", ["params/*/d/*", "meta", "opt_state"])
def test_a_damaged_checkpoint_says_how_to_go_on(tiny_run, tmp_path, damage):
  """Files of the latest step removed after it was saved: one message, nothing deleted."""
  workdir, config = _resumable_copy(tiny_run, tmp_path)
  latest = os.path.join(workdir, "checkpoints", str(TINY_STEPS))
  for path in glob.glob(os.path.join(latest, damage)):
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  with pytest.raises(checkpoints.CheckpointError,
                     match=rf"Checkpoint step {TINY_STEPS} in .* cannot be read, its files are "
                           rf"damaged or incomplete .*; to go on from step 10, move this one out "
                           rf"of the way: mv .*/checkpoints/{TINY_STEPS} .*/damaged_step_{TINY_STEPS}"):
    trainer.train(config, workdir, devices=jax.devices()[:1])
  assert checkpoints.all_steps(workdir) == [10, TINY_STEPS]


def _forward_sums_and_grads(model, params, batch, loss_chunk_size, packed=True):
  forward = functools.partial(trainer._forward_sums, model, z_loss=1e-2, label_smoothing=0.1,
                              dropout_rng=None, loss_chunk_size=loss_chunk_size, packed=packed)
  grads, sums = jax.jit(jax.grad(forward, has_aux=True))(params, batch)
  return jax.device_get(sums), jax.device_get(grads)


def _assert_same_sums_and_grads(got, want):
  (sums, grads), (want_sums, want_grads) = got, want
  assert sums.keys() == want_sums.keys()
  for key in sums:
    assert float(sums[key]) == pytest.approx(float(want_sums[key]), rel=1e-5), key
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
    assert relative_difference(a, b) < 1e-5


@pytest.mark.parametrize("tie_logits", [False, True])
def test_chunked_loss_matches_plain_train_sums(tie_logits):
  """train.loss_chunk_size gives the step the same sums and gradients (with label
  smoothing and z-loss), only without the full logits."""
  cfg = tiny_model(tie_logits=tie_logits)
  params = model_lib.init_params(cfg, jax.random.key(10))
  batch = random_batch(np.random.default_rng(10), 4, 16, 8, cfg.vocab_size)
  model = model_lib.Transformer(cfg)
  _assert_same_sums_and_grads(_forward_sums_and_grads(model, params, batch, 2),
                              _forward_sums_and_grads(model, params, batch, 0))


@pytest.mark.parametrize("impl", ["xla", "auto"])
def test_unpacked_rows_give_the_packed_sums(impl):
  """data.pack=False leaves segment ids out of the model call (masks become lengths and a
  causal flag); on rows of one example each, loss sums and gradients do not change."""
  cfg = tiny_model(attention_impl=impl)
  params = model_lib.init_params(cfg, jax.random.key(13))
  batch = random_batch(np.random.default_rng(13), 4, 16, 8, cfg.vocab_size, segments=1)
  model = model_lib.Transformer(cfg)
  _assert_same_sums_and_grads(_forward_sums_and_grads(model, params, batch, 0, packed=False),
                              _forward_sums_and_grads(model, params, batch, 0, packed=True))


def test_chunked_loss_matches_plain_when_sharded():
  """On 8 CPU devices, batch over 'data' and vocab over 'model' (2d rules): the chunks keep
  the batch sharding and compute what one device computes without chunks."""
  config = config_lib.validate(config_lib.ExperimentConfig(
      model=tiny_model(), data=config_lib.DataConfig(inputs_length=16, targets_length=8),
      train=config_lib.TrainConfig(batch_size=8, loss_chunk_size=4),
      mesh=config_lib.MeshConfig(shape=(4, 2), rules_preset="2d")))
  setup = trainer.make_setup(config, jax.devices())
  params = model_lib.init_params(config.model, jax.random.key(11))
  batch = random_batch(np.random.default_rng(11), 8, 16, 8, config.model.vocab_size)
  sharded = _forward_sums_and_grads(
      setup.model, jax.device_put(params, setup.state_shardings.params),
      trainer.to_global(batch, setup.batch_sharding), config.train.loss_chunk_size)
  _assert_same_sums_and_grads(
      sharded, _forward_sums_and_grads(model_lib.Transformer(config.model), params, batch, 0))
