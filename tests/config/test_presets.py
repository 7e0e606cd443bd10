"""Model presets: T5.1.1 and T5.1.0 sizes and the tiny model."""

import pytest

from t5x_lite import config as config_lib
from t5x_lite.config import ConfigError


def test_t5_1_1_sizes():
  small, xxl = config_lib.t5_1_1("small"), config_lib.t5_1_1("xxl")
  assert (small.d_model, small.d_ff, small.num_heads, small.num_encoder_layers) == (512, 1024, 6, 8)
  assert (xxl.d_model, xxl.d_ff, xxl.num_heads, xxl.num_decoder_layers) == (4096, 10240, 64, 24)
  assert small.ffn_activation == "gated-gelu" and not small.tie_logits


def test_t5_1_0_is_relu_with_tied_logits():
  base = config_lib.t5_1_0("base")
  assert (base.d_ff, base.ffn_activation, base.tie_logits) == (3072, "relu", True)


@pytest.mark.parametrize("preset,size", [(config_lib.t5_1_1, "huge"), (config_lib.t5_1_0, "xl")])
def test_unknown_size_lists_the_sizes(preset, size):
  with pytest.raises(ConfigError, match=rf"size '{size}'; choose one of \["):
    preset(size)


@pytest.mark.parametrize("name", sorted(config_lib.MODEL_PRESETS))
def test_every_preset_validates(name):
  model = config_lib.MODEL_PRESETS[name]()
  config_lib.validate(config_lib.ExperimentConfig(model=model))
