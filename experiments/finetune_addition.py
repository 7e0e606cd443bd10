"""Fine-tunes the tiny_python_docs model on the built-in addition task ("add 23 and 58" -> "81").

Start from a pretraining run with --set checkpoint.init_from=PRETRAIN_WORKDIR: its parameters
and vocabulary are taken, the optimizer starts fresh, and dropout is 0.1 (the default when
fine-tuning). `t5x-lite eval` then reports exact match on the 972 held-out sums, about a
tenth of the 10,000 (about 1% by blind guessing).
"""

import dataclasses

import tiny_python_docs

from t5x_lite.config import CheckpointConfig, ExperimentConfig, OptimizerConfig


def get_config() -> ExperimentConfig:
  config = tiny_python_docs.get_config()
  config.name = "finetune_addition"
  config.data = dataclasses.replace(
      config.data, dataset="addition", objective="seq2seq", inputs_length=16, targets_length=8,
      max_eval_examples=None, eval_metrics=("exact_match",))
  config.optimizer = OptimizerConfig(name="adafactor", schedule="constant", learning_rate=0.01,
                                     warmup_steps=100)
  config.train = dataclasses.replace(config.train, steps=1000, batch_size=64, eval_every=250,
                                     log_every=25)
  config.checkpoint = CheckpointConfig(every_steps=500, keep=2, keep_best_metric="exact_match")
  return config
