"""Seq2seq task metrics: decode the evaluation inputs and score the texts against the targets.

Loss and token accuracy are measured with teacher forcing; what a fine-tuned model is for is the
text it generates, so seq2seq evaluation also decodes greedily (data.targets_length tokens at
most) and reports exact match, plus BLEU (sacrebleu) and ROUGE (rouge-score) where
data.eval_metrics asks for them. Targets are compared as the model saw them (tokenized, cut to
data.targets_length), decoded back to text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
from jax.experimental import multihost_utils

from t5x_lite import decoding
from t5x_lite.config import ROUGE_TYPES, ExperimentConfig, check_metric_names
from t5x_lite.data.vocabulary import Vocabulary

if TYPE_CHECKING:
  from t5x_lite.data.tasks import Metric, Task


def text_metrics(predictions: Sequence[str], targets: Sequence[str],
                 names: Sequence["Metric"] = ("exact_match",)) -> dict[str, float]:
  """exact_match (fraction equal up to surrounding whitespace) always; "bleu" adds corpus BLEU
  and "rouge" the mean rouge1/rouge2/rougeL F-measures, both on sacrebleu's 0-100 scale. A
  function among `names` (a task's own metric) adds what fn(predictions, targets) returns."""
  functions = [name for name in names if callable(name)]
  names = [name for name in names if not callable(name)]
  check_metric_names(names)
  count = max(len(targets), 1)
  metrics = {"exact_match": sum(p.strip() == t.strip() for p, t in zip(predictions, targets)) / count}
  if "bleu" in names:
    import sacrebleu  # pylint: disable=import-outside-toplevel  (only tasks that ask for it)
    # sacrebleu fails on an empty corpus; no example scores 0, as for the other metrics.
    metrics["bleu"] = float(sacrebleu.corpus_bleu(list(predictions), [list(targets)]).score
                            if targets else 0.0)
  if "rouge" in names:
    from rouge_score import rouge_scorer  # pylint: disable=import-outside-toplevel
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, target in zip(predictions, targets):
      for name, score in scorer.score(target, prediction).items():
        totals[name] += score.fmeasure
    metrics.update({name: 100.0 * total / count for name, total in totals.items()})
  for function in functions:
    metrics.update({str(k): float(v) for k, v in function(list(predictions), list(targets)).items()})
  return metrics


class Seq2SeqScorer:
  """Collects greedy decodes of evaluation batches; `result()` scores them.

  Batches are the global (sharded) arrays the eval step sees, one example per row (the eval
  loader does not pack seq2seq); rows without loss weight are padding and skipped.
  """

  def __init__(self, config: ExperimentConfig, vocabulary: Vocabulary,
               metrics: Optional[Sequence["Metric"]] = None):
    """metrics: names and functions (a task's); None: data.eval_metrics."""
    self._names = tuple(config.data.eval_metrics if metrics is None else metrics)
    check_metric_names([name for name in self._names if not callable(name)])
    self._model_config = config.model
    self._max_decode_length = config.data.targets_length
    self._vocabulary = vocabulary
    self.inputs: list[str] = []
    self.targets: list[str] = []
    self.predictions: list[str] = []

  def add(self, params: Any, batch: dict[str, Any]) -> None:
    decoded = decoding.decode(params, self._model_config, batch["encoder_input_tokens"],
                              method="greedy", max_decode_length=self._max_decode_length)
    inputs, targets, weights, predictions = (
        multihost_utils.process_allgather(x, tiled=True) for x in (
            batch["encoder_input_tokens"], batch["decoder_target_tokens"],
            batch["decoder_loss_weights"], decoded.tokens))
    for row in np.flatnonzero(np.asarray(weights).sum(axis=1) > 0):
      self.inputs.append(self._vocabulary.decode(inputs[row]))
      self.targets.append(self._vocabulary.decode(targets[row]))
      self.predictions.append(self._vocabulary.decode(predictions[row]))

  def result(self) -> dict[str, float]:
    return text_metrics(self.predictions, self.targets, self._names)

  def samples(self, count: int) -> list[dict[str, str]]:
    """The first `count` examples as {"inputs", "target", "prediction"}, to eyeball."""
    return [{"inputs": i, "target": t, "prediction": p}
            for i, t, p in zip(self.inputs[:count], self.targets, self.predictions)]


def make_scorer(config: ExperimentConfig, vocabulary: Vocabulary,
                task: Optional["Task"] = None) -> Optional[Seq2SeqScorer]:
  """A scorer for seq2seq tasks (`task`, else data.objective), with the task's metrics (else
  data.eval_metrics); None for pretraining objectives (nothing to decode)."""
  if task is None:
    return Seq2SeqScorer(config, vocabulary) if config.data.objective == "seq2seq" else None
  decoded = [metric for metric in task.metrics if metric != "rank_classification"]
  return Seq2SeqScorer(config, vocabulary, decoded) if task.is_seq2seq else None
