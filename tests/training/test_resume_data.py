"""Resuming checks the data: a checkpoint records its dataset's fingerprint, and a run resumed
after the train split was replaced (`import-text --overwrite`) is refused, naming what changed."""

import contextlib
import copy
import json
import logging
import os
import shutil

import jax
import pytest
from helpers import TINY_EXPERIMENT

from t5x_lite import checkpoints
from t5x_lite import config as config_lib
from t5x_lite.cli.main import main
from t5x_lite.data import sources, text_to_tfds
from t5x_lite.training import loop, resume

STEPS = 2


def _text(topics: int, *, rename: str = "") -> str:
  """Real prose for a vocabulary: the first `topics` of Python's documentation topics."""
  from pydoc_data import topics as pydoc_topics
  text = "\n\n".join(pydoc_topics.topics[name] for name in sorted(pydoc_topics.topics)[:topics])
  return text.replace("the ", rename) if rename else text


def _import(data_dir: str, text: str, *, overwrite: bool = False, cli: bool = False) -> None:
  """Dataset "book" from `text`, through `t5x-lite import-text` if `cli` (which sends the
  library's log to the terminal for the rest of the test: caplog sees nothing after it)."""
  path = os.path.join(data_dir, "book.txt")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  if cli:
    assert main(["import-text", path, "--name", "book", "--data-dir", data_dir,
                 "--validation-fraction", "0.1", *(["--overwrite"] if overwrite else [])]) == 0
  else:
    text_to_tfds.convert_text([path], "book", data_dir, validation_fraction=0.1, overwrite=overwrite)


def _config(data_dir: str, steps: int) -> config_lib.ExperimentConfig:
  return config_lib.load_experiment(TINY_EXPERIMENT, [
      "data.dataset=book", f"data.data_dir={data_dir}", "data.vocab_train_size=400",
      "data.inputs_length=32", "data.targets_length=8", "data.max_eval_examples=4",
      f"train.steps={steps}", "train.batch_size=4", "train.log_every=1", f"train.eval_every={STEPS}",
      f"checkpoint.every_steps={STEPS}"])


def _train(data_dir: str, workdir: str, steps: int) -> loop.TrainResult:
  return loop.train(_config(data_dir, steps), workdir, devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(data_dir, workdir): STEPS steps trained on dataset "book", imported from _text(30)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  _import(data_dir, _text(30))
  workdir = str(tmp_path_factory.mktemp("run") / "run")
  _train(data_dir, workdir, STEPS)
  return data_dir, workdir


@contextlib.contextmanager
def _replaced(data_dir: str, text: str, cli: bool = False):
  """Dataset "book" re-imported from `text` meanwhile, then put back as the run's (the import
  is deterministic: the same text gives the same files)."""
  _import(data_dir, text, overwrite=True, cli=cli)
  try:
    yield
  finally:
    _import(data_dir, _text(30), overwrite=True)


def _files(workdir: str) -> dict:
  """Every file's bytes and modification time. train.lock's time is left out: each job writes
  its own id there (the same bytes, in this process) before it looks at anything."""
  found = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, workdir)] = (
            f.read(), None if name == "train.lock" else os.stat(path).st_mtime_ns)
  return found


def _copy(workdir: str, tmp_path) -> str:
  copied = str(tmp_path / "run")
  shutil.copytree(workdir, copied)
  return copied


def test_resuming_on_the_same_data_goes_on_and_records_it(run, tmp_path, caplog):
  data_dir, trained = run
  workdir = _copy(trained, tmp_path)
  with caplog.at_level(logging.WARNING, logger="t5x_lite"):
    assert _train(data_dir, workdir, 2 * STEPS).step == 2 * STEPS
  assert not caplog.records
  saved = checkpoints.read_meta(workdir, STEPS)["dataset"]
  assert checkpoints.read_meta(workdir, 2 * STEPS)["dataset"] == saved
  assert saved["dataset"] == "book" and saved["train_split"]["split"] == "train"
  assert saved["train_split"]["examples"] > 0 and len(saved["train_split"]["records_digest"]) == 64


def test_resuming_after_import_text_overwrite_is_refused_and_changes_nothing(run, tmp_path):
  data_dir, trained = run
  workdir = _copy(trained, tmp_path)
  before = checkpoints.read_meta(workdir, STEPS)["dataset"]["train_split"]
  files = _files(workdir)
  with _replaced(data_dir, _text(45), cli=True):
    now = sources.fingerprint(_config(data_dir, STEPS).data)["train_split"]
    assert now["examples"] != before["examples"]
    version_dir = os.path.join(data_dir, "book", "1.0.0")
    expected = (
        f"{workdir} was trained up to step {STEPS} on dataset 'book' ({version_dir}), whose data "
        f"has changed since: train split 'train': {before['examples']:,} examples in 1 shard "
        f"({before['num_bytes']:,} bytes) when step {STEPS} was saved, now {now['examples']:,} in 1 "
        f"shard ({now['num_bytes']:,} bytes) (dataset_info.json changed; its shard files' sizes "
        "changed; its records changed). Resuming would go on with other data where the old "
        "stopped. To resume, put back the dataset the run was trained on; to train on the new data "
        f"from these parameters, use a new workdir with --set checkpoint.init_from={workdir} "
        "(parameters only: the optimizer state and the data position start afresh).")
    if now["shard_bytes"] == before["shard_bytes"]:  # Shards are written in blocks.
      expected = expected.replace(" its shard files' sizes changed;", "")
    with pytest.raises(config_lib.ConfigError) as refused:
      _train(data_dir, workdir, 2 * STEPS)
    assert str(refused.value) == expected
    assert _files(workdir) == files


def test_a_checkpoint_saved_without_a_fingerprint_resumes_as_before(run, tmp_path):
  """Checkpoints from before fingerprints were recorded say nothing to compare with."""
  data_dir, trained = run
  workdir = _copy(trained, tmp_path)
  meta_file = os.path.join(workdir, "checkpoints", str(STEPS), "meta", "metadata")
  with open(meta_file, encoding="utf-8") as f:
    meta = json.load(f)
  del meta["dataset"]
  with open(meta_file, "w", encoding="utf-8") as f:
    json.dump(meta, f)
  assert "dataset" not in checkpoints.read_meta(workdir, STEPS)
  with _replaced(data_dir, _text(45)):
    assert _train(data_dir, workdir, 2 * STEPS).step == 2 * STEPS
    assert checkpoints.read_meta(workdir, 2 * STEPS)["dataset"]["train_split"]["examples"] > 0


def test_text_of_the_same_length_changes_the_fingerprint_and_a_changed_eval_split_warns(
    tmp_path, caplog):
  """No training: the fingerprints of re-imports, compared as a resumed run does."""
  data_dir = str(tmp_path)
  data = _config(data_dir, STEPS).data
  _import(data_dir, _text(10))
  first = sources.fingerprint(data)
  _import(data_dir, _text(10), overwrite=True)
  assert sources.fingerprint(data) == first  # The same text: the same dataset.
  _import(data_dir, _text(10, rename="thx "), overwrite=True)  # Same lengths, other text.
  same_length = sources.fingerprint(data)
  assert same_length["train_split"]["num_bytes"] == first["train_split"]["num_bytes"]
  meta = {"step": 7, "dataset": first}
  with pytest.raises(config_lib.ConfigError, match=r"train split 'train': [\d,]+ examples in 1 shard "
                                                   r"\([\d,]+ bytes\) when step 7 was saved, now the "
                                                   r"same counts \((its shard files' sizes changed; )?"
                                                   r"its records changed\)\."):
    resume.check_same_data(meta, same_length, "runs/a")
  eval_only = copy.deepcopy(first)
  eval_only["eval_split"]["examples"] += 1
  eval_only["dataset_info_sha256"] = "0" * 64
  with caplog.at_level(logging.WARNING, logger="t5x_lite"):
    resume.check_same_data(meta, eval_only, "runs/a")
  assert [r.getMessage() for r in caplog.records] == [
      f"Resuming runs/a at step 7 on dataset 'book' ({first['path']}), whose data has changed "
      f"since: eval split 'validation': {first['eval_split']['examples']:,} examples in 1 shard "
      f"({first['eval_split']['num_bytes']:,} bytes) when step 7 was saved, now "
      f"{first['eval_split']['examples'] + 1:,} in 1 shard ({first['eval_split']['num_bytes']:,} "
      "bytes) (dataset_info.json changed); validation metrics from here on are not comparable with "
      "earlier ones."]
  resume.check_same_data({"step": 7}, same_length, "runs/a")  # Nothing recorded: nothing to say.
