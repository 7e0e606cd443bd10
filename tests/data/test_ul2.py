import dataclasses
import re

import numpy as np
import pytest

from t5x_lite.data import DataError
from t5x_lite.data.objectives import _noise_counts, prefix_lm, span_corruption
from t5x_lite.data.ul2 import UL2_DENOISERS, Denoiser, MixtureOfDenoisers

VOCAB = 1000  # Unpadded size: sentinels are 999, 998, ... (down to 900 with 100 extra ids).
EXTRA_IDS = 100
WIDE = 150  # Extra ids for the tests at 512 / 512, where UL2's span 3, density 0.5 needs 127 sentinels.
SENTINELS = VOCAB - 1 - np.arange(WIDE, dtype=np.int32)
# Mode tokens of different lengths, above the random tokens [3, 800) and below the sentinels.
MODE_TOKENS = {"[NLU]": np.array([801, 802], np.int32), "[NLG]": np.array([803], np.int32),
               "[S2S]": np.array([804, 805, 806], np.int32)}


def mixture(denoisers=UL2_DENOISERS, inputs_length=512, targets_length=114, extra_ids=EXTRA_IDS,
            mode_tokens=None) -> MixtureOfDenoisers:
  return MixtureOfDenoisers(denoisers, inputs_length=inputs_length, targets_length=targets_length,
                            sentinel_ids=SENTINELS[:extra_ids],
                            mode_tokens=MODE_TOKENS if mode_tokens is None else mode_tokens)


def is_sentinel(t: int) -> bool:
  return t >= VOCAB - WIDE


def spans_of(targets: np.ndarray) -> list[list[int]]:
  """The noise spans of span-corruption targets, read from their sentinel structure."""
  assert targets[-1] == 1 and is_sentinel(targets[0])
  spans = []
  for t in targets[:-1].tolist():
    if is_sentinel(t):
      spans.append([])
    else:
      spans[-1].append(t)
  return spans


def reconstruct(inputs: np.ndarray, targets: np.ndarray) -> list[int]:
  """Fills each sentinel of the inputs with the target span after that sentinel."""
  assert inputs[-1] == 1
  sentinels = [t for t in targets.tolist() if is_sentinel(t)]
  spans = dict(zip(sentinels, spans_of(targets)))
  out = []
  for t in inputs[:-1].tolist():
    out.extend(spans.pop(t) if is_sentinel(t) else [t])
  assert not spans
  return out


def random_tokens(n: int, seed) -> np.ndarray:
  return np.random.default_rng(seed).integers(3, 800, size=n).astype(np.int32)


def test_default_mixture_is_the_papers():
  assert len(UL2_DENOISERS) == 7
  assert sum(d.rate for d in UL2_DENOISERS) == pytest.approx(1.0)
  spans = [(d.mode, d.mean_noise_span_length, d.noise_density, d.rate) for d in UL2_DENOISERS if not d.prefix_lm]
  assert spans == [("[NLU]", 3.0, 0.15, 0.2), ("[NLU]", 8.0, 0.15, 0.2), ("[NLG]", 3.0, 0.5, 0.1),
                   ("[NLG]", 8.0, 0.5, 0.1), ("[NLG]", 64.0, 0.15, 0.1), ("[NLG]", 64.0, 0.5, 0.1)]
  (s,) = [d for d in UL2_DENOISERS if d.prefix_lm]
  assert (s.mode, s.rate) == ("[S2S]", 0.2)


# Lengths at which each span denoiser makes several spans within 100 sentinels, so its statistics
# can be measured: 512 / 114 for the short spans, longer for the 64-token ones (at 512 / 114 they
# make one or two spans; docs/ul2.md).
STAT_LENGTHS = {3.0: (512, 114), 8.0: (512, 114), 64.0: (2048, 2048)}


@pytest.mark.parametrize("index", [i for i, d in enumerate(UL2_DENOISERS) if not d.prefix_lm])
def test_span_statistics_match_each_denoisers_setting(index):
  denoiser = UL2_DENOISERS[index]
  inputs_length, targets_length = STAT_LENGTHS[denoiser.mean_noise_span_length]
  mix = mixture([dataclasses.replace(denoiser, rate=1.0)], inputs_length, targets_length)
  raw = mix.raw_lengths[0]
  tokens_seen = noise = num_spans = 0
  span_lengths = set()
  for seed in range(60):
    n = raw if seed % 2 else int(np.random.default_rng(seed).integers(raw // 2, raw + 1))
    inputs, targets = mix.example(random_tokens(n, seed), seed=(seed, 3))
    spans = spans_of(targets)
    assert sum(map(len, spans)) == targets.size - len(spans) - 1
    assert sum(map(is_sentinel, inputs.tolist())) == len(spans)  # One sentinel per span in the inputs.
    tokens_seen += n
    noise += sum(map(len, spans))
    num_spans += len(spans)
    span_lengths.update(map(len, spans))
  assert noise / tokens_seen == pytest.approx(denoiser.noise_density, abs=0.01)
  assert noise / num_spans == pytest.approx(denoiser.mean_noise_span_length, rel=0.1)
  assert len(span_lengths) > 3  # Spans vary in length around the mean.


def test_mode_tokens_lead_the_inputs_and_match_the_chosen_denoiser():
  mix = mixture()
  chosen = set()
  for seed in range(400):
    index = mix.choose((seed, 1))
    denoiser = mix.denoisers[index]
    chosen.add(index)
    n = mix.raw_length((seed, 1))
    tokens = random_tokens(n, seed)
    inputs, targets = mix.example(tokens, (seed, 1))
    mode = MODE_TOKENS[denoiser.mode]
    assert np.array_equal(inputs[:mode.size], mode) and np.array_equal(mix.mode_tokens(index), mode)
    assert not np.isin(inputs[mode.size:], np.arange(800, 900)).any()  # Mode tokens only up front.
    if denoiser.prefix_lm:
      assert not any(is_sentinel(t) for t in targets.tolist())
    else:  # The noise this denoiser's settings give for n tokens, and no other denoiser's kind.
      noise_tokens, spans = _noise_counts(n, denoiser.noise_density, denoiser.mean_noise_span_length)
      assert len(spans_of(targets)) == spans and targets.size == noise_tokens + spans + 1
  assert chosen == set(range(7))


@pytest.mark.parametrize("inputs_length,targets_length", [(512, 114), (512, 512), (64, 16)])
def test_reconstruction_and_lengths(inputs_length, targets_length):
  mix = mixture(inputs_length=inputs_length, targets_length=targets_length, extra_ids=WIDE)
  rng = np.random.default_rng(inputs_length + targets_length)
  for seed in range(150):
    raw = mix.raw_length(seed)
    n = [2, 3, raw, raw - 1][seed % 4] if seed % 5 else int(rng.integers(2, raw + 1))
    tokens = random_tokens(n, (seed, n))
    inputs, targets = mix.example(tokens, seed)
    denoiser = mix.denoisers[mix.choose(seed)]
    body = inputs[MODE_TOKENS[denoiser.mode].size:]
    assert inputs.dtype == targets.dtype == np.int32
    assert inputs.size <= inputs_length and targets.size <= targets_length
    assert inputs[-1] == targets[-1] == 1
    if denoiser.prefix_lm:
      assert body.tolist()[:-1] + targets.tolist()[:-1] == tokens.tolist()
    else:
      assert reconstruct(body, targets) == tokens.tolist()


@pytest.mark.parametrize("inputs_length,targets_length", [(512, 114), (512, 512), (64, 16)])
def test_raw_lengths_are_the_longest_that_fit(inputs_length, targets_length):
  mix = mixture(inputs_length=inputs_length, targets_length=targets_length, extra_ids=WIDE)
  for d, raw in zip(mix.denoisers, mix.raw_lengths):
    mode = MODE_TOKENS[d.mode].size
    if d.prefix_lm:  # As objectives.prefix_lm_raw_length, with the mode tokens' room taken off.
      assert raw == max(inputs_length - mode, targets_length)
      continue
    def fits(n, d=d, mode=mode):
      inputs, targets = span_corruption(np.arange(3, 3 + n), sentinel_ids=SENTINELS, seed=0,
                                        noise_density=d.noise_density,
                                        mean_noise_span_length=d.mean_noise_span_length)
      return mode + inputs.size <= inputs_length and targets.size <= targets_length
    assert fits(raw) and not fits(raw + 1)


def test_raw_lengths_at_t5_lengths():
  """512 / 114: the extreme denoisers at density 0.5 are bounded by the targets (docs/ul2.md)."""
  assert mixture().raw_lengths == (566, 586, 170, 201, 599, 222, 509)


def test_choose_frequencies_match_the_rates():
  mix = mixture()
  seeds = 20000
  counts = np.bincount([mix.choose((7, s)) for s in range(seeds)], minlength=7)
  expected = seeds * np.array([d.rate for d in UL2_DENOISERS])
  chi2 = float(((counts - expected) ** 2 / expected).sum())
  assert chi2 < 22.46  # The 0.999 quantile of chi-square with 6 degrees of freedom.
  assert all(mix.raw_length((7, s)) == mix.raw_lengths[mix.choose((7, s))] for s in range(50))


def test_deterministic_per_seed_with_separate_streams():
  mix = mixture()
  tokens = random_tokens(150, 0)
  a, b = mix.example(tokens, (4, 2)), mix.example(tokens, (4, 2))
  assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
  assert mix.choose(5) == mix.choose((5,)) and np.array_equal(mix.example(tokens, 5)[0], mix.example(tokens, (5,))[0])
  others = {tuple(mix.example(tokens, (4, s))[0].tolist()) for s in range(20)}
  assert len(others) > 10
  # The corruption uses the stream (*seed, 1), the choice (*seed, 0).
  for seed in [(4, 2), (9,), (0, 1, 2, 3)]:
    d = mix.denoisers[mix.choose(seed)]
    inputs, targets = mix.example(tokens, seed)
    mode = MODE_TOKENS[d.mode].size
    if d.prefix_lm:
      expected = prefix_lm(tokens, inputs_length=512 - mode, targets_length=114, seed=(*seed, 1))
    else:
      expected = span_corruption(tokens, sentinel_ids=SENTINELS, seed=(*seed, 1), noise_density=d.noise_density,
                                 mean_noise_span_length=d.mean_noise_span_length)
    assert np.array_equal(inputs[mode:], expected[0]) and np.array_equal(targets, expected[1])
    assert mix.choose(seed) == int(np.searchsorted(np.cumsum([d.rate for d in mix.denoisers]),
                                                   np.random.default_rng((*seed, 0)).random(), side="right"))


def test_custom_mixtures():
  one = mixture([Denoiser("[NLG]", 1.0, mean_noise_span_length=32.0, noise_density=0.5)], 256, 256)
  assert {one.choose(s) for s in range(200)} == {0}
  inputs, targets = one.example(random_tokens(one.raw_lengths[0], 1), 1)
  assert inputs[0] == 803 and inputs.size <= 256 and targets.size <= 256
  # A denoiser at rate 0 is never drawn, wherever it sits in the list.
  off = mixture([Denoiser("[NLU]", 0.0), Denoiser("[S2S]", 1.0, prefix_lm=True), Denoiser("[NLG]", 0.0)])
  assert {off.choose(s) for s in range(500)} == {1}
  # A mode text of the user's own.
  own = mixture([Denoiser("<x>", 0.5), Denoiser("[S2S]", 0.5, prefix_lm=True)],
                mode_tokens={"<x>": np.zeros(0, np.int32), "[S2S]": np.array([804])})
  assert own.raw_lengths == (568, 511)  # No mode tokens: T5's 568.


@pytest.mark.parametrize("denoisers,problem", [
    ([], "no denoisers"),
    ([Denoiser("[NLU]", -0.1), Denoiser("[NLG]", 1.1)], "denoiser 0 ([NLU], span corruption"),
    ([Denoiser("[NLU]", 0.5), Denoiser("[NLG]", 0.4)], "sum to 0.9, not 1"),
    ([Denoiser("[NLU]", 1.0, noise_density=0.0)], "noise_density must be between 0 and 1"),
    ([Denoiser("[NLU]", 1.0, noise_density=1.0)], "noise_density must be between 0 and 1"),
    ([Denoiser("[NLU]", 1.0, noise_density=float("nan"))], "noise_density must be between 0 and 1"),
    ([Denoiser("[NLU]", 1.0, mean_noise_span_length=0.5)], "mean_noise_span_length must be 1 or more"),
    ([Denoiser("[NLU]", 0.5), Denoiser("[X]", 0.5)], "denoiser 1 ([X], span corruption"),
])
def test_bad_mixtures(denoisers, problem):
  with pytest.raises(DataError, match=re.escape(problem)):
    mixture(denoisers)


def test_bad_mixture_messages_say_how_to_fix():
  with pytest.raises(DataError, match="must be 0 or more"):
    mixture([Denoiser("[NLU]", -0.1), Denoiser("[NLG]", 1.1)])
  with pytest.raises(DataError, match=r"it has: \[NLG\], \[NLU\], \[S2S\]\); add its token ids to mode_tokens"):
    mixture([Denoiser("[X]", 1.0)])
  mixture([Denoiser("[S2S]", 1.0, prefix_lm=True, noise_density=7.0)])  # Prefix LM ignores span settings.


def test_lengths_too_short():
  # [NLU] has 2 mode tokens: inputs need 2 + sentinel + token + EOS.
  with pytest.raises(DataError, match=r"denoiser 0 \(\[NLU\].*data.inputs_length >= 5"):
    mixture([Denoiser("[NLU]", 1.0)], inputs_length=4, targets_length=64)
  with pytest.raises(DataError, match=r"data.targets_length >= 3\). Raise"):
    mixture([Denoiser("[NLU]", 1.0)], inputs_length=64, targets_length=2)
  # [S2S] has 3 mode tokens: inputs need 3 + token + EOS.
  with pytest.raises(DataError, match=r"\[S2S\], prefix LM\).*data.inputs_length >= 5"):
    mixture([Denoiser("[S2S]", 1.0, prefix_lm=True)], inputs_length=4, targets_length=64)
  mixture([Denoiser("[NLU]", 1.0)], inputs_length=5, targets_length=3)  # The shortest that fit.
  mixture([Denoiser("[S2S]", 1.0, prefix_lm=True)], inputs_length=5, targets_length=2)


def test_too_many_sentinels():
  # At 512 / 512, span 3 at density 0.5 makes 127 spans: more than T5's 100 extra ids.
  with pytest.raises(DataError, match=r"denoiser 2 \(\[NLG\].*127 noise spans.*100 extra ids.*"
                                      r"data.vocab_extra_ids to 127"):
    mixture(inputs_length=512, targets_length=512)
  assert mixture(inputs_length=512, targets_length=512, extra_ids=127).raw_lengths[2] == 765


def test_example_rejects_chunks_longer_than_the_raw_length():
  mix = mixture()
  with pytest.raises(ValueError, match="takes a 1-D array of 2 to"):
    mix.example(random_tokens(mix.raw_length(3) + 1, 0), 3)
  with pytest.raises(ValueError, match="takes a 1-D array of 2 to"):
    mix.example(random_tokens(1, 0), 3)
