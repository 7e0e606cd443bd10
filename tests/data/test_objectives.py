from types import SimpleNamespace

import numpy as np
import pytest

from t5x_lite.data import DataError, span_corruption, span_corruption_raw_length
from t5x_lite.data.objectives import (
  PrefixLM,
  SpanCorruption,
  document_examples,
  noise_span_lengths,
  prefix_lm,
  prefix_lm_raw_length,
  seq2seq,
)

VOCAB = 1100  # Unpadded size: sentinels are 1099, 1098, ... (T5's SentencePiece layout).
SENTINELS = VOCAB - 1 - np.arange(100, dtype=np.int32)


def vocabulary(extra_ids: int = 100) -> SimpleNamespace:
  """What an objective's build reads of a Vocabulary: its sentinel count and ids."""
  return SimpleNamespace(extra_ids=extra_ids, sentinel_ids=SENTINELS[:extra_ids])


def document(maker, doc: np.ndarray, seed, **resume) -> list[tuple[np.ndarray, np.ndarray]]:
  """The (inputs, targets) examples of one document cut on its own (document_examples)."""
  return [(inputs, targets) for inputs, targets, _, _ in document_examples(maker, doc, seed, **resume)]


def reconstruct(inputs: np.ndarray, targets: np.ndarray, vocab_size: int) -> list[int]:
  """Puts each sentinel's noise tokens from the targets back into the inputs."""
  assert inputs[-1] == 1 and targets[-1] == 1
  spans, current = {}, None
  for t in targets[:-1].tolist():
    if t >= vocab_size - 100:
      current = t
      spans[current] = []
    else:
      spans[current].append(t)
  out = []
  for t in inputs[:-1].tolist():
    out.extend(spans.pop(t) if t >= vocab_size - 100 else [t])
  assert not spans
  return out


def test_raw_length_for_t5_lengths():
  assert span_corruption_raw_length(512, 114, 0.15, 3.0) == 568
  tokens = np.arange(3, 3 + 568)
  inputs, targets = span_corruption(tokens, sentinel_ids=SENTINELS, seed=0)
  assert (inputs.size, targets.size) == (512, 114)
  assert np.sum(inputs >= VOCAB - 100) == 28  # 28 noise spans.
  assert np.sum(targets >= VOCAB - 100) == 28
  assert targets.size - 28 - 1 == 85  # 85 noise tokens.


@pytest.mark.parametrize("inputs_length,targets_length", [(512, 114), (128, 32), (64, 64), (1024, 229)])
def test_raw_length_is_the_longest_that_fits(inputs_length, targets_length):
  raw = span_corruption_raw_length(inputs_length, targets_length)
  fits = lambda n: [a.size <= l for a, l in zip(
      span_corruption(np.arange(3, 3 + n), sentinel_ids=SENTINELS, seed=1), (inputs_length, targets_length))]
  assert all(fits(raw)) and not all(fits(raw + 1))


@pytest.mark.parametrize("length", [2, 3, 5, 10, 21, 100, 333, 568])
def test_reconstruction_and_lengths(length):
  tokens = np.random.default_rng(length).integers(3, 900, size=length)
  for seed in range(20):
    inputs, targets = span_corruption(tokens, sentinel_ids=SENTINELS, seed=(seed, length))
    assert reconstruct(inputs, targets, VOCAB) == tokens.tolist()
    noise = min(max(int(np.rint(np.float32(length) * np.float32(0.15))), 1), length - 1)
    spans = max(round(noise / 3), 1)
    assert inputs.size == length - noise + spans + 1
    assert targets.size == noise + spans + 1
    assert inputs.dtype == targets.dtype == np.int32


def test_noise_counts_round_in_float32_as_t5():
  """T5 rounds tf.cast(length, tf.float32) * noise_density; float64 differs at 190, 350, 390..."""
  lengths = np.arange(2, 1025)
  expected = np.clip(np.rint(lengths.astype(np.float32) * np.float32(0.15)), 1, lengths - 1)
  noise = [noise_span_lengths(int(n), seed=0)[1::2].sum() for n in lengths]
  np.testing.assert_array_equal(noise, expected)
  assert [noise[n - 2] for n in (190, 350, 390)] == [29, 53, 59]
  assert [round(n * 0.15) for n in (190, 350, 390)] == [28, 52, 58]  # What float64 gives.


def test_sentinels_count_down_from_the_top():
  inputs, targets = span_corruption(np.arange(3, 203), sentinel_ids=SENTINELS, seed=3)
  sentinels = [t for t in inputs.tolist() if t >= VOCAB - 100]
  assert sentinels == list(range(VOCAB - 1, VOCAB - 1 - len(sentinels), -1))
  assert targets[0] == VOCAB - 1  # Targets start with the first sentinel.
  assert [t for t in targets.tolist() if t >= VOCAB - 100] == sentinels


def test_span_i_gets_sentinel_id_i_in_any_order():
  """The byte vocabulary's sentinels count up (259, 260, ...); span i gets the i-th id."""
  ascending = 259 + np.arange(125)
  inputs, targets = span_corruption(np.arange(3, 203), sentinel_ids=ascending, seed=3)
  sentinels = [t for t in inputs.tolist() if t >= 259]
  assert sentinels == list(range(259, 259 + len(sentinels))) and len(sentinels) > 1
  assert [t for t in targets.tolist() if t >= 259] == sentinels
  with pytest.raises(ValueError, match=r"made \d+ noise spans, but has only 1 sentinel ids"):
    span_corruption(np.arange(3, 203), sentinel_ids=ascending[:1], seed=3)


def test_spans_start_with_non_noise_and_are_deterministic():
  a = noise_span_lengths(300, seed=(7, 1))
  assert np.array_equal(a, noise_span_lengths(300, seed=(7, 1)))
  assert not np.array_equal(a, noise_span_lengths(300, seed=(7, 2)))
  assert a.sum() == 300 and a.min() >= 1 and a.size % 2 == 0
  inputs, _ = span_corruption(np.arange(3, 303), sentinel_ids=SENTINELS, seed=0)
  assert inputs[0] == 3  # The first token is never noise.


def test_prefix_lm_and_seq2seq():
  tokens = np.arange(3, 50)
  for seed in range(10):
    inputs, targets = prefix_lm(tokens, inputs_length=30, targets_length=30, seed=seed)
    assert inputs.tolist()[:-1] + targets.tolist()[:-1] == tokens.tolist()
    assert inputs[-1] == targets[-1] == 1 and inputs.size <= 30 and targets.size <= 30
  inputs, targets = seq2seq(np.arange(3, 20), np.arange(3, 8), inputs_length=8, targets_length=8)
  assert inputs.tolist() == [3, 4, 5, 6, 7, 8, 9, 1] and targets.tolist() == [3, 4, 5, 6, 7, 1]


@pytest.mark.parametrize("inputs_length,targets_length,raw,low,high", [
    (512, 114, 512, 399, 511), (512, 512, 512, 1, 511), (114, 512, 512, 1, 113),
    (6, 4, 6, 3, 5), (4, 6, 6, 1, 3), (2, 2, 2, 1, 1)])
def test_prefix_lm_splits_full_chunks_at_random(inputs_length, targets_length, raw, low, high):
  maker = PrefixLM().build(inputs_length, targets_length, vocabulary(extra_ids=0))
  assert maker.raw_length((0, 0, 7, 0)) == prefix_lm_raw_length(inputs_length, targets_length) == raw
  doc = np.random.default_rng(raw).integers(3, 900, size=4 * raw)
  splits = []
  for seed in range(40):
    examples = document(maker, doc, (seed, 0, 7))
    assert len(examples) == 4
    assert sum((i.tolist()[:-1] + t.tolist()[:-1] for i, t in examples), []) == doc.tolist()
    for inputs, targets in examples:
      assert inputs[-1] == targets[-1] == 1 and inputs.dtype == targets.dtype == np.int32
      assert inputs.size <= inputs_length and targets.size <= targets_length
      splits.append(inputs.size - 1)
  assert min(splits) >= low and max(splits) <= high
  if high - low < 10:  # Every allowed split shows up.
    assert set(splits) == set(range(low, high + 1))
  else:
    assert len(set(splits)) > 50
  assert len(set(splits[::4])) > 1 or low == high  # Across seeds, for the first chunk.


def test_prefix_lm_is_deterministic_per_seed_and_example():
  maker = PrefixLM().build(64, 32, vocabulary(extra_ids=0))
  doc = np.random.default_rng(0).integers(3, 900, size=5 * 64 + 20)
  full = list(document_examples(maker, doc, (3, 1, 4)))
  examples = [(i, t) for i, t, _, _ in full]
  again = document(maker, doc, (3, 1, 4))
  for (a, b), (c, d) in zip(examples, again, strict=True):
    assert np.array_equal(a, c) and np.array_equal(b, d)
  # Example k uses the seed (*seed, k), so a document resumed from where example 2 starts,
  # (offset, example) as the second example left them, continues with the same examples.
  _, _, offset, example = full[1]
  assert (offset, example) == (2 * 64, 2)
  later = document(maker, doc, (3, 1, 4), offset=offset, example=example)
  assert len(later) == len(examples) - 2
  assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(examples[2:], later))
  assert [(o, e) for _, _, o, e in full[:5]] == [(64, 1), (128, 2), (192, 3), (256, 4), (320, 5)]
  _, _, offset, example = full[-1]  # After the last example: the document is used up.
  assert example == 6 and document(maker, doc, (3, 1, 4), offset=offset, example=example) == []
  assert np.array_equal(examples[2][0], prefix_lm(doc[128:192], inputs_length=64, targets_length=32,
                                                  seed=(3, 1, 4, 2))[0])
  assert len({i.size for i, _ in examples[:5]}) > 1  # The split differs between examples.
  assert examples[-1][0].size + examples[-1][1].size == 20 + 2  # The short tail, split too.


def test_prefix_lm_lengths_too_short():
  with pytest.raises(DataError, match="too short for prefix_lm"):
    PrefixLM().build(512, 1, vocabulary(extra_ids=0))
  with pytest.raises(ValueError, match="cannot split 9 tokens"):
    prefix_lm(np.arange(3, 12), inputs_length=4, targets_length=4, seed=0)


def test_long_documents_are_chunked_not_truncated_and_empty_skipped():
  maker = SpanCorruption().build(128, 32, vocabulary())
  raw = maker.raw_length((0, 0, 5, 0))
  doc = np.random.default_rng(0).integers(3, 900, size=2 * raw + 50)
  examples = document(maker, doc, (0, 0, 5))
  assert len(examples) == 3
  rebuilt = sum((reconstruct(i, t, VOCAB) for i, t in examples), [])
  assert rebuilt == doc.tolist()
  assert document(maker, np.zeros(0, np.int32), (0, 0, 1)) == []
  later = document(maker, doc, (0, 0, 5), offset=raw, example=1)
  assert len(later) == 2
  assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(examples[1:], later))


@pytest.mark.parametrize("objective,inputs_length,targets_length", [
    (SpanCorruption(), 512, 114), (SpanCorruption(), 8, 6), (PrefixLM(), 64, 32), (PrefixLM(), 3, 3)])
def test_a_one_token_tail_is_kept(objective, inputs_length, targets_length):
  """A 569-token document at 512 / 114 covers all 569 tokens: its last token is not dropped."""
  maker = objective.build(inputs_length, targets_length, vocabulary())
  raw = maker.raw_length((0, 0, 0, 0))
  assert raw > 2
  for chunks in (1, 2, 3):
    doc = np.random.default_rng(chunks).integers(3, 900, size=chunks * raw + 1)
    examples = document(maker, doc, (0, 0, chunks))
    if isinstance(objective, SpanCorruption):
      pieces = [reconstruct(i, t, VOCAB) for i, t in examples]
    else:
      pieces = [i.tolist()[:-1] + t.tolist()[:-1] for i, t in examples]
    # The tail takes the last token of the piece before it.
    assert [len(p) for p in pieces] == [raw] * (chunks - 1) + [raw - 1, 2]
    assert sum(pieces, []) == doc.tolist()
    for inputs, targets in examples:
      assert inputs.size <= inputs_length and targets.size <= targets_length


def test_tokens_no_example_can_hold_are_dropped():
  """One token alone cannot be corrupted or split; with raw_length 2 nothing can take it."""
  maker = PrefixLM().build(2, 2, vocabulary(extra_ids=0))
  assert document(maker, np.array([5], np.int32), (0, 0, 0)) == []
  pieces = [i.tolist()[:-1] + t.tolist()[:-1] for i, t in document(maker, np.arange(3, 8), (0, 0, 0))]
  assert pieces == [[3, 4], [5, 6]]
  span = SpanCorruption().build(128, 32, vocabulary())
  assert document(span, np.array([5], np.int32), (0, 0, 0)) == []


def test_lengths_too_short_are_data_errors_naming_the_config_keys():
  with pytest.raises(DataError, match=r"data.inputs_length=4 / data.targets_length=2 are too short "
                                      "for span corruption"):
    span_corruption_raw_length(4, 2)
  with pytest.raises(DataError, match=r"data.inputs_length=512 / data.targets_length=1 are too "
                                      "short for prefix_lm"):
    prefix_lm_raw_length(512, 1)


def test_more_noise_spans_than_sentinels_is_an_error():
  make = lambda objective, extra_ids, inputs_length=512, targets_length=114: objective.build(
      inputs_length, targets_length, vocabulary(extra_ids))
  assert make(SpanCorruption(), 28).raw_length(0) == 568  # 28 spans: exactly enough sentinels.
  with pytest.raises(DataError, match="28 noise spans.*27 extra ids.*data.vocab_extra_ids"):
    make(SpanCorruption(), 27)
  with pytest.raises(DataError, match="0 extra ids"):
    make(SpanCorruption(), 0)
  with pytest.raises(DataError, match="extra ids"):  # Long inputs: about 120 spans.
    make(SpanCorruption(), 100, inputs_length=2048, targets_length=456)
  make(PrefixLM(), 0)  # Only span corruption uses sentinels (seq2seq builds no maker at all).
