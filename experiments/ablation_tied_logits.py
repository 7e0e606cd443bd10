"""Ablation: the tiny experiment with T5.1.0-style logits tied to the input embedding
(scaled by d_model**-0.5) instead of a separate output matrix."""

from tiny_python_docs import get_config as base_config


def get_config():
  config = base_config()
  config.model.tie_logits = True
  return config
