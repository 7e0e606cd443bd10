"""T5.1.1-xxl: the base pretraining recipe (t5_1_1_base.py) at the xxl size."""

from t5_1_1_base import get_config as base_config

from t5x_lite.config import t5_1_1


def get_config():
  config = base_config()
  config.model = t5_1_1("xxl")
  config.model.scan_layers = True
  config.model.remat_policy = "full"
  # 2-D: heads, mlp and vocab over 8-way model parallelism, parameters over data too.
  config.mesh.shape = (-1, 8)
  config.mesh.rules_preset = "2d"
  return config
