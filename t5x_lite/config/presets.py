"""Model presets: T5.1.1 and T5.1.0 (docs/reference.md), the T5 family published after them
(mT5, umT5, ByT5, UL2, Flan-T5: widths and depths from T5X's gin files and transformers'
configurations of the released checkpoints) and a tiny model."""

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


_BYT5_SIZES = {
    # name: (d_model, d_ff, num_heads, encoder layers, decoder layers): the encoder is three
    # times deeper than the decoder, which reads fewer, longer-spanning byte targets.
    "small": (1472, 3584, 6, 12, 4),
    "base": (1536, 3968, 12, 18, 6),
    "large": (1536, 3840, 16, 36, 12),
    "xl": (2560, 6720, 32, 36, 12),
    "xxl": (4672, 12352, 64, 36, 12),
}

# The embedding sizes: SentencePiece pieces plus extra ids, padded to a multiple of 128.
T5_VOCAB_SIZE = 32128  # 32000 + 100
MT5_VOCAB_SIZE = 250112  # 250000 + 100
UMT5_VOCAB_SIZE = 256384  # 256000 + 300
BYT5_VOCAB_SIZE = 384  # 3 special ids + 256 bytes + 125 extra ids


def _sized(family: str, sizes: dict, size: str, vocab_size: int = T5_VOCAB_SIZE,
           **architecture) -> ModelConfig:
  """A model of `family` at `size`, its widths and depths from `sizes`: (d_model, d_ff,
  heads, layers), or (d_model, d_ff, heads, encoder layers, decoder layers)."""
  if size not in sizes:
    raise ConfigError(f"Unknown {family} size {size!r}; choose one of {sorted(sizes)}.")
  d_model, d_ff, heads, encoder_layers, *decoder_layers = sizes[size]
  return ModelConfig(vocab_size=vocab_size, d_model=d_model, d_ff=d_ff, num_heads=heads, d_kv=64,
                     num_encoder_layers=encoder_layers,
                     num_decoder_layers=decoder_layers[0] if decoder_layers else encoder_layers,
                     **architecture)


def t5_1_1(size: str) -> ModelConfig:
  """T5.1.1: gated-GELU FFN, untied logits, no biases."""
  return _sized("T5.1.1", _T5_1_1_SIZES, size, ffn_activation="gated-gelu", tie_logits=False)


def t5_1_0(size: str) -> ModelConfig:
  """The original T5: ReLU FFN, logits tied to the input embedding."""
  return _sized("T5.1.0", _T5_1_0_SIZES, size, ffn_activation="relu", tie_logits=True)


def flan_t5(size: str) -> ModelConfig:
  """Flan-T5: T5.1.1 instruction-tuned; the architecture is T5.1.1's."""
  return _sized("Flan-T5", _T5_1_1_SIZES, size, ffn_activation="gated-gelu", tie_logits=False)


def mt5(size: str) -> ModelConfig:
  """mT5: T5.1.1's architecture with a 250,000-piece multilingual vocabulary."""
  return _sized("mT5", _T5_1_1_SIZES, size, MT5_VOCAB_SIZE, ffn_activation="gated-gelu",
                tie_logits=False)


def umt5(size: str) -> ModelConfig:
  """umT5: mT5's sizes with a relative position bias in every layer and a 256,000-piece
  vocabulary with 300 extra ids (set data.vocab_extra_ids=300 with its spiece model)."""
  return _sized("umT5", _T5_1_1_SIZES, size, UMT5_VOCAB_SIZE, ffn_activation="gated-gelu",
                tie_logits=False, position_scheme="relative_per_layer")


def byt5(size: str) -> ModelConfig:
  """ByT5: mT5's architecture on bytes (data.vocabulary="bytes"), deeper encoder."""
  return _sized("ByT5", _BYT5_SIZES, size, BYT5_VOCAB_SIZE, ffn_activation="gated-gelu",
                tie_logits=False)


def ul2() -> ModelConfig:
  """UL2 20B (and Flan-UL2): gated-SiLU FFN, 32 + 32 layers, 16 heads of 256."""
  return ModelConfig(vocab_size=T5_VOCAB_SIZE, d_model=4096, d_ff=16384, num_heads=16, d_kv=256,
                     num_encoder_layers=32, num_decoder_layers=32, ffn_activation="swiglu",
                     tie_logits=False)


def tiny(vocab_size: Optional[int] = None) -> ModelConfig:
  """A model small enough to train on a laptop CPU in minutes."""
  return ModelConfig(
      vocab_size=vocab_size, d_model=128, d_ff=256, num_heads=4, d_kv=32,
      num_encoder_layers=2, num_decoder_layers=2, ffn_activation="gated-gelu",
      tie_logits=False, dtype="float32")


_UMT5_SIZES = ("small", "base", "xl", "xxl")  # The sizes released.

MODEL_PRESETS = {
    **{f"t5_1_1_{size}": (lambda s=size: t5_1_1(s)) for size in _T5_1_1_SIZES},
    **{f"t5_1_0_{size}": (lambda s=size: t5_1_0(s)) for size in _T5_1_0_SIZES},
    **{f"flan_t5_{size}": (lambda s=size: flan_t5(s)) for size in _T5_1_1_SIZES},
    **{f"mt5_{size}": (lambda s=size: mt5(s)) for size in _T5_1_1_SIZES},
    **{f"umt5_{size}": (lambda s=size: umt5(s)) for size in _UMT5_SIZES},
    **{f"byt5_{size}": (lambda s=size: byt5(s)) for size in _BYT5_SIZES},
    "ul2": ul2,
    "tiny": tiny,
}
