"""Pretraining objectives on token arrays (pure NumPy): span corruption, prefix LM, seq2seq,
and the specs a task names them by (SpanCorruption, PrefixLM, UL2, Seq2Seq).

Every function returns (inputs, targets) int32 arrays that end with EOS. Randomness comes from
`np.random.default_rng(seed)`, where seed may be an int or a tuple such as
(run seed, epoch, document, chunk), so an example is a pure function of where it comes from.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

import numpy as np

from t5x_lite.data.errors import DataError
from t5x_lite.data.vocabulary import EOS_ID

if TYPE_CHECKING:
  from t5x_lite.data.vocabulary import Vocabulary

Seed = int | Sequence[int]
Example = tuple[np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=4096)  # Called per example with a handful of distinct lengths.
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
  cuts = np.sort(1 + rng.choice(num_items - 1, num_segments - 1, replace=False))
  return np.diff(np.concatenate([[0], cuts, [num_items]]))


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
    tokens: np.ndarray, *, sentinel_ids: Sequence[int] | np.ndarray, seed: Seed,
    noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> Example:
  """T5's span corruption of a 1-D token array (at least 2 tokens, no EOS).

  Inputs keep the non-noise tokens and put one sentinel in place of each noise span; targets
  hold each span's sentinel followed by its noise tokens. Span i gets sentinel_ids[i]: pass the
  vocabulary's (`Vocabulary.sentinel_ids`; T5's count down from the top of its ids).
  """
  tokens = np.asarray(tokens, dtype=np.int32)
  if tokens.ndim != 1 or tokens.size < 2:
    raise ValueError(f"span_corruption needs a 1-D array of at least 2 tokens, got shape {tokens.shape}.")
  spans = noise_span_lengths(
      tokens.size, seed=seed, noise_density=noise_density,
      mean_noise_span_length=mean_noise_span_length)
  starts = np.concatenate([[0], np.cumsum(spans)[:-1]])
  nonnoise_starts, noise_starts = starts[0::2], starts[1::2]  # Span i: sentinel i in both.
  sentinels = np.asarray(sentinel_ids, dtype=np.int32)[:noise_starts.size]
  if sentinels.size < noise_starts.size:
    raise ValueError(f"span_corruption made {noise_starts.size} noise spans, but has only "
                     f"{sentinels.size} sentinel ids, one per span.")
  is_noise = np.repeat(np.arange(spans.size) % 2 == 1, spans)
  # Inputs: the non-noise tokens, each noise span's first token replaced by its sentinel and
  # the rest dropped; targets: the same with the roles swapped.
  inputs, targets = tokens.copy(), tokens.copy()
  inputs[noise_starts], targets[nonnoise_starts] = sentinels, sentinels
  keep_inputs, keep_targets = ~is_noise, is_noise.copy()
  keep_inputs[noise_starts] = keep_targets[nonnoise_starts] = True
  eos = np.array([EOS_ID], dtype=np.int32)
  return np.concatenate([inputs[keep_inputs], eos]), np.concatenate([targets[keep_targets], eos])


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


# ----- objectives as a task names them ------------------------------------------------------------
#
# An objective spec (what a Task or data.objective names) builds, for given lengths and
# vocabulary, an ExampleMaker: raw_length(seed) tokens in, one (inputs, targets) example out.
# The pipeline asks raw_length before cutting the tokens, so a mixture of denoisers can give each
# example the length its own denoiser needs.


class ExampleMaker(Protocol):
  def raw_length(self, seed: Seed) -> int:
    """Tokens the example with this seed is made from (at most)."""

  def example(self, tokens: np.ndarray, seed: Seed) -> Example:
    """The example of 2 <= len(tokens) <= raw_length(seed) tokens."""


def check_sentinels(raw_length: int, noise_density: float, mean_noise_span_length: float,
                    extra_ids: int, what: str) -> None:
  """Spans never decrease with length, so a full chunk needs the most sentinels."""
  _, spans = _noise_counts(raw_length, noise_density, mean_noise_span_length)
  if spans > extra_ids:
    raise DataError(
        f"{what} corrupts chunks of {raw_length} tokens into {spans} noise spans, each needing "
        f"its own sentinel, but the vocabulary has {extra_ids} extra ids. Raise "
        "data.vocab_extra_ids, shorten the lengths, or raise data.mean_noise_span_length.")


@dataclasses.dataclass(frozen=True)
class _SpanCorrupter:
  length: int
  sentinel_ids: tuple[int, ...]
  noise_density: float
  mean_noise_span_length: float

  def raw_length(self, seed: Seed) -> int:
    del seed
    return self.length

  def example(self, tokens: np.ndarray, seed: Seed) -> Example:
    return span_corruption(tokens, sentinel_ids=self.sentinel_ids, seed=seed,
                           noise_density=self.noise_density,
                           mean_noise_span_length=self.mean_noise_span_length)


@dataclasses.dataclass(frozen=True)
class _PrefixSplitter:
  length: int
  inputs_length: int
  targets_length: int

  def raw_length(self, seed: Seed) -> int:
    del seed
    return self.length

  def example(self, tokens: np.ndarray, seed: Seed) -> Example:
    return prefix_lm(tokens, inputs_length=self.inputs_length, targets_length=self.targets_length,
                     seed=seed)


@dataclasses.dataclass(frozen=True)
class SpanCorruption:
  """T5's span corruption (noise_density of the tokens in spans of mean_noise_span_length)."""
  noise_density: float = 0.15
  mean_noise_span_length: float = 3.0

  def build(self, inputs_length: int, targets_length: int, vocabulary: "Vocabulary") -> ExampleMaker:
    length = span_corruption_raw_length(
        inputs_length, targets_length, self.noise_density, self.mean_noise_span_length)
    check_sentinels(length, self.noise_density, self.mean_noise_span_length, vocabulary.extra_ids,
                    f"span_corruption at inputs_length={inputs_length} / targets_length={targets_length}")
    return _SpanCorrupter(length, tuple(vocabulary.sentinel_ids.tolist()), self.noise_density,
                          self.mean_noise_span_length)


@dataclasses.dataclass(frozen=True)
class PrefixLM:
  """T5's prefix LM: a random split of the text into inputs and the rest as targets."""

  def build(self, inputs_length: int, targets_length: int, vocabulary: "Vocabulary") -> ExampleMaker:
    del vocabulary
    return _PrefixSplitter(prefix_lm_raw_length(inputs_length, targets_length), inputs_length,
                           targets_length)


@dataclasses.dataclass(frozen=True)
class UL2:
  """UL2's mixture of denoisers (t5x_lite.data.ul2; docs/ul2.md): each example gets one denoiser,
  drawn at its rate, and that denoiser's mode token before its inputs."""
  denoisers: tuple = ()  # of ul2.Denoiser; () = the paper's mixture, ul2.UL2_DENOISERS

  def build(self, inputs_length: int, targets_length: int, vocabulary: "Vocabulary") -> ExampleMaker:
    from t5x_lite.data import ul2  # pylint: disable=import-outside-toplevel  (ul2 imports this module)
    denoisers = tuple(self.denoisers) or ul2.UL2_DENOISERS
    mode_tokens = {d.mode: vocabulary.encode(d.mode) for d in denoisers}
    return ul2.MixtureOfDenoisers(
        denoisers, inputs_length=inputs_length, targets_length=targets_length,
        sentinel_ids=vocabulary.sentinel_ids, mode_tokens=mode_tokens)


@dataclasses.dataclass(frozen=True)
class Seq2Seq:
  """Supervised pairs: the task's inputs and targets features, each cut to its length."""


def document_examples(maker: ExampleMaker, tokens: np.ndarray, seed: Sequence[int], *, offset: int = 0,
                      example: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, int, int]]:
  """A document cut on its own into examples, from token `offset` on, counting from `example`:
  yields (inputs, targets, offset after it, example after it). Example k uses seed (*seed, k).

  A piece needs 2 tokens (span corruption hides one and keeps one; prefix LM needs a prefix and
  a rest), so a 1-token tail takes the last token of the piece before it, and nothing a piece can
  hold is dropped; what is: a 1-token document, and the odd last token at raw length 2.
  """
  while tokens.size - offset >= 2:
    piece_seed = (*seed, example)
    length = maker.raw_length(piece_seed)
    if tokens.size - offset - length == 1 and length > 2:
      length -= 1
    piece = tokens[offset:offset + length]
    inputs, targets = maker.example(piece, piece_seed)
    offset, example = offset + piece.size, example + 1
    yield inputs, targets, offset, example


PRETRAINING_OBJECTIVES = {"span_corruption": SpanCorruption, "prefix_lm": PrefixLM, "ul2": UL2}
