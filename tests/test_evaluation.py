"""`t5x-lite eval`: every example of the split counted exactly once, padded last batch masked out;
results file and TensorBoard written; a saved mesh that does not fit falls back to data parallel,
cuDNN attention to XLA off GPUs; the loader is stopped when evaluation fails.
"""

import dataclasses
import json
import logging
import os
import threading

import jax
import numpy as np
import pytest
from helpers import TINY_STEPS

from t5x_lite import api, evaluation
from t5x_lite.cli.main import main
from t5x_lite.data import make_eval_loader, pipeline
from t5x_lite.data.objectives import document_examples
from t5x_lite.training.loop import resolve_vocabulary


def direct_count(loader) -> tuple[int, int]:
  """(examples, target tokens) of the loader's split, straight from the source and objective.

  The loader reads one pretraining task, unshuffled, in one pass: in T5's stream its documents are
  concatenated in order and cut into pieces of the objective's raw length (a last shorter piece of
  2 tokens or more makes one more example); otherwise each document is cut on its own.
  """
  (prepared,) = loader.tasks
  task, maker = prepared.task, prepared.maker
  assert maker is not None and not loader.shuffle and loader.shards == 1, "a pretraining eval loader"
  records = prepared.source.records(range(len(prepared.source)))
  docs = [loader.vocabulary.encode(r[task.text_feature]) for r in records]
  task_id = pipeline._task_id(task.name)
  examples = tokens = 0
  if task.concatenate_documents:
    assert all(d.size <= task.max_document_tokens for d in docs), "no document is cut to a random chunk"
    stream = np.concatenate(docs)
    offset = 0
    while stream.size - offset >= 2:
      seed = (loader.seed, task_id, 0, examples)
      length = maker.raw_length(seed)
      _, targets = maker.example(stream[offset:offset + length], seed)
      offset += length
      examples += 1
      tokens += targets.size
  else:
    for doc, doc_tokens in enumerate(docs):
      for _, targets, _, _ in document_examples(maker, doc_tokens, (loader.seed, task_id, 0, doc)):
        examples += 1
        tokens += targets.size
  return examples, tokens


def trainer_records(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_eval_counts_every_example_once(tiny_run, capsys):
  config = evaluation.load_config(tiny_run, ["data.max_eval_examples=None"])
  examples, tokens = direct_count(make_eval_loader(config, resolve_vocabulary(config, tiny_run)))
  # A batch (a multiple of the 8 devices) that leaves a padded, partly empty last batch.
  batch = next(b for b in range(16, 256, 8) if examples % b)
  assert main(["eval", "--workdir", tiny_run, "--step", "10",
               "--set", f"train.batch_size={batch}"]) == 0
  printed = capsys.readouterr().out
  assert "target_tokens" in printed and "step_10_validation.json" in printed
  with open(os.path.join(tiny_run, "eval", "step_10_validation.json")) as f:
    record = json.load(f)
  assert (record["step"], record["split"]) == (10, "validation")
  metrics = record["metrics"]
  assert metrics["examples"] == examples
  assert metrics["target_tokens"] == tokens
  assert np.isclose(metrics["perplexity"], np.exp(metrics["loss"]))
  assert 0 < metrics["accuracy"] < 1
  assert os.listdir(os.path.join(tiny_run, "eval", "tensorboard"))


def test_eval_matches_training_validation(tiny_run):
  """Same step, same examples: evaluating the loaded run reproduces the trainer's validation loss."""
  model = api.load(tiny_run)
  metrics, samples = model.evaluate_with_samples(
      "validation", max_examples=model.config.data.max_eval_examples)
  logged = [r for r in trainer_records(tiny_run) if r["split"] == "validation"][-1]
  assert model.step == logged["step"] == TINY_STEPS and samples == []  # Not decoded: no samples.
  assert np.isclose(metrics["loss"], logged["loss"], rtol=1e-5)
  assert metrics["target_tokens"] == logged["target_tokens"]


def test_mesh_that_does_not_fit_falls_back_to_data_parallel(tiny_run, caplog):
  config = evaluation.load_config(tiny_run, ["mesh.shape=[3,1]", "train.batch_size=12",
                                             "train.grad_accum_steps=2"])
  with caplog.at_level(logging.WARNING, logger=evaluation.logger.name):
    evaluation.fit_to_devices(config)
  assert "does not fit" in caplog.text
  assert config.mesh.shape == (-1, 1) and config.mesh.rules_preset == "data_parallel"
  assert config.train.batch_size % jax.device_count() == 0 and config.train.grad_accum_steps == 1


def test_cudnn_attention_falls_back_to_xla_off_gpu(tiny_run, caplog, monkeypatch):
  """A run trained with cuDNN attention still evaluates on CPU; on a GPU its setting stays."""
  config = evaluation.load_config(tiny_run, ["model.attention_impl=cudnn"])
  with caplog.at_level(logging.WARNING, logger=evaluation.logger.name):
    evaluation.fit_to_devices(config)
  assert config.model.attention_impl == "xla"
  assert "needs a GPU; using 'xla' on cpu" in caplog.text
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  config = evaluation.load_config(tiny_run, ["model.attention_impl=cudnn"])
  evaluation.fit_to_devices(config)
  assert config.model.attention_impl == "cudnn"


def test_an_error_mid_eval_stops_the_loader_thread(tiny_run, monkeypatch):
  config = evaluation.load_config(tiny_run)
  vocabulary = resolve_vocabulary(config, tiny_run)
  before = set(threading.enumerate())
  started = []

  def failing_evaluate(setup, eval_step, params, loader, *args):
    next(loader)
    started.extend(set(threading.enumerate()) - before)
    raise RuntimeError("device lost")

  monkeypatch.setattr(evaluation, "make_eval_step", lambda setup: None)
  monkeypatch.setattr(evaluation, "evaluate", failing_evaluate)
  fake_setup = dataclasses.make_dataclass("FakeSetup", ["config"])(config)
  with pytest.raises(RuntimeError, match="device lost"):
    evaluation.evaluate_split(fake_setup, None, vocabulary, "validation")
  # grain's reading threads are told to stop on close and end a moment later.
  for thread in started:
    thread.join(timeout=10)
  assert started and not any(t.is_alive() for t in started)


def test_eval_of_a_directory_that_is_not_a_run(tmp_path, capsys):
  assert main(["eval", "--workdir", str(tmp_path)]) == 2
  assert "no config.json" in capsys.readouterr().err
