"""T5.1.1-base pretrained with span corruption on C4 at T5's settings (docs/reference.md):
512 inputs / 114 targets, packed, Adafactor with 1/sqrt(max(step, 10000)), z-loss 1e-4.

Needs C4 as a TFDS array_record dataset (tfds build c4/en --file_format=array_record)
under data.data_dir. data.vocabulary may point to T5's 32000-piece SentencePiece model;
left empty, a 32000-piece vocabulary is trained on the training split and cached."""

from t5x_lite.config import (
  CheckpointConfig,
  DataConfig,
  ExperimentConfig,
  MeshConfig,
  OptimizerConfig,
  TrainConfig,
  t5_1_1,
)


def get_config() -> ExperimentConfig:
  model = t5_1_1("base")
  model.scan_layers = True
  # Norms and activation functions recomputed, no matmul: 128 rows per 80 GB GPU keep 34.2
  # GiB of scratch, 0.60x T5X's network (57.1), 35.1 GiB in all; "none" keeps 40.8 (`t5x-lite
  # info --target h100 --set train.batch_size=128`, docs/performance.md).
  model.remat_policy = "minimal"
  return ExperimentConfig(
      model=model,
      data=DataConfig(dataset="c4/en:3.1.0", text_feature="text", vocabulary="",
                      vocab_train_size=32000, objective="span_corruption",
                      inputs_length=512, targets_length=114, pack=True),
      optimizer=OptimizerConfig(name="adafactor", schedule="rsqrt", learning_rate=1.0,
                                warmup_steps=10000),
      train=TrainConfig(steps=524288, batch_size=256, eval_every=5000,
                        log_every=100, z_loss=1e-4),
      mesh=MeshConfig(axes=("data", "model"), shape=(-1, 1), rules_preset="data_parallel"),
      checkpoint=CheckpointConfig(every_steps=5000, keep=3),
  )
