"""Losses against a float64 numpy reference: cross-entropy, z-loss, smoothing, masking."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5x_lite.losses import cross_entropy_with_z_loss, token_accuracy

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
    loss = lambda x: cross_entropy_with_z_loss(x, targets, weights, label_smoothing=ls).loss
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
