"""A tiny T5.1.1-style model pretrained with span corruption on the built-in
Python-docs corpus: minutes on a laptop CPU, no downloads. The README's main job."""

from t5x_lite.config import (
  CheckpointConfig,
  DataConfig,
  ExperimentConfig,
  MeshConfig,
  OptimizerConfig,
  TrainConfig,
  tiny,
)


def get_config() -> ExperimentConfig:
  return ExperimentConfig(
      model=tiny(),  # vocab_size None: taken from the trained vocabulary
      data=DataConfig(
          dataset="python_docs", vocab_train_size=1000, objective="span_corruption",
          inputs_length=128, targets_length=32, pack=True, max_eval_examples=512),
      optimizer=OptimizerConfig(name="adafactor", schedule="rsqrt", learning_rate=1.0,
                                warmup_steps=1000),
      train=TrainConfig(steps=1500, batch_size=32, seed=0, eval_every=250,
                        log_every=25),
      mesh=MeshConfig(axes=("data", "model"), shape=(-1, 1), rules_preset="data_parallel"),
      checkpoint=CheckpointConfig(every_steps=500, keep=2),
  )
