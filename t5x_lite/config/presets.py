"""Model presets: the T5.1.1 and T5.1.0 sizes (from docs/reference.md) and a tiny model."""

from __future__ import annotations

from typing import Optional

from t5x_lite.config.schema import ModelConfig
from t5x_lite.errors import ConfigError

_T5_1_1_SIZES = {
    # name: (d_model, d_ff, num_heads, num_layers)
    "small": (512, 1024, 6, 8),
    "base": (768, 2048, 12, 12),
    "large": (1024, 2816, 16, 24),
    "xl": (2048, 5120, 32, 24),
    "xxl": (4096, 10240, 64, 24),
}

_T5_1_0_SIZES = {
    "small": (512, 2048, 8, 6),
    "base": (768, 3072, 12, 12),
}


def _sized(family: str, sizes: dict, size: str, **architecture) -> ModelConfig:
  """A 32128-id model of `family` at `size`, its widths and depths from `sizes`."""
  if size not in sizes:
    raise ConfigError(f"Unknown {family} size {size!r}; choose one of {sorted(sizes)}.")
  d_model, d_ff, heads, layers = sizes[size]
  return ModelConfig(vocab_size=32128, d_model=d_model, d_ff=d_ff, num_heads=heads, d_kv=64,
                     num_encoder_layers=layers, num_decoder_layers=layers, **architecture)


def t5_1_1(size: str) -> ModelConfig:
  """T5.1.1: gated-GELU FFN, untied logits, no biases."""
  return _sized("T5.1.1", _T5_1_1_SIZES, size, ffn_activation="gated-gelu", tie_logits=False)


def t5_1_0(size: str) -> ModelConfig:
  """The original T5: ReLU FFN, logits tied to the input embedding."""
  return _sized("T5.1.0", _T5_1_0_SIZES, size, ffn_activation="relu", tie_logits=True)


def tiny(vocab_size: Optional[int] = None) -> ModelConfig:
  """A model small enough to train on a laptop CPU in minutes."""
  return ModelConfig(
      vocab_size=vocab_size, d_model=128, d_ff=256, num_heads=4, d_kv=32,
      num_encoder_layers=2, num_decoder_layers=2, ffn_activation="gated-gelu",
      tie_logits=False, dtype="float32")


MODEL_PRESETS = {
    **{f"t5_1_1_{size}": (lambda s=size: t5_1_1(s)) for size in _T5_1_1_SIZES},
    **{f"t5_1_0_{size}": (lambda s=size: t5_1_0(s)) for size in _T5_1_0_SIZES},
    "tiny": tiny,
}
