"""The training loop: learning, determinism, NaN handling, resuming and what it refuses."""

import glob
import logging
import os
import shutil

import jax
import pytest
from helpers import TINY_EXPERIMENT, TINY_SETTINGS, TINY_STEPS

from t5x_lite import checkpoints
from t5x_lite import config as config_lib
from t5x_lite import metrics as metrics_lib
from t5x_lite.training import loop, resume


def _tiny_run(workdir, *overrides):
  config = config_lib.load_experiment(TINY_EXPERIMENT, [
      "train.steps=30", "train.log_every=5", "train.eval_every=30", "train.batch_size=16",
      "data.inputs_length=64", "data.targets_length=16", "data.vocab_train_size=500",
      "data.max_eval_examples=8", "checkpoint.every_steps=30", *overrides])
  return loop.train(config, str(workdir), devices=jax.devices()[:1])


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
    loop.train(config, workdir, devices=jax.devices()[:1])
  assert open(os.path.join(workdir, "config.json")).read() == saved_config


def test_a_run_already_done_keeps_its_configuration(tiny_run, tmp_path, caplog):
  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run, workdir)
  saved_config = open(os.path.join(workdir, "config.json")).read()
  config = config_lib.load_experiment(TINY_EXPERIMENT, [*TINY_SETTINGS, "train.steps=5"])
  with caplog.at_level(logging.INFO, logger=resume.logger.name):
    result = loop.train(config, workdir, devices=jax.devices()[:1])
  assert result.step == TINY_STEPS and not result.validation and not result.preempted
  assert open(os.path.join(workdir, "config.json")).read() == saved_config
  # Settings other than the architecture may change on resume; they are listed.
  assert f"with changed settings: train.steps {TINY_STEPS} -> 5." in caplog.text


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
    loop.train(config, str(workdir), devices=jax.devices()[:2])
  assert not data_dir.exists() and not workdir.exists()


def _train_losses(workdir):
  return [r["loss"] for r in metrics_lib.read_metrics(str(workdir)) if r["split"] == "train"]


def test_short_run_learns_and_is_deterministic(tmp_path):
  result = _tiny_run(tmp_path / "a")
  losses = _train_losses(tmp_path / "a")
  assert len(losses) == 6
  assert losses[-1] < losses[0] - 0.5
  validation = result.validation
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
  with pytest.raises(loop.TrainingError, match=r"param_norm is (nan|inf) by step 3 .* stopping "
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
    loop.train(config, workdir, devices=jax.devices()[:1])


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
    resume.check_same_stream(meta, loader, config, "runs/a")


def test_a_second_job_on_the_same_workdir_is_refused(tiny_run, tmp_path):
  workdir, config = _resumable_copy(tiny_run, tmp_path)
  with loop._only_run_in(workdir):  # pylint: disable=protected-access  (the first job)
    with pytest.raises(config_lib.ConfigError, match=r"run is being trained by another `t5x-lite "
                                                     r"train` \(pid \d+ on "):
      loop.train(config, workdir, devices=jax.devices()[:1])


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
    loop.train(config, workdir, devices=jax.devices()[:1])
  assert checkpoints.all_steps(workdir) == [10, TINY_STEPS]


def test_a_workdir_that_is_a_file_or_under_one_is_refused_before_any_work(tmp_path, capsys):
  from t5x_lite.cli.main import main
  (tmp_path / "file").write_text("keep me")
  for workdir in (tmp_path / "file", tmp_path / "file" / "run"):
    assert main(["train", TINY_EXPERIMENT, "--workdir", str(workdir),
                 *(f"--set={s}" for s in TINY_SETTINGS)]) == 2
    assert "give a directory path" in capsys.readouterr().err
  assert (tmp_path / "file").read_text() == "keep me"


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_new_workdir(tmp_path):
  bad = ("train.steps=2", "checkpoint.every_steps=1", "optimizer.learning_rate=1e39")
  with pytest.raises(loop.TrainingError):
    _tiny_run(tmp_path / "new", *bad)
  assert not (tmp_path / "new").exists()
  (tmp_path / "given").mkdir()
  (tmp_path / "given" / "notes.txt").write_text("mine")
  with pytest.raises(loop.TrainingError):
    _tiny_run(tmp_path / "given", *bad)
  assert (tmp_path / "given" / "notes.txt").read_text() == "mine"


def test_resuming_with_data_vocabulary_set_to_another_file_is_refused(tiny_run, tmp_path):
  workdir, config = _resumable_copy(tiny_run, tmp_path)
  other = tmp_path / "other.model"
  other.write_bytes(b"not the run's")
  config.data.vocabulary = str(other)
  with pytest.raises(config_lib.ConfigError, match=r"trained with its own vocabulary.model; "
                                                   r"data.vocabulary=.*other.model' is another file"):
    loop.resolve_vocabulary(config, workdir)
  config.data.vocabulary = os.path.join(workdir, "vocabulary.model")  # Its own: fine.
  assert loop.resolve_vocabulary(config, workdir).vocab_size == config.model.vocab_size
