"""Model FLOPs as docs/reference.md counts them, and device peaks for MFU."""

import dataclasses
from types import SimpleNamespace

import jax
import pytest

from t5x_lite import config as config_lib
from t5x_lite import flops


def _matmul_flops(cfg: config_lib.ModelConfig, len_in: int, len_tgt: int) -> int:
  """Forward FLOPs summed matmul by matmul (2 * m * k * n each), written independently of the
  per-token formula: projections, attention scores and values, FFN and logits."""
  d, inner, d_ff = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff
  ffn_matrices = [(d, d_ff)] * (2 if cfg.gated_ffn else 1) + [(d_ff, d)]
  matmuls = []  # (m, k, n)
  for _ in range(cfg.num_encoder_layers):
    matmuls += [(len_in, d, inner)] * 3 + [(len_in, inner, d)]  # q, k, v, out
    matmuls += [(len_in, cfg.d_kv, len_in)] * cfg.num_heads  # q k^T
    matmuls += [(len_in, len_in, cfg.d_kv)] * cfg.num_heads  # weights v
    matmuls += [(len_in, k, n) for k, n in ffn_matrices]
  for _ in range(cfg.num_decoder_layers):
    matmuls += [(len_tgt, d, inner)] * 3 + [(len_tgt, inner, d)]  # self-attention
    matmuls += [(len_tgt, cfg.d_kv, len_tgt), (len_tgt, len_tgt, cfg.d_kv)] * cfg.num_heads
    matmuls += [(len_tgt, d, inner), (len_tgt, inner, d)]  # cross-attention q, out
    matmuls += [(len_in, d, inner)] * 2  # cross-attention k, v over the encoder output
    matmuls += [(len_tgt, cfg.d_kv, len_in), (len_tgt, len_in, cfg.d_kv)] * cfg.num_heads
    matmuls += [(len_tgt, k, n) for k, n in ffn_matrices]
  matmuls.append((len_tgt, d, cfg.vocab_size))  # logits
  return sum(2 * m * k * n for m, k, n in matmuls)


def _odd_model(**changes) -> config_lib.ModelConfig:
  """Every dimension different, so a swapped term cannot cancel out."""
  cfg = config_lib.ModelConfig(vocab_size=97, d_model=24, d_ff=40, num_heads=3, d_kv=7,
                               num_encoder_layers=3, num_decoder_layers=2)
  return dataclasses.replace(cfg, **changes)


@pytest.mark.parametrize("size,tflop", [("small", 0.1063), ("base", 0.4259), ("large", 1.4678),
                                        ("xl", 5.3460)])
def test_t5_1_1_training_flops_match_the_reference(size, tflop):
  assert round(flops.train_flops_per_sequence(config_lib.t5_1_1(size), 512, 114) / 1e12, 4) == tflop


@pytest.mark.parametrize("activation", ["gated-gelu", "swiglu", "relu", "gelu"])
@pytest.mark.parametrize("len_in,len_tgt", [(11, 5), (5, 11)])
def test_forward_flops_are_the_sum_of_the_matmuls(activation, len_in, len_tgt):
  cfg = _odd_model(ffn_activation=activation)
  assert flops.forward_flops_per_sequence(cfg, len_in, len_tgt) == _matmul_flops(cfg, len_in, len_tgt)
  assert flops.train_flops_per_sequence(cfg, len_in, len_tgt) == 3 * _matmul_flops(cfg, len_in, len_tgt)


def test_doubling_d_ff_adds_exactly_the_ffn_term():
  cfg, len_in, len_tgt = _odd_model(), 13, 6
  tokens = cfg.num_encoder_layers * len_in + cfg.num_decoder_layers * len_tgt
  extra = (flops.forward_flops_per_sequence(_odd_model(d_ff=2 * cfg.d_ff), len_in, len_tgt)
           - flops.forward_flops_per_sequence(cfg, len_in, len_tgt))
  assert extra == tokens * 6 * cfg.d_model * cfg.d_ff


def test_gated_and_plain_ffns_cost_six_to_four():
  len_in, len_tgt = 13, 6
  gated, plain = _odd_model(ffn_activation="gated-relu"), _odd_model(ffn_activation="relu")
  tokens = gated.num_encoder_layers * len_in + gated.num_decoder_layers * len_tgt
  extra = (flops.forward_flops_per_sequence(gated, len_in, len_tgt)
           - flops.forward_flops_per_sequence(plain, len_in, len_tgt))
  assert extra == tokens * 2 * gated.d_model * gated.d_ff  # (6 - 4) * d_model * d_ff per token


def test_tied_logits_cost_the_same():
  """Tying shares the matrix, not the matmul: T5.1.0 still projects onto the vocabulary."""
  assert (flops.forward_flops_per_sequence(_odd_model(tie_logits=True), 13, 6)
          == flops.forward_flops_per_sequence(_odd_model(tie_logits=False), 13, 6))


def test_logits_scale_with_targets_only():
  len_in, len_tgt = 13, 6
  extra = (flops.forward_flops_per_sequence(_odd_model(vocab_size=197), len_in, len_tgt)
           - flops.forward_flops_per_sequence(_odd_model(vocab_size=97), len_in, len_tgt))
  assert extra == 2 * len_tgt * 24 * 100


def test_peak_of_other_known_device_kinds():
  assert flops.peak_flops_per_device(device_kind="NVIDIA H200") == 989e12
  assert flops.peak_flops_per_device(device_kind="NVIDIA A100-SXM4-40GB") == 312e12
  assert flops.peak_flops_per_device(device_kind="TPU v5 lite") == 197e12
  assert flops.peak_flops_per_device(device_kind="TPU v5p") == 459e12
  assert flops.peak_flops_per_device(device_kind="TPU v6 lite") == 918e12
  # Prefix, not substring: a name that merely contains a known kind is unknown.
  assert flops.peak_flops_per_device(device_kind="Quadro NVIDIA H100") == 0.0


def test_peak_defaults_to_the_first_jax_device(monkeypatch):
  monkeypatch.setattr(jax, "devices", lambda: [SimpleNamespace(device_kind="TPU v4")])
  assert flops.peak_flops_per_device() == 275e12
  assert flops.peak_flops_per_device(1e12) == 1e12
  monkeypatch.setattr(jax, "devices", lambda: [SimpleNamespace(device_kind="cpu")])
  assert flops.peak_flops_per_device() == 0.0
  assert flops.peak_flops_per_device(-1.0) == 0.0  # not an override: unknown stays 0, never negative


def test_decoder_only_forward_flops_by_hand():
  """One stack over inputs + targets (11 + 5 = 16 tokens), attention over all 16, no
  cross-attention, logits for the 5 targets: per token and layer q, k, v, out 4 * 2 * 24 * 21
  = 4032, scores and values 2 * 2 * 16 * 21 = 1344, gated FFN 3 * 2 * 24 * 40 = 5760."""
  cfg = _odd_model(architecture="decoder_only", num_encoder_layers=0, num_decoder_layers=2)
  per_token_and_layer = 4032 + 1344 + 5760
  logits = 5 * 2 * 24 * 97
  assert flops.forward_flops_per_sequence(cfg, 11, 5) == 16 * 2 * per_token_and_layer + logits
