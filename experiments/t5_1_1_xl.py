"""T5.1.1-xl: the base pretraining recipe (t5_1_1_base.py) at the xl size."""

from t5_1_1_base import get_config as base_config

from t5x_lite.config import t5_1_1


def get_config():
  config = base_config()
  config.model = t5_1_1("xl")
  config.model.scan_layers = True
  # b64 on one H100: 20 GiB kept plus 10.6 GiB of state ("dots_no_batch": 57 GiB).
  config.model.remat_policy = "full"
  config.mesh.rules_preset = "fsdp"
  return config
