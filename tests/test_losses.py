"""Losses against a float64 numpy reference: cross-entropy, z-loss, smoothing, masking;
the chunked output path against the plain one."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import relative_difference

from t5x_lite.losses import chunked_output_sums, cross_entropy_with_z_loss, output_sums, token_accuracy

BATCH, LENGTH, VOCAB = 2, 5, 37


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(scale=3.0, size=(BATCH, LENGTH, VOCAB)).astype(np.float32)
  targets = rng.integers(0, VOCAB, size=(BATCH, LENGTH)).astype(np.int32)
  weights = np.ones((BATCH, LENGTH), np.float32)
  weights[0, 3:] = 0  # padding
  weights[1, 4:] = 0
  return logits, targets, weights


def _reference(logits, targets, weights, z_loss, label_smoothing):
  """Per-token losses in float64 from an explicit log_softmax and soft-target matrix."""
  logits = np.asarray(logits, np.float64)
  lse = np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1)) + logits.max(-1)
  log_probs = logits - lse[..., None]
  confidence, low = 1 - label_smoothing, label_smoothing / (VOCAB - 1)
  soft = np.full(logits.shape, low)
  np.put_along_axis(soft, targets[..., None].astype(np.int64), confidence, axis=-1)
  entropy = -(confidence * math.log(confidence) + (VOCAB - 1) * low * math.log(low + 1e-20))
  ce = -np.sum(soft * log_probs, -1) - entropy
  z = z_loss * lse**2
  return np.sum((ce + z) * weights), np.sum(z * weights), np.sum(weights)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_matches_float64_reference_fp32(label_smoothing):
  logits, targets, weights = _inputs()
  sums = cross_entropy_with_z_loss(
      jnp.asarray(logits), targets, weights, z_loss=1e-4, label_smoothing=label_smoothing)
  loss, z, weight = _reference(logits, targets, weights, 1e-4, label_smoothing)
  assert float(sums.loss) == pytest.approx(loss, rel=1e-5)
  assert float(sums.z_loss) == pytest.approx(z, rel=1e-5)
  assert float(sums.weight) == weight == 7


def test_bf16_logits_are_upcast():
  logits, targets, weights = _inputs(1)
  bf16 = jnp.asarray(logits, jnp.bfloat16)
  sums = cross_entropy_with_z_loss(bf16, targets, weights)
  assert sums.loss.dtype == jnp.float32
  # Exact for the rounded values; within bf16 rounding of the original ones.
  rounded = np.asarray(bf16.astype(jnp.float32))
  exact, _, _ = _reference(rounded, targets, weights, 1e-4, 0.0)
  approximate, _, _ = _reference(logits, targets, weights, 1e-4, 0.0)
  assert float(sums.loss) == pytest.approx(exact, rel=1e-5)
  assert float(sums.loss) == pytest.approx(approximate, rel=1e-2)


def test_padding_contributes_nothing():
  logits, targets, weights = _inputs(2)
  changed_logits, changed_targets = logits.copy(), targets.copy()
  changed_logits[weights == 0] = 100.0
  changed_targets[weights == 0] = 0
  a = cross_entropy_with_z_loss(jnp.asarray(logits), targets, weights)
  b = cross_entropy_with_z_loss(jnp.asarray(changed_logits), changed_targets, weights)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
  loss = lambda x: cross_entropy_with_z_loss(x, targets, weights).loss
  grads = jax.grad(loss)(jnp.asarray(logits))
  assert np.all(np.asarray(grads)[weights == 0] == 0)


def test_z_loss_term_is_z_times_lse_squared():
  logits, targets, weights = _inputs(3)
  with_z = cross_entropy_with_z_loss(jnp.asarray(logits), targets, weights, z_loss=0.5)
  without = cross_entropy_with_z_loss(jnp.asarray(logits), targets, weights, z_loss=0.0)
  lse = np.asarray(jax.nn.logsumexp(logits.astype(np.float64), axis=-1))
  expected = 0.5 * np.sum(lse**2 * weights)
  assert float(with_z.z_loss) == pytest.approx(expected, rel=1e-5)
  assert float(with_z.loss - without.loss) == pytest.approx(expected, rel=1e-4)
  assert float(without.z_loss) == 0.0


def test_label_smoothing_perfect_prediction_costs_zero():
  _, targets, weights = _inputs(4)
  ls = 0.1
  soft = np.full((BATCH, LENGTH, VOCAB), ls / (VOCAB - 1), np.float32)
  np.put_along_axis(soft, targets[..., None].astype(np.int64), 1 - ls, axis=-1)
  sums = cross_entropy_with_z_loss(jnp.log(soft), targets, weights, z_loss=0.0, label_smoothing=ls)
  assert abs(float(sums.loss)) < 1e-4
  # Any other prediction costs more.
  worse = cross_entropy_with_z_loss(
      jnp.log(soft) + jnp.asarray(_inputs(5)[0]), targets, weights, z_loss=0.0, label_smoothing=ls)
  assert float(worse.loss) > 0.1


def test_gradient_is_finite_for_extreme_bf16_logits():
  logits, targets, weights = _inputs(6)
  logits = jnp.asarray(logits * 1000, jnp.bfloat16)
  for ls in (0.0, 0.1):
    loss = lambda x, ls=ls: cross_entropy_with_z_loss(x, targets, weights, label_smoothing=ls).loss
    grads = jax.grad(loss)(logits)
    assert grads.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(grads, np.float32)))


def test_token_accuracy_counts_weighted_argmax_hits():
  targets = np.array([[1, 2, 3], [0, 0, 0]], np.int32)
  weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  logits = np.zeros((2, 3, 4), np.float32)
  logits[0, 0, 1] = logits[0, 1, 0] = logits[0, 2, 3] = logits[1, 0, 0] = 5.0
  correct, total = token_accuracy(jnp.asarray(logits), targets, weights)
  # Hits at (0, 0) and (1, 0); (0, 2) is a hit on a padded token; (0, 1) a miss.
  assert float(correct) == 2.0 and float(total) == 3.0


def _hidden_inputs(batch, length, d_model, vocab, dtype, seed=7):
  """Pre-logit states, an output kernel, and targets/weights with padding."""
  rng = np.random.default_rng(seed)
  hidden = jnp.asarray(rng.normal(size=(batch, length, d_model)), dtype)
  kernel = jnp.asarray(rng.normal(scale=d_model ** -0.5, size=(d_model, vocab)), jnp.float32)
  targets = rng.integers(0, vocab, size=(batch, length)).astype(np.int32)
  targets[:, ::2] = np.argmax(np.asarray(hidden, np.float32) @ np.asarray(kernel), -1)[:, ::2]  # Hits.
  weights = (rng.random((batch, length)) < 0.7).astype(np.float32)
  return hidden, kernel, targets, weights


def _project(hidden, kernel):  # (b, l, d), (d, v) -> (b, l, v), as the model does.
  return jnp.einsum("bld,dv->blv", hidden, kernel.astype(hidden.dtype))


def _output_sums(chunk_size, hidden, kernel, targets, weights, **options):
  """(LossSums, correct) of the projected hidden states; chunk_size 0 is the plain path."""
  if chunk_size:
    return chunked_output_sums(hidden, functools.partial(_project, kernel=kernel), targets, weights,
                               chunk_size=chunk_size, **options)
  return output_sums(_project(hidden, kernel), targets, weights, **options)


def _sums_and_grads(chunk_size, hidden, kernel, targets, weights, **options):
  """(LossSums, correct), (d hidden, d kernel) of the loss sum."""
  def loss(hidden, kernel):
    out = _output_sums(chunk_size, hidden, kernel, targets, weights, **options)
    return out[0].loss, out
  grads, out = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(hidden, kernel)
  return out, grads


@pytest.mark.parametrize("chunk_size,label_smoothing,dtype,tolerance", [
    (4, 0.0, jnp.float32, 1e-5), (4, 0.1, jnp.float32, 1e-5),
    (4, 0.0, jnp.bfloat16, 1e-2), (4, 0.1, jnp.bfloat16, 1e-2),
    (1, 0.1, jnp.float32, 1e-5), (12, 0.1, jnp.float32, 1e-5),  # One position; one chunk of all.
])
def test_chunked_output_sums_match_plain(chunk_size, label_smoothing, dtype, tolerance):
  inputs = _hidden_inputs(3, 12, 16, 37, dtype)
  options = dict(z_loss=0.01, label_smoothing=label_smoothing)
  (plain, plain_correct), plain_grads = _sums_and_grads(0, *inputs, **options)
  (chunked, correct), grads = _sums_and_grads(chunk_size, *inputs, **options)
  for got, want in zip(chunked, plain):
    assert float(got) == pytest.approx(float(want), rel=tolerance)
  assert float(chunked.weight) == float(np.sum(inputs[3]))
  # The same logits either way, so the same argmax.
  assert float(correct) == float(plain_correct) >= 10
  for got, want in zip(grads, plain_grads):
    assert got.dtype == want.dtype and relative_difference(got, want) < tolerance


def test_chunked_output_sums_hold_one_chunk_of_logits():
  """What the chunks are for: the gradient's scratch memory holds one chunk's logits
  (8 of 64 positions here), not the whole (8, 64, 32128) float32 logits (63 MiB)."""
  hidden, kernel, targets, weights = _hidden_inputs(8, 64, 32, 32128, jnp.float32)

  def temp_bytes(chunk_size):
    def loss(hidden, kernel):
      sums, _ = _output_sums(chunk_size, hidden, kernel, targets, weights, z_loss=1e-4,
                             label_smoothing=0.0)
      return sums.loss
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(hidden, kernel).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  logits_bytes = 8 * 64 * 32128 * 4
  plain, chunked = temp_bytes(0), temp_bytes(8)
  assert plain > logits_bytes
  assert chunked < logits_bytes / 2 < plain / 2
