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


# Parameter counts as the papers and model cards publish them: mT5 (Xue et al. 2021), ByT5
# (Xue et al. 2022), Flan-T5 (Chung et al. 2022), UL2 (Tay et al. 2022), T5.1.1.
_PUBLISHED_PARAMETERS = {
    "mt5_small": "300M", "mt5_base": "580M", "mt5_large": "1.2B", "mt5_xl": "3.7B",
    "mt5_xxl": "13B",
    "byt5_small": "300M", "byt5_base": "582M", "byt5_large": "1.2B", "byt5_xl": "3.74B",
    "byt5_xxl": "12.9B",
    "flan_t5_small": "80M", "flan_t5_base": "250M", "flan_t5_large": "780M", "flan_t5_xl": "3B",
    "flan_t5_xxl": "11B",
    "ul2": "20B",
    "t5_1_1_small": "77M", "t5_1_1_base": "248M", "t5_1_1_large": "783M",
}


@pytest.mark.parametrize("name,published", sorted(_PUBLISHED_PARAMETERS.items()))
def test_family_presets_have_their_published_parameter_counts(name, published):
  """The count rounds to the published figure at the precision it is published with."""
  from t5x_lite.model import count_params  # pylint: disable=import-outside-toplevel
  digits = published[:-1]
  unit = {"M": 1e6, "B": 1e9}[published[-1]]
  decimals = len(digits.partition(".")[2])
  half_step = 0.5 * 10.0 ** (-decimals) * unit
  if not decimals:  # "300M" has one significant digit, "580M" two.
    half_step *= 10 ** (len(digits) - len(digits.rstrip("0")))
  assert abs(count_params(config_lib.MODEL_PRESETS[name]()) - float(digits) * unit) <= half_step


def test_family_architectures():
  umt5, byt5, ul2 = (config_lib.MODEL_PRESETS[n]() for n in ("umt5_base", "byt5_small", "ul2"))
  assert umt5.position_scheme == "relative_per_layer" and umt5.vocab_size == 256384
  assert config_lib.MODEL_PRESETS["mt5_base"]().position_scheme == "relative"
  assert (byt5.vocab_size, byt5.num_encoder_layers, byt5.num_decoder_layers) == (384, 12, 4)
  assert (ul2.ffn_activation, ul2.d_kv, ul2.num_heads, ul2.num_encoder_layers) == (
      "swiglu", 256, 16, 32)
  assert config_lib.MODEL_PRESETS["flan_t5_xl"]() == config_lib.t5_1_1("xl")
