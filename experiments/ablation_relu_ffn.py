"""Ablation: the tiny experiment with T5.1.0's ReLU feed-forward instead of gated-GELU.

Compare with: t5x-lite compare runs/tiny runs/relu"""

from tiny_python_docs import get_config as base_config


def get_config():
  config = base_config()
  config.model.ffn_activation = "relu"
  # Same parameter budget: a gated FFN has three d_model x d_ff matrices, ReLU two.
  config.model.d_ff = config.model.d_ff * 3 // 2
  return config
