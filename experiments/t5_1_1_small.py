"""T5.1.1-small: the base pretraining recipe (t5_1_1_base.py) at the small size."""

from t5_1_1_base import get_config as base_config

from t5x_lite.config import t5_1_1


def get_config():
  config = base_config()
  config.model = t5_1_1("small")
  config.model.scan_layers = True
  config.model.remat_policy = "minimal"  # b256 on one H100: 28.2 GiB of scratch (T5X's network: 53.2)

  return config
