"""Model FLOPs and device peaks for MFU, counted as docs/reference.md says so MFU figures compare.

Matmul FLOPs only (2 per multiply-add), training = 3 x forward, attention
scores over the full length, logits included, embedding lookups excluded.
"""

from __future__ import annotations

from typing import Optional

import jax

from t5x_lite.config import ModelConfig

# Dense bf16 peak FLOP/s per device, for MFU. The H100 figure is the one
# docs/reference.md measured through JAX (8192^3 bf16 matmul), not the datasheet.
PEAK_FLOPS_BY_DEVICE_KIND = {
    "NVIDIA H100": 789e12,
    "NVIDIA H200": 789e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def _ffn_flops_per_token(config: ModelConfig) -> int:
  return (6 if config.gated_ffn else 4) * config.d_model * config.d_ff


def forward_flops_per_sequence(config: ModelConfig, inputs_length: int, targets_length: int) -> int:
  d, inner = config.d_model, config.num_heads * config.d_kv
  n_enc, n_dec = config.num_encoder_layers, config.num_decoder_layers
  ffn = _ffn_flops_per_token(config)
  per_encoder_token = (n_enc * (8 * d * inner + ffn + 4 * inputs_length * inner)
                       + n_dec * 4 * d * inner)  # cross-attention keys and values
  per_decoder_token = (n_dec * (8 * d * inner + 4 * targets_length * inner + 4 * d * inner
                                + 4 * inputs_length * inner + ffn)
                       + 2 * d * config.vocab_size)
  return inputs_length * per_encoder_token + targets_length * per_decoder_token


def train_flops_per_sequence(config: ModelConfig, inputs_length: int, targets_length: int) -> int:
  """Forward + backward (x3) for one sequence."""
  return 3 * forward_flops_per_sequence(config, inputs_length, targets_length)


def peak_flops_per_device(override: float = 0.0, device_kind: Optional[str] = None) -> float:
  """The known peak of `device_kind` (default: JAX's first device), or `override` when set;
  0 if unknown. Device kinds are matched by prefix, e.g. "NVIDIA H100 80GB HBM3"."""
  if override > 0:
    return override
  kind = jax.devices()[0].device_kind if device_kind is None else device_kind
  for name, peak in PEAK_FLOPS_BY_DEVICE_KIND.items():
    if kind.startswith(name):
      return peak
  return 0.0
