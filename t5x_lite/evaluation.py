"""Evaluating a saved run: its configuration fitted to this machine, and a whole split scored.

Only the parameters are restored (no optimizer state), into the shardings of the run's saved
configuration (WORKDIR/config.json, with overrides); a saved mesh that does not fit this
machine falls back to data parallelism over all its devices. Every example of the split is
counted once; seq2seq tasks are also decoded and scored (exact match, BLEU, ROUGE). The CLI
writes results to WORKDIR/eval/step_N_SPLIT.json and TensorBoard (WORKDIR/eval/tensorboard).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh

from t5x_lite import checkpoints, inference, partitioning, text_metrics
from t5x_lite.config import ExperimentConfig, MeshConfig, apply_overrides, load_json, validate
from t5x_lite.data import pipeline
from t5x_lite.data import tasks as tasks_lib
from t5x_lite.data.errors import DataError
from t5x_lite.data.pipeline import eval_tasks, make_eval_loader
from t5x_lite.data.vocabulary import Vocabulary
from t5x_lite.errors import ConfigError
from t5x_lite.fileio import write_atomically
from t5x_lite.metrics import summary_writer
from t5x_lite.training.step import Setup, evaluate, make_eval_step

logger = logging.getLogger(__name__)

EVAL_DIRNAME = "eval"


def fit_to_devices(config: ExperimentConfig, mesh: Optional[Mesh] = None) -> None:
  """Keeps the saved mesh if it fits the devices here, else data parallelism over all of them
  (or takes `mesh` as given); rounds the batch up to what the batch sharding needs (one
  microbatch: no gradients here); swaps cuDNN attention (GPU only) for XLA's elsewhere, as a
  run trained on GPUs may ask."""
  backend = jax.default_backend()
  if config.model.attention_impl == "cudnn" and backend != "gpu":
    logger.warning("model.attention_impl='cudnn' needs a GPU; using 'xla' on %s.", backend)
    config.model.attention_impl = "xla"
  if mesh is None:
    try:
      partitioning.resolve_mesh_shape(config.mesh, jax.device_count())
    except ConfigError as e:
      logger.warning("The saved mesh does not fit this machine (%s); using data parallelism over "
                     "its %d devices instead.", e, jax.device_count())
      config.mesh = MeshConfig()
    mesh = partitioning.make_mesh(config.mesh)
  ways = partitioning.data_axis_size(mesh, partitioning.logical_rules(config.mesh))
  config.train.grad_accum_steps = 1
  config.train.batch_size = -(-config.train.batch_size // ways) * ways


def load_config(workdir: str, overrides: Optional[list[str]] = None) -> ExperimentConfig:
  """WORKDIR/config.json with the overrides applied, its vocabulary the copy kept in WORKDIR
  (which need not exist: a model imported without one)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ConfigError(f"{workdir} has no config.json; pass the --workdir of a `t5x-lite train` run.")
  config = load_json(path)
  config.data.vocabulary = os.path.join(workdir, checkpoints.VOCABULARY_FILE)
  return validate(apply_overrides(config, overrides or []))


def evaluate_tasks(setup: Setup, eval_step, params: Any, vocabulary: Vocabulary
                   ) -> tuple[dict, Optional[text_metrics.Seq2SeqScorer]]:
  """Metrics over every example of data.eval_split once, and the scorer holding the decodes.

  A mixture is evaluated task by task: its metrics are each task's as "TASK/METRIC", and every
  metric's mean over the tasks that report it under its own name (keep_best_metric reads those).
  The scorer returned is the first seq2seq task's.
  """
  config = setup.config
  results, first_scorer = {}, None
  for task in eval_tasks(config):
    scorer = text_metrics.make_scorer(config, vocabulary, task)
    # Closed on errors too, so no prefetch thread outlives the evaluation.
    with contextlib.closing(make_eval_loader(config, vocabulary, jax.process_index(),
                                             jax.process_count(), task=task.name)) as loader:
      metrics = evaluate(setup, eval_step, params, loader, config.model.vocab_size, scorer)
      metrics["examples"] = loader.examples_seen
    if tasks_lib.RANK_CLASSIFICATION in task.metrics:
      metrics.update(rank_classification(setup, params, vocabulary, task))
    results[task.name] = metrics
    first_scorer = first_scorer or scorer
  if len(results) == 1:
    return next(iter(results.values())), first_scorer
  combined = {f"{name}/{key}": value for name, metrics in results.items() for key, value in metrics.items()}
  for key in dict.fromkeys(k for metrics in results.values() for k in metrics):
    values = [metrics[key] for metrics in results.values() if key in metrics]
    counts = ("examples", "target_tokens", "rank_classification_examples")
    combined[key] = sum(values) if key in counts else sum(values) / len(values)
  return combined, first_scorer


def rank_classification(setup: Setup, params: Any, vocabulary: Vocabulary, task: tasks_lib.Task,
                        batch_size: int = 32) -> dict[str, float]:
  """T5's rank classification over data.eval_split (data.max_eval_examples records at most):
  each record's "choices" (after the task's text preprocessors) scored as targets of its
  "inputs" by summed log-likelihood, EOS included; accuracy is the share whose likeliest
  choice is its "targets". {"rank_classification_accuracy": ..., "rank_classification_examples": n}"""
  data = setup.config.data
  source = task.source.open(data.eval_split, data.data_dir)
  count = len(source) if data.max_eval_examples is None else min(len(source), data.max_eval_examples)
  records = [r for r in pipeline.text_records(task, source.records(range(count))) if r is not None]
  for record in records[:1]:
    missing = [key for key in ("inputs", "targets", "choices") if key not in record]
    if missing or isinstance(record["choices"], (str, bytes)) or not len(record["choices"]):
      raise DataError(
          f"Task {task.name!r}: rank_classification needs records with 'inputs', 'targets' and "
          f"'choices' (a non-empty list of target texts, one of them the targets); they have "
          f"{sorted(record)}. Add a preprocessor that makes them.")
  pairs = [(record["inputs"], _text(choice)) for record in records for choice in record["choices"]]
  inputs = inference.with_eos(vocabulary.encode_batch([text for text, _ in pairs]), data.inputs_length)
  targets = inference.with_eos(vocabulary.encode_batch([choice for _, choice in pairs]))
  scores = [float(s.sum()) for s in inference.token_log_probs(
      setup, inference.make_log_probs_fn(setup), params, inputs, targets, batch_size=batch_size)]
  correct, start = 0, 0
  for record in records:
    choices = [_text(choice) for choice in record["choices"]]
    best = int(np.argmax(scores[start:start + len(choices)]))
    correct += choices[best].strip() == _text(record["targets"]).strip()
    start += len(choices)
  return {"rank_classification_accuracy": correct / max(len(records), 1),
          "rank_classification_examples": len(records)}


def _text(value: Any) -> str:
  """A choice as text (a TFDS sequence feature gives bytes)."""
  return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def evaluate_split(setup: Setup, params: Any, vocabulary: Vocabulary,
                   split: str) -> tuple[dict, Optional[text_metrics.Seq2SeqScorer]]:
  """evaluate_tasks on `split`."""
  config = dataclasses.replace(setup.config,
                               data=dataclasses.replace(setup.config.data, eval_split=split))
  return evaluate_tasks(dataclasses.replace(setup, config=config), make_eval_step(setup), params,
                        vocabulary)


def results_path(workdir: str, step: int, split: str) -> str:
  safe_split = re.sub(r"[^\w.-]+", "_", split)  # "validation[:10%]" -> "validation_10_"
  return os.path.join(workdir, EVAL_DIRNAME, f"step_{step}_{safe_split}.json")


def write_results(workdir: str, step: int, split: str, metrics: dict,
                  samples: list[dict[str, str]]) -> str:
  """The JSON file (metrics and decoded samples) and TensorBoard scalars (tag SPLIT/METRIC
  at the checkpoint's step)."""
  path = results_path(workdir, step, split)
  record = {"step": step, "split": split, "metrics": metrics, "samples": samples}
  write_atomically(path, json.dumps(record, indent=2))
  with summary_writer(os.path.join(workdir, EVAL_DIRNAME, "tensorboard")) as writer:
    for name, value in metrics.items():
      writer.add_scalar(f"{split}/{name}", value, step)
  return path


