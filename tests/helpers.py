"""Small shared test utilities: tiny configs and random packed batches."""

import importlib.metadata
import os
import re

import numpy as np

from t5x_lite import config as config_lib

# On a loaded 2-core machine the 8 device threads of a CPU collective can arrive far
# apart; XLA's default rendezvous timeout would then abort the process.
COLLECTIVE_TIMEOUTS = ("--xla_cpu_collective_call_terminate_timeout_seconds=3600 "
                       "--xla_cpu_collective_timeout_seconds=3600")


def _fast_compile_flags() -> str:
  """XLA flags that make its CPU compiles faster: most of the suite's time is XLA compiling
  small programs. LLVM's lowest optimisation level for the machine code (XLA's own graph
  passes run as before) makes them about 1.5x faster; up to jaxlib 0.11.0, XLA's older
  fusion emitters about 2x more (the MLIR ones replaced them, and the flag, in 0.11.1)."""
  flags = "--xla_backend_optimization_level=0"
  jaxlib_version = tuple(int(part) for part in re.findall(r"\d+", importlib.metadata.version("jaxlib"))[:3])
  if jaxlib_version < (0, 11, 1):
    flags += " --xla_cpu_use_fusion_emitters=false"
  return flags


# Tests that start processes pass these on too.
FAST_COMPILE = _fast_compile_flags()


def tiny_model(vocab_size: int = 128, **changes) -> config_lib.ModelConfig:
  cfg = config_lib.tiny(vocab_size)
  cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.d_kv = 32, 64, 4, 8
  for key, value in changes.items():
    setattr(cfg, key, value)
  return cfg


def random_batch(rng: np.random.Generator, batch: int, inputs_length: int, targets_length: int,
                 vocab_size: int, segments: int = 2) -> dict:
  """A packed batch: each row holds `segments` examples, then padding."""
  out = {k: np.zeros((batch, n), np.int32) for k, n in (
      ("encoder_input_tokens", inputs_length), ("encoder_segment_ids", inputs_length),
      ("decoder_target_tokens", targets_length), ("decoder_input_tokens", targets_length),
      ("decoder_segment_ids", targets_length))}
  out["decoder_loss_weights"] = np.zeros((batch, targets_length), np.float32)
  for row in range(batch):
    enc_start = dec_start = 0
    for segment in range(1, segments + 1):
      enc_len = int(rng.integers(2, inputs_length // segments))
      dec_len = int(rng.integers(2, targets_length // segments))
      enc = slice(enc_start, enc_start + enc_len)
      dec = slice(dec_start, dec_start + dec_len)
      out["encoder_input_tokens"][row, enc] = rng.integers(2, vocab_size, enc_len)
      out["encoder_segment_ids"][row, enc] = segment
      targets = rng.integers(2, vocab_size, dec_len)
      out["decoder_target_tokens"][row, dec] = targets
      out["decoder_input_tokens"][row, dec] = np.concatenate([[0], targets[:-1]])
      out["decoder_segment_ids"][row, dec] = segment
      out["decoder_loss_weights"][row, dec] = 1.0
      enc_start += enc_len
      dec_start += dec_len
  return out


def relative_difference(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# A tiny pretraining run shared by the eval, infer, compare and fine-tuning tests.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_EXPERIMENT = os.path.join(REPO, "experiments", "tiny_python_docs.py")
TINY_STEPS = 20
TINY_SETTINGS = [
    f"train.steps={TINY_STEPS}", "train.batch_size=8", "train.eval_every=10", "train.log_every=5",
    "checkpoint.every_steps=10", "data.inputs_length=32", "data.targets_length=8",
    "data.max_eval_examples=16",
]


def train_tiny(workdir: str, overrides: tuple[str, ...] = ()) -> str:
  """A tiny pretraining run in `workdir`, unless one finished there already."""
  import jax  # Heavy: only the tests that train import it.

  from t5x_lite.training.loop import train
  if not os.path.isdir(os.path.join(workdir, "checkpoints", str(TINY_STEPS))):
    train(config_lib.load_experiment(TINY_EXPERIMENT, TINY_SETTINGS + list(overrides)), workdir,
          devices=jax.devices()[:1])
  return workdir
