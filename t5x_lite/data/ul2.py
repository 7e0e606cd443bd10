"""UL2's mixture of denoisers (Tay et al. 2022, arXiv 2205.05131) on token arrays, pure NumPy.

Each example draws one denoiser at the mixture's rates: T5 span corruption at that denoiser's mean
span length and noise density (R- and X-denoisers) or a prefix-LM split (S-denoiser), with the
denoiser's mode tokens ([NLU], [NLG], [S2S]) in front of the inputs so the model learns which
paradigm it is in. Settings, sources and raw lengths: docs/ul2.md.

Randomness is a pure function of the example's seed: the choice of denoiser uses
`default_rng((*seed, 0))` and the corruption `default_rng((*seed, 1))`, so the two never share a
stream and a pipeline can ask for a seed's raw length before it cuts the chunk.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from t5x_lite.data.errors import DataError
from t5x_lite.data.objectives import (
    Example,
    Seed,
    _noise_counts,
    prefix_lm,
    prefix_lm_raw_length,
    span_corruption,
    span_corruption_raw_length,
)

_RATE_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class Denoiser:
  """One denoiser of the mixture."""

  mode: str  # The mode token text prepended to the inputs: "[NLU]", "[NLG]", "[S2S]".
  rate: float  # Its proportion of examples.
  prefix_lm: bool = False  # True: S-denoiser (prefix LM, ignores the two settings below).
  mean_noise_span_length: float = 3.0
  noise_density: float = 0.15


# The paper's seven denoisers (its section 3.1.2) with R 40% and X 40%, each split evenly, and S 20%;
# docs/ul2.md gives the sources of each number.
UL2_DENOISERS: tuple[Denoiser, ...] = (
    Denoiser("[NLU]", 0.2, mean_noise_span_length=3.0, noise_density=0.15),
    Denoiser("[NLU]", 0.2, mean_noise_span_length=8.0, noise_density=0.15),
    Denoiser("[NLG]", 0.1, mean_noise_span_length=3.0, noise_density=0.5),
    Denoiser("[NLG]", 0.1, mean_noise_span_length=8.0, noise_density=0.5),
    Denoiser("[NLG]", 0.1, mean_noise_span_length=64.0, noise_density=0.15),
    Denoiser("[NLG]", 0.1, mean_noise_span_length=64.0, noise_density=0.5),
    Denoiser("[S2S]", 0.2, prefix_lm=True),
)


def _seed_tuple(seed: Seed) -> tuple[int, ...]:
  """An int seed as a 1-tuple, so (*seed, stream) works for both kinds."""
  if isinstance(seed, (int, np.integer)):
    return (int(seed),)
  return tuple(int(s) for s in seed)


def _describe(index: int, denoiser: Denoiser) -> str:
  """How messages name a denoiser: its place in the list, mode and kind."""
  if denoiser.prefix_lm:
    return f"denoiser {index} ({denoiser.mode}, prefix LM)"
  return (f"denoiser {index} ({denoiser.mode}, span corruption, mean_noise_span_length="
          f"{denoiser.mean_noise_span_length}, noise_density={denoiser.noise_density})")


class MixtureOfDenoisers:
  """Draws a denoiser per example and applies it; validates the whole mixture up front."""

  def __init__(self, denoisers: Sequence[Denoiser], *, inputs_length: int, targets_length: int,
               sentinel_ids: Sequence[int] | np.ndarray, mode_tokens: Mapping[str, np.ndarray]):
    """mode_tokens: each denoiser's mode text already tokenized (1-D int32, no EOS).

    sentinel_ids: the vocabulary's (`Vocabulary.sentinel_ids`), one per noise span a chunk may
    have. Every problem raises DataError before any example is made.
    """
    self.denoisers = tuple(denoisers)
    self.inputs_length = inputs_length
    self.targets_length = targets_length
    self.sentinel_ids = np.asarray(sentinel_ids, dtype=np.int32)
    if not self.denoisers:
      raise DataError("The UL2 mixture has no denoisers; give at least one (ul2.UL2_DENOISERS is the paper's).")
    for i, d in enumerate(self.denoisers):
      if not (math.isfinite(d.rate) and d.rate >= 0):
        raise DataError(f"{_describe(i, d)} has rate {d.rate}; rates are proportions of examples, so each "
                        "must be 0 or more (0 turns a denoiser off).")
    total = math.fsum(d.rate for d in self.denoisers)
    if abs(total - 1.0) > _RATE_TOLERANCE:
      rates = ", ".join(f"{d.mode} {d.rate}" for d in self.denoisers)
      raise DataError(f"The UL2 denoiser rates sum to {total:.6g}, not 1 ({rates}); set them so they add up "
                      "to 1.")
    self._mode_tokens: dict[str, np.ndarray] = {}
    for i, d in enumerate(self.denoisers):
      self._check_settings(i, d)
      if d.mode not in mode_tokens:
        known = ", ".join(sorted(mode_tokens)) or "none"
        raise DataError(f"{_describe(i, d)} has mode {d.mode!r}, which mode_tokens does not tokenize "
                        f"(it has: {known}); add its token ids to mode_tokens or use one of those modes.")
      tokens = np.asarray(mode_tokens[d.mode])
      if tokens.ndim != 1 or (tokens.size and not np.issubdtype(tokens.dtype, np.integer)):
        raise DataError(f"mode_tokens[{d.mode!r}] must be a 1-D array of token ids, got shape "
                        f"{tokens.shape} and dtype {tokens.dtype}.")
      self._mode_tokens[d.mode] = tokens.astype(np.int32)
    self.raw_lengths: tuple[int, ...] = tuple(self._raw_length(i, d) for i, d in enumerate(self.denoisers))
    # Normalised so the last boundary is exactly 1.0: a uniform draw in [0, 1) never falls past it,
    # and a denoiser with rate 0 owns an empty interval.
    rates = np.array([d.rate for d in self.denoisers], dtype=np.float64)
    self._boundaries = np.cumsum(rates) / rates.sum()

  def _check_settings(self, index: int, d: Denoiser) -> None:
    """Span settings T5's noise mask can honour; prefix-LM denoisers do not use them."""
    if d.prefix_lm:
      return
    if not 0 < d.noise_density < 1:
      raise DataError(f"{_describe(index, d)}: noise_density must be between 0 and 1 (exclusive), as the "
                      "fraction of tokens hidden; UL2 uses 0.15 and 0.5.")
    if not d.mean_noise_span_length >= 1:
      raise DataError(f"{_describe(index, d)}: mean_noise_span_length must be 1 or more (a span holds at "
                      "least one token); UL2 uses 3, 8 and 64.")

  def _raw_length(self, index: int, d: Denoiser) -> int:
    """The longest raw token count whose example, mode tokens included, fits the lengths."""
    mode = self._mode_tokens[d.mode].size
    inputs_room = self.inputs_length - mode
    where = (f"data.inputs_length={self.inputs_length} / data.targets_length={self.targets_length} "
             f"with {mode} mode token{'s' * (mode != 1)}")
    if d.prefix_lm:
      if inputs_room < 2 or self.targets_length < 2:
        raise DataError(
            f"{_describe(index, d)} cannot fit {where}: the inputs need the mode tokens plus a token and "
            f"EOS (data.inputs_length >= {mode + 2}) and the targets a token and EOS "
            "(data.targets_length >= 2). Raise the lengths that fall short.")
      # prefix_lm splits up to inputs + targets - 2 tokens; max(inputs, targets) is always below that.
      return prefix_lm_raw_length(inputs_room, self.targets_length)
    if inputs_room < 3 or self.targets_length < 3:
      raise DataError(
          f"{_describe(index, d)} cannot fit {where}: the inputs need the mode tokens plus a sentinel, a "
          f"token and EOS (data.inputs_length >= {mode + 3}) and the targets a sentinel, a token and EOS "
          "(data.targets_length >= 3). Raise the lengths that fall short.")
    raw = span_corruption_raw_length(inputs_room, self.targets_length, d.noise_density, d.mean_noise_span_length)
    # Noise and span counts never decrease with length, so a full chunk needs the most sentinels.
    _, spans = _noise_counts(raw, d.noise_density, d.mean_noise_span_length)
    if spans > self.sentinel_ids.size:
      raise DataError(
          f"{_describe(index, d)} at {where} corrupts chunks of {raw} tokens into {spans} noise spans, each "
          f"needing its own sentinel, but the vocabulary has {self.sentinel_ids.size} extra ids. Raise "
          f"data.vocab_extra_ids to {spans} or more, shorten the lengths, or raise this denoiser's "
          "mean_noise_span_length.")
    return raw

  def choose(self, seed: Seed) -> int:
    """Index of the denoiser for the example with this seed, drawn at the rates."""
    draw = np.random.default_rng((*_seed_tuple(seed), 0)).random()
    return int(np.searchsorted(self._boundaries, draw, side="right"))

  def raw_length(self, seed: Seed) -> int:
    """How many raw tokens the example with this seed can take (its denoiser's raw length)."""
    return self.raw_lengths[self.choose(seed)]

  def mode_tokens(self, index: int) -> np.ndarray:
    """The token ids prepended to the inputs of denoiser `index`."""
    return self._mode_tokens[self.denoisers[index].mode]

  def example(self, tokens: np.ndarray, seed: Seed) -> Example:
    """(inputs, targets) int32 for 2 <= len(tokens) <= raw_length(seed), both ending with EOS.

    The denoiser is choose(seed)'s; its mode tokens lead the inputs, which fit inputs_length, and
    the targets fit targets_length.
    """
    tokens = np.asarray(tokens, dtype=np.int32)
    seed = _seed_tuple(seed)
    index = self.choose(seed)
    d = self.denoisers[index]
    if tokens.ndim != 1 or not 2 <= tokens.size <= self.raw_lengths[index]:
      raise ValueError(f"{_describe(index, d)} takes a 1-D array of 2 to {self.raw_lengths[index]} tokens, "
                       f"got shape {tokens.shape}.")
    mode = self._mode_tokens[d.mode]
    corruption_seed = (*seed, 1)
    if d.prefix_lm:
      inputs, targets = prefix_lm(tokens, inputs_length=self.inputs_length - mode.size,
                                  targets_length=self.targets_length, seed=corruption_seed)
    else:
      inputs, targets = span_corruption(
          tokens, sentinel_ids=self.sentinel_ids, seed=corruption_seed,
          noise_density=d.noise_density, mean_noise_span_length=d.mean_noise_span_length)
    return np.concatenate([mode, inputs]), targets
