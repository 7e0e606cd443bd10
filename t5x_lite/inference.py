"""Batched generation and scoring over token ids, on a run's mesh.

Inputs are cut to data.inputs_length (EOS included, as in training) and processed in
batches: each batch is padded to its longest row rounded up to a power of two, so a handful
of shapes is compiled whatever the lengths. Every process passes the same full list; each
holds the rows of its own devices, and results are gathered back to every process.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from t5x_lite import decoding, partitioning
from t5x_lite.data.vocabulary import EOS_ID, PAD_ID
from t5x_lite.model import Transformer
from t5x_lite.training.step import Setup

_MIN_BUCKET = 8


def with_eos(ids: Sequence[np.ndarray], max_length: Optional[int] = None) -> list[np.ndarray]:
  """Each row's ids cut to max_length - 1 (if given), then EOS: how T5 feeds text."""
  keep = None if max_length is None else max_length - 1
  return [np.append(np.asarray(row, np.int32)[:keep], EOS_ID).astype(np.int32) for row in ids]


def bucket_length(longest: int) -> int:
  return max(_MIN_BUCKET, 1 << (max(longest, 1) - 1).bit_length())


def pad_batch(rows: Sequence[np.ndarray], num_rows: int, filler: int = EOS_ID) -> np.ndarray:
  """(num_rows, bucket) int32: rows left-aligned, 0-padded; spare rows hold a lone `filler`
  (EOS for inputs, so the encoder has one token to attend to)."""
  batch = np.zeros((num_rows, bucket_length(max(len(r) for r in rows))), np.int32)
  batch[len(rows):, 0] = filler
  for index, tokens in enumerate(rows):
    batch[index, :len(tokens)] = tokens
  return batch


def batch_rows(setup: Setup, batch_size: int, count: int) -> int:
  """Rows per batch: at most batch_size (fewer if there are fewer inputs), rounded up to a
  multiple of the batch's sharding."""
  ways = partitioning.data_axis_size(setup.mesh, setup.rules)
  return -(-min(batch_size, max(count, 1)) // ways) * ways


def to_device(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from the same host array on every process (each keeps its shards)."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def to_host(array: jax.Array) -> np.ndarray:
  """The whole array on every process, also where other processes hold parts of it."""
  if array.is_fully_addressable:
    return np.asarray(jax.device_get(array))
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def generate(setup: Setup, params: Any, inputs: Sequence[np.ndarray], *, batch_size: int,
             method: str, max_decode_length: int, seed: int = 0,
             on_batch: Callable[[int], None] = lambda rows: None,
             **decode_options) -> Iterator[np.ndarray]:
  """Yields the generated ids of each input row (EOS-terminated inputs), in order, without
  the padding after EOS. decode_options go to decoding.decode."""
  rows = batch_rows(setup, batch_size, len(inputs))
  key = jax.random.key(seed)
  for index, start in enumerate(range(0, len(inputs), rows)):
    chunk = inputs[start:start + rows]
    tokens = to_device(pad_batch(chunk, rows), setup.batch_sharding)
    out = decoding.decode(
        params, setup.config.model, tokens, method=method, max_decode_length=max_decode_length,
        rng=jax.random.fold_in(key, index) if method == "sample" else None, **decode_options)
    for ids in to_host(out.tokens)[:len(chunk)]:
      ended = np.flatnonzero(ids == EOS_ID)
      yield ids[:ended[0] + 1] if ended.size else ids
    on_batch(len(chunk))


def make_log_probs_fn(setup: Setup) -> Callable[..., jax.Array]:
  """(params, encoder tokens, decoder inputs, targets) -> (b, l) float32 log-probabilities
  of the targets: one jitted function per setup (compiled per batch shape), to keep."""
  model: Transformer = setup.model

  def fn(params, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens):
    logits = model.apply({"params": params}, encoder_input_tokens, decoder_input_tokens)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    return jnp.take_along_axis(log_probs, decoder_target_tokens[..., None], axis=-1)[..., 0]

  return jax.jit(fn, in_shardings=(setup.state_shardings.params, setup.batch_sharding,
                                   setup.batch_sharding, setup.batch_sharding))


def token_log_probs(setup: Setup, log_probs_fn: Callable[..., jax.Array], params: Any,
                    inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], *, batch_size: int,
                    on_batch: Callable[[int], None] = lambda rows: None) -> Iterator[np.ndarray]:
  """Yields, per (input, target) pair, the float32 log-probability of each target token
  given the input and the tokens before it (teacher forcing): the targets' lengths.
  log_probs_fn is make_log_probs_fn(setup)."""
  rows = batch_rows(setup, batch_size, len(inputs))
  for start in range(0, len(inputs), rows):
    encoder_rows, target_rows = inputs[start:start + rows], targets[start:start + rows]
    targets_batch = pad_batch(target_rows, rows, filler=PAD_ID)
    # T5 has no BOS: the decoder starts from the pad id and sees the targets shifted right.
    decoder_inputs = np.zeros_like(targets_batch)
    decoder_inputs[:, 1:] = targets_batch[:, :-1]
    log_probs = to_host(log_probs_fn(params, *(to_device(x, setup.batch_sharding) for x in (
        pad_batch(encoder_rows, rows), decoder_inputs, targets_batch))))
    for row, target in enumerate(target_rows):
      yield log_probs[row, :len(target)]
    on_batch(len(encoder_rows))
