"""Ablation: the tiny experiment as T5's decoder-only prefix LM (model.architecture): one
stack over inputs and targets together, bidirectional over the inputs, causal over the
targets, as in the T5 paper's architecture study. Its 4 layers are the base's 2 encoder +
2 decoder layers: about the same parameters (`t5x-lite info`, 1000-piece vocabulary:
1,083,136 for the base, 951,552 here: the base's cross-attention is the difference), but each
layer runs over all 160 tokens, so 1.73 x the base's FLOPs per example (0.8147 against
0.4719 GFLOP per training sequence).

Compare with: t5x-lite compare runs/tiny runs/decoder_only"""

from tiny_python_docs import get_config as base_config


def get_config():
  config = base_config()
  config.model.architecture = "decoder_only"
  config.model.num_decoder_layers += config.model.num_encoder_layers
  config.model.num_encoder_layers = 0
  return config
