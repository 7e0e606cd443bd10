"""T5's multi-task pretraining in miniature: span corruption on the Python docs mixed with the
supervised addition task, half of the examples each, the tasks registered here and named by
data.dataset. Evaluation reports each task (docs/loss,
addition/exact_match, ...) and their means.

  t5x-lite train tiny_multitask --workdir runs/multitask
  t5x-lite bench-data --experiment tiny_multitask    # each task's share next to its rate
"""

import dataclasses

import tiny_python_docs

from t5x_lite.config import ExperimentConfig
from t5x_lite.data import DatasetSource, Mixture, Seq2Seq, Task, register_mixture, register_task

register_task(Task("docs", DatasetSource("python_docs")))
register_task(Task("addition", DatasetSource("addition"), Seq2Seq(), metrics=("exact_match",)))
# Fixed rates; RateNumExamples(maximum=..., temperature=...) would follow the tasks' sizes.
register_mixture(Mixture("docs_and_addition", (("docs", 1.0), ("addition", 1.0))))


def get_config() -> ExperimentConfig:
  config = tiny_python_docs.get_config()
  config.name = "tiny_multitask"
  config.data = dataclasses.replace(config.data, dataset="docs_and_addition")
  return config
