"""T5.1.1-large: the base pretraining recipe (t5_1_1_base.py) at the large size."""

from t5_1_1_base import get_config as base_config

from t5x_lite.config import t5_1_1


def get_config():
  config = base_config()
  config.model = t5_1_1("large")
  config.model.scan_layers = True
  # Weight matmuls' outputs saved, attention recomputed: b128 on one H100 keeps 52 GiB;
  # "dots" would also keep XLA's attention logits (117 GiB), "minimal" 168 GiB.
  config.model.remat_policy = "dots_no_batch"
  config.mesh.rules_preset = "fsdp"  # parameters and Adafactor state sharded over data
  return config
