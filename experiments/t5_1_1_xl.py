"""T5.1.1-xl: the base pretraining recipe (t5_1_1_base.py) at the xl size."""

from t5_1_1_base import get_config as base_config

from t5x_lite.config import t5_1_1


def get_config():
  config = base_config()
  config.model = t5_1_1("xl")
  config.model.scan_layers = True
  # 64 rows per H100: 17.6 GiB of scratch plus 10.6 GiB of state.
  config.model.remat_policy = "full"
  config.mesh.rules_preset = "fsdp"
  return config
