"""Model FLOPs and device peaks for MFU, counted as docs/reference.md says so MFU figures compare.

Matmul FLOPs only (2 per multiply-add), training = 3 x forward, attention
scores over the full length, logits included, embedding lookups excluded.
"""

from __future__ import annotations

from typing import Optional

import jax

from t5x_lite.config import ModelConfig

# Datasheet dense bf16 peak FLOP/s per chip, for MFU (the usual definition; docs/reference.md).
# Matched by prefix in this order, so the PCIe H100 (756) is found before the SXM one.
PEAK_FLOPS_BY_DEVICE_KIND = {
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}
# What an 8192^3 bf16 matmul reached through JAX on the device (docs/reference.md): MFU
# against it is a second figure, the share of what this software stack can reach.
MEASURED_MATMUL_FLOPS_BY_DEVICE_KIND = {
    "NVIDIA H100 80GB HBM3": 789e12,
}


def _ffn_flops_per_token(config: ModelConfig) -> int:
  return (6 if config.gated_ffn else 4) * config.d_model * config.d_ff


def forward_flops_per_sequence(config: ModelConfig, inputs_length: int, targets_length: int) -> int:
  d, inner = config.d_model, config.num_heads * config.d_kv
  n_enc, n_dec = config.num_encoder_layers, config.num_decoder_layers
  ffn = _ffn_flops_per_token(config)
  logits = targets_length * 2 * d * config.vocab_size
  if config.architecture == "decoder_only":
    # One stack over inputs and targets together, attending over all of them (the masked half
    # of the scores counted, as for the decoder's causal self-attention); logits for the targets.
    length = inputs_length + targets_length
    return length * n_dec * (8 * d * inner + ffn + 4 * length * inner) + logits
  per_encoder_token = (n_enc * (8 * d * inner + ffn + 4 * inputs_length * inner)
                       + n_dec * 4 * d * inner)  # cross-attention keys and values
  per_decoder_token = n_dec * (8 * d * inner + 4 * targets_length * inner + 4 * d * inner
                               + 4 * inputs_length * inner + ffn)
  return inputs_length * per_encoder_token + targets_length * per_decoder_token + logits


def train_flops_per_sequence(config: ModelConfig, inputs_length: int, targets_length: int) -> int:
  """Forward + backward (x3) for one sequence."""
  return 3 * forward_flops_per_sequence(config, inputs_length, targets_length)


def _by_prefix(table: dict[str, float], device_kind: Optional[str]) -> float:
  kind = jax.devices()[0].device_kind if device_kind is None else device_kind
  return next((value for name, value in table.items() if kind.startswith(name)), 0.0)


def peak_flops_per_device(override: float = 0.0, device_kind: Optional[str] = None) -> float:
  """The datasheet peak of `device_kind` (default: JAX's first device), or `override` when
  set; 0 if unknown. Device kinds are matched by prefix, e.g. "NVIDIA H100 80GB HBM3"."""
  if override > 0:
    return override
  return _by_prefix(PEAK_FLOPS_BY_DEVICE_KIND, device_kind)


def measured_matmul_flops_per_device(device_kind: Optional[str] = None) -> float:
  """The bf16 matmul rate measured through JAX on `device_kind`; 0 where none was measured."""
  return _by_prefix(MEASURED_MATMUL_FLOPS_BY_DEVICE_KIND, device_kind)
