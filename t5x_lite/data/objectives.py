"""Pretraining objectives on token arrays (pure NumPy): span corruption, prefix LM, seq2seq.

Every function returns (inputs, targets) int32 arrays that end with EOS. Randomness comes from
`np.random.default_rng(seed)`, where seed may be an int or a tuple such as
(run seed, epoch, document, chunk), so an example is a pure function of where it comes from.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from t5x_lite.data.errors import DataError
from t5x_lite.data.vocabulary import EOS_ID

Seed = int | Sequence[int]
Example = tuple[np.ndarray, np.ndarray]


def _noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
  """(noise tokens, noise spans) for `length` raw tokens, as T5's random_spans_noise_mask.

  Like T5 (tf.round of float32 products), this rounds in float32, half to even: float64 gives
  one noise token less for some lengths (28 instead of 29 for 190 tokens).
  """
  num_noise = int(np.round(np.float32(length) * np.float32(noise_density)))
  num_noise = min(max(num_noise, 1), length - 1)
  num_spans = max(int(np.round(np.float32(num_noise) / np.float32(mean_noise_span_length))), 1)
  # Only binds for extreme settings, where T5 would produce empty spans.
  return num_noise, min(num_spans, num_noise, length - num_noise)


def span_corruption_raw_length(
    inputs_length: int, targets_length: int, noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0) -> int:
  """Longest raw token count whose corrupted inputs and targets (EOS included) fit the lengths.

  512 / 114 with T5's defaults gives 568: 85 noise tokens in 28 spans.
  """
  def fits(length: int) -> bool:
    noise, spans = _noise_counts(length, noise_density, mean_noise_span_length)
    return length - noise + spans + 1 <= inputs_length and noise + spans + 1 <= targets_length

  if not fits(2):
    raise DataError(
        f"data.inputs_length={inputs_length} / data.targets_length={targets_length} are too short "
        "for span corruption; both need room for a sentinel, a token and EOS (3 or more).")
  length = 2
  while fits(length + 1):
    length += 1
  return length


def _random_segmentation(rng: np.random.Generator, num_items: int, num_segments: int) -> np.ndarray:
  """Lengths of a uniformly random split of num_items into num_segments non-empty parts."""
  starts = np.zeros(num_items, dtype=bool)
  starts[1 + rng.choice(num_items - 1, num_segments - 1, replace=False)] = True
  segment_ids = np.cumsum(starts)
  return np.bincount(segment_ids, minlength=num_segments)


def noise_span_lengths(
    length: int, *, seed: Seed, noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0) -> np.ndarray:
  """Alternating span lengths [non-noise, noise, non-noise, noise, ...] covering `length`."""
  num_noise, num_spans = _noise_counts(length, noise_density, mean_noise_span_length)
  rng = np.random.default_rng(seed)
  noise = _random_segmentation(rng, num_noise, num_spans)
  nonnoise = _random_segmentation(rng, length - num_noise, num_spans)
  return np.stack([nonnoise, noise], axis=1).reshape(-1)


def span_corruption(
    tokens: np.ndarray, *, vocab_size: int, seed: Seed, noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0) -> Example:
  """T5's span corruption of a 1-D token array (at least 2 tokens, no EOS).

  Inputs keep the non-noise tokens and put one sentinel in place of each noise span; targets
  hold each span's sentinel followed by its noise tokens. Sentinel i is vocab_size - 1 - i, so
  pass the vocabulary's unpadded size (pieces + extra ids, `Vocabulary.unpadded_size`).
  """
  tokens = np.asarray(tokens, dtype=np.int32)
  if tokens.ndim != 1 or tokens.size < 2:
    raise ValueError(f"span_corruption needs a 1-D array of at least 2 tokens, got shape {tokens.shape}.")
  spans = noise_span_lengths(
      tokens.size, seed=seed, noise_density=noise_density,
      mean_noise_span_length=mean_noise_span_length)
  bounds = np.concatenate([[0], np.cumsum(spans)])
  inputs, targets = [], []
  for i in range(spans.size // 2):
    sentinel = np.array([vocab_size - 1 - i], dtype=np.int32)
    nonnoise_start, noise_start, noise_end = bounds[2 * i], bounds[2 * i + 1], bounds[2 * i + 2]
    inputs += [tokens[nonnoise_start:noise_start], sentinel]
    targets += [sentinel, tokens[noise_start:noise_end]]
  eos = np.array([EOS_ID], dtype=np.int32)
  return np.concatenate(inputs + [eos]), np.concatenate(targets + [eos])


def prefix_lm_raw_length(inputs_length: int, targets_length: int) -> int:
  """Chunk length for prefix LM: max(inputs_length, targets_length).

  A chunk of n tokens can split anywhere its prefix and rest (plus EOS each) fit; that range
  spans min(inputs_length, targets_length) - 1 points for any n up to the longer length and
  narrows beyond it (inputs_length + targets_length - 2 leaves one point). So 512 / 512 splits
  512 tokens anywhere in [1, 511], as T5; 512 / 114 splits 512 tokens into 399 to 511 inputs.
  """
  if min(inputs_length, targets_length) < 2:
    raise DataError(
        f"data.inputs_length={inputs_length} / data.targets_length={targets_length} are too short "
        "for prefix_lm; both need room for a token and EOS (2 or more).")
  return max(inputs_length, targets_length)


def prefix_lm(tokens: np.ndarray, *, inputs_length: int, targets_length: int, seed: Seed) -> Example:
  """Splits 2 <= len(tokens) <= inputs_length + targets_length - 2 into a prefix and the rest.

  The prefix length is uniform over those whose inputs and targets (EOS included) fit the
  lengths: T5's random_prefix_noise_mask (noise_density 0.5) draws it from [1, n - 1] and
  truncates what does not fit; this drops nothing.
  """
  tokens = np.asarray(tokens, dtype=np.int32)
  n = tokens.size
  low, high = max(1, n - (targets_length - 1)), min(n - 1, inputs_length - 1)
  if n < 2 or low > high:
    raise ValueError(f"prefix_lm cannot split {n} tokens into {inputs_length} / {targets_length}.")
  split = int(np.random.default_rng(seed).integers(low, high + 1))
  eos = np.array([EOS_ID], dtype=np.int32)
  return np.concatenate([tokens[:split], eos]), np.concatenate([tokens[split:], eos])


def seq2seq(inputs: np.ndarray, targets: np.ndarray, *, inputs_length: int, targets_length: int) -> Example:
  """Truncates a tokenized (inputs, targets) pair to the lengths, each with its EOS."""
  eos = np.array([EOS_ID], dtype=np.int32)
  return (np.concatenate([np.asarray(inputs, np.int32)[:inputs_length - 1], eos]),
          np.concatenate([np.asarray(targets, np.int32)[:targets_length - 1], eos]))


class Objective:
  """Turns one tokenized document into examples; long documents become several chunks."""

  def __init__(self, name: str, *, inputs_length: int, targets_length: int, sentinel_vocab_size: int,
               extra_ids: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0):
    """sentinel_vocab_size and extra_ids are the vocabulary's unpadded size and sentinel count."""
    if name not in ("span_corruption", "prefix_lm", "seq2seq"):
      raise ValueError(f"Unknown objective {name!r}; choose span_corruption, prefix_lm or seq2seq.")
    self.name = name
    self.inputs_length = inputs_length
    self.targets_length = targets_length
    self.sentinel_vocab_size = sentinel_vocab_size
    self.noise_density = noise_density
    self.mean_noise_span_length = mean_noise_span_length
    if name == "span_corruption":
      self.raw_length = span_corruption_raw_length(
          inputs_length, targets_length, noise_density, mean_noise_span_length)
      # Spans never decrease with length, so a full chunk needs the most sentinels.
      _, spans = _noise_counts(self.raw_length, noise_density, mean_noise_span_length)
      if spans > extra_ids:
        raise DataError(
            f"span_corruption at inputs_length={inputs_length} / targets_length={targets_length} "
            f"corrupts chunks of {self.raw_length} tokens into {spans} noise spans, each needing "
            f"its own sentinel, but the vocabulary has {extra_ids} extra ids. Raise "
            "data.vocab_extra_ids, shorten the lengths, or raise data.mean_noise_span_length.")
    elif name == "prefix_lm":
      self.raw_length = prefix_lm_raw_length(inputs_length, targets_length)

  def chunks(self, doc: np.ndarray) -> list[np.ndarray]:
    """`doc` cut into raw_length pieces, dropping no token that can make an example.

    A piece needs 2 tokens: span corruption hides at least one and keeps at least one, prefix LM
    needs a prefix and a rest. So a 1-token tail takes the last token of the piece before it
    (every piece of 2 to raw_length tokens fits the lengths), and the pieces stay a pure function
    of the document. Dropped, as no example can hold them: a 1-token document, and the odd last
    token when raw_length is 2 (the shortest lengths).
    """
    starts = list(range(0, doc.size, self.raw_length))
    if doc.size % self.raw_length == 1 and len(starts) > 1 and self.raw_length > 2:
      starts[-1] -= 1
    pieces = [doc[start:end] for start, end in zip(starts, starts[1:] + [doc.size])]
    return [piece for piece in pieces if piece.size >= 2]

  def examples(self, tokens: Sequence[np.ndarray], seed: Sequence[int], skip: int = 0) -> list[Example]:
    """Examples of one document (one array; two for seq2seq), skipping the first `skip`.

    Long documents give one example per chunk (see chunks); empty ones give none. Example k
    uses the seed (*seed, k), so skipping examples does not change the later ones.
    """
    if self.name == "seq2seq":
      inputs, targets = tokens
      if targets.size == 0 or skip:
        return []
      return [seq2seq(inputs, targets, inputs_length=self.inputs_length,
                      targets_length=self.targets_length)]
    (doc,) = tokens
    chunks = self.chunks(doc)
    out = []
    for k in range(skip, len(chunks)):
      if self.name == "span_corruption":
        out.append(span_corruption(
            chunks[k], vocab_size=self.sentinel_vocab_size, seed=(*seed, k),
            noise_density=self.noise_density, mean_noise_span_length=self.mean_noise_span_length))
      else:
        out.append(prefix_lm(chunks[k], inputs_length=self.inputs_length,
                             targets_length=self.targets_length, seed=(*seed, k)))
    return out
