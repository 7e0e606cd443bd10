"""Token-level losses and metrics, returned as weighted sums.

Sums, not means: the caller divides by ``weight_sum`` (the number of real target
tokens) once, after adding up microbatches and devices, so gradient accumulation and
multi-device reduction give exactly the per-token mean of the whole batch.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class LossSums(NamedTuple):
  """loss includes the z-loss term (it is what to differentiate); z_loss is its share."""

  loss: jax.Array  # () float32
  z_loss: jax.Array  # () float32
  weight: jax.Array  # () float32


def cross_entropy_with_z_loss(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    *,
    z_loss: float = 1e-4,
    label_smoothing: float = 0.0,
) -> LossSums:
  """Weighted sums of cross-entropy + T5's z-loss over all tokens.

  logits: (batch, length, vocab), any float dtype (bf16 on GPU); upcast to float32
    inside the reductions. targets: (batch, length) int ids. weights: (batch, length),
    0 on padding (and between packed examples), 1 on real tokens.

  Per token, with lse = logsumexp(logits):
    loss = CE + z_loss * lse**2   (z-loss keeps the softmax normaliser near 1).
  Without smoothing CE = lse - logits[target], from a gather, never a one-hot over vocab.
  With smoothing (T5X): soft targets put confidence = 1 - ls on the target and
  ls / (V - 1) on every other id; CE is the cross entropy against them minus its
  minimum (their entropy), so predicting exactly the soft targets costs 0. Since the
  soft targets sum to 1 this reduces to
    CE = lse - (confidence - low) * logits[target] - low * sum(logits) - entropy,
  again without materialising a one-hot.
  """
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1).")
  vocab = logits.shape[-1]
  logits = logits.astype(jnp.float32)  # (batch, length, vocab)
  weights = weights.astype(jnp.float32)  # (batch, length)
  lse = jax.nn.logsumexp(logits, axis=-1)  # (batch, length)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # (batch, length)
  if label_smoothing > 0:
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    entropy = -(confidence * math.log(confidence) + (vocab - 1) * low * math.log(low + 1e-20))
    ce = (lse - (confidence - low) * target_logit - low * jnp.sum(logits, axis=-1)
          - entropy)  # (batch, length)
  else:
    ce = lse - target_logit  # (batch, length)
  z = z_loss * jnp.square(lse)  # (batch, length)
  return LossSums(
      loss=jnp.sum((ce + z) * weights), z_loss=jnp.sum(z * weights), weight=jnp.sum(weights))


def token_accuracy(
    logits: jax.Array, targets: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(correct_sum, weight_sum): weighted count of argmax(logits) == target, and of tokens.

  logits: (batch, length, vocab); targets, weights: (batch, length).
  """
  weights = weights.astype(jnp.float32)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)  # (batch, length)
  return jnp.sum(correct * weights), jnp.sum(weights)


def output_sums(
    logits: jax.Array, targets: jax.Array, weights: jax.Array, *, z_loss: float,
    label_smoothing: float,
) -> tuple[LossSums, jax.Array]:
  """(LossSums, correct_sum) of one batch of logits: what a train or eval step reports."""
  sums = cross_entropy_with_z_loss(
      logits, targets, weights, z_loss=z_loss, label_smoothing=label_smoothing)
  correct, _ = token_accuracy(logits, targets, weights)
  return sums, correct


def chunked_output_sums(
    hidden: jax.Array, project: Callable[[jax.Array], jax.Array], targets: jax.Array,
    weights: jax.Array, *, chunk_size: int, z_loss: float, label_smoothing: float,
) -> tuple[LossSums, jax.Array]:
  """`output_sums(project(hidden), ...)` without ever holding all the logits.

  hidden: (batch, length, d) pre-logit states; project maps (batch, chunk, d) to
  (batch, chunk, vocab) logits (closing over the output kernel, whose gradient flows
  through it). Positions are taken chunk_size at a time along the length axis, so each
  chunk keeps the batch axis and its sharding. Each chunk's projection and loss run under
  jax.checkpoint inside a scan: the backward pass recomputes one chunk's logits at a
  time instead of keeping (batch, length, vocab) logits, and their gradient, alive.
  """
  batch, length = targets.shape
  if length % chunk_size:
    raise ValueError(f"chunk_size={chunk_size} does not divide the length {length}.")

  def split(x):  # (batch, length, ...) -> (chunks, batch, chunk_size, ...)
    return jnp.swapaxes(x.reshape((batch, length // chunk_size, chunk_size) + x.shape[2:]), 0, 1)

  @functools.partial(jax.checkpoint, prevent_cse=False)  # No CSE to prevent across scan steps.
  def chunk(hidden, targets, weights):
    return output_sums(project(hidden), targets, weights, z_loss=z_loss,
                       label_smoothing=label_smoothing)

  def add(total, inputs):
    return jax.tree.map(jnp.add, total, chunk(*inputs)), None

  zero = jnp.zeros((), jnp.float32)
  total, _ = jax.lax.scan(add, (LossSums(zero, zero, zero), zero),
                          (split(hidden), split(targets), split(weights)))
  return total
