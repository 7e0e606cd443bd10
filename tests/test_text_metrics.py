"""Seq2seq text metrics and the scorer, on hand-checkable strings (no model, no dataset)."""

from types import SimpleNamespace

import numpy as np
import pytest

from t5x_lite import config as config_lib
from t5x_lite import text_metrics
from t5x_lite.config import ConfigError


def test_exact_match_ignores_surrounding_whitespace_only():
  predictions = [" 42\n", "Paris", "a  b", "7"]
  targets = ["42", "paris", "a b", "7 "]
  assert text_metrics.text_metrics(predictions, targets) == {"exact_match": 0.5}


def test_identical_texts_score_full_marks():
  texts = ["the quick brown fox jumps over the lazy dog", "a b c d e f g"]
  result = text_metrics.text_metrics(texts, texts, ("exact_match", "bleu", "rouge"))
  assert result == pytest.approx({"exact_match": 1.0, "bleu": 100.0, "rouge1": 100.0, "rouge2": 100.0,
                                  "rougeL": 100.0})


def test_disjoint_texts_score_zero():
  result = text_metrics.text_metrics(["one two three four five"], ["six seven eight nine ten"],
                              ("bleu", "rouge"))
  assert result == {"exact_match": 0.0, "bleu": 0.0, "rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_no_examples_score_zero():
  """An empty evaluation reports, rather than failing inside sacrebleu."""
  assert text_metrics.text_metrics([], [], ("bleu", "rouge")) == {
      "exact_match": 0.0, "bleu": 0.0, "rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_bleu_by_hand():
  """One token of six wrong: n-gram precisions 5/6, 4/5, 3/4, 2/3, no brevity penalty."""
  result = text_metrics.text_metrics(["a b c d e f"], ["a b c d e g"], ("bleu",))
  assert result["bleu"] == pytest.approx(100 * (5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25)


def test_rouge_by_hand():
  """The prediction is the target's first half: precision 1, recall 1/2 (unigrams, LCS) and
  2/5 (bigrams); F = 2PR / (P + R)."""
  result = text_metrics.text_metrics(["the cat sat"], ["the cat sat on the mat"], ("rouge",))
  assert result == pytest.approx({"exact_match": 0.0, "rouge1": 200 / 3, "rouge2": 400 / 7,
                                  "rougeL": 200 / 3})


def test_rouge_is_the_mean_over_examples():
  result = text_metrics.text_metrics(["x y", "p q"], ["x y", "r s"], ("rouge",))
  assert result == pytest.approx({"exact_match": 0.5, "rouge1": 50.0, "rouge2": 50.0, "rougeL": 50.0})


def test_only_the_metrics_asked_for():
  assert set(text_metrics.text_metrics(["a"], ["a"], ("exact_match",))) == {"exact_match"}
  assert set(text_metrics.text_metrics(["a"], ["a"], ("bleu",))) == {"exact_match", "bleu"}
  assert set(text_metrics.text_metrics(["a"], ["a"], ("rouge",))) == {"exact_match", *text_metrics.ROUGE_TYPES}


def test_unknown_metric_is_a_config_error():
  with pytest.raises(ConfigError, match=r"unknown metrics \['rouge1'\]"):
    text_metrics.text_metrics(["a"], ["a"], ("rouge1",))


def _config(objective: str, metrics=("exact_match",)) -> config_lib.ExperimentConfig:
  config = config_lib.ExperimentConfig()
  config.data.objective = objective
  config.data.targets_length = 4
  config.data.eval_metrics = tuple(metrics)
  return config


@pytest.mark.parametrize("objective", ["span_corruption", "prefix_lm"])
def test_no_scorer_for_pretraining_objectives(objective):
  assert text_metrics.make_scorer(_config(objective), vocabulary=None) is None


def test_scorer_for_seq2seq_checks_its_metrics():
  assert isinstance(text_metrics.make_scorer(_config("seq2seq"), vocabulary=None), text_metrics.Seq2SeqScorer)
  with pytest.raises(ConfigError, match="blue"):
    text_metrics.make_scorer(_config("seq2seq", ("blue",)), vocabulary=None)


class _DigitVocabulary:
  """Token ids as words, stopping at EOS (1) and skipping padding (0)."""

  def decode(self, ids) -> str:
    words = []
    for i in np.asarray(ids).tolist():
      if i == 1:
        break
      if i:
        words.append(str(i))
    return " ".join(words)


def test_scorer_skips_padding_rows_and_scores_the_decodes(monkeypatch):
  """Rows without loss weight are eval padding; the rest are scored in row order, the decodes
  as predictions (lengths differ, so swapping them with the targets changes BLEU)."""
  calls = []

  def fake_decode(params, model_config, encoder_input_tokens, *, method, max_decode_length):
    calls.append((params, method, max_decode_length))
    return SimpleNamespace(tokens=np.array([[5, 6, 7, 8, 9, 1], [9, 1, 0, 0, 0, 0], [7, 1, 0, 0, 0, 0]],
                                           np.int32))

  monkeypatch.setattr(text_metrics.decoding, "decode", fake_decode)
  scorer = text_metrics.make_scorer(_config("seq2seq", ("exact_match", "bleu")), _DigitVocabulary())
  scorer.add("params", {
      "encoder_input_tokens": np.array([[2, 3, 1], [0, 0, 0], [4, 1, 0]], np.int32),
      "decoder_target_tokens": np.array([[5, 6, 7, 8, 9, 1], [0] * 6, [8, 9, 7, 6, 1, 0]], np.int32),
      "decoder_loss_weights": np.array([[1] * 6, [0] * 6, [1] * 5 + [0]], np.float32),
  })
  assert calls == [("params", "greedy", 4)]
  assert scorer.inputs == ["2 3", "4"]
  assert scorer.targets == ["5 6 7 8 9", "8 9 7 6"] and scorer.predictions == ["5 6 7 8 9", "7"]
  want = text_metrics.text_metrics(scorer.predictions, scorer.targets, ("exact_match", "bleu"))
  assert scorer.result() == want and want["exact_match"] == 0.5
  assert want != text_metrics.text_metrics(scorer.targets, scorer.predictions, ("exact_match", "bleu"))
  assert scorer.samples(1) == [{"inputs": "2 3", "target": "5 6 7 8 9", "prediction": "5 6 7 8 9"}]
  assert len(scorer.samples(5)) == 2
