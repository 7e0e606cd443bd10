"""A built-in seq2seq task that needs no download: "add 23 and 58" -> "81".

Every pair of numbers below 100 appears once (10,000 pairs); a stable hash of the pair puts 10%
of them in the validation split, so validation sums are of pairs never seen in training. Guessing
blindly gets about 1% exact match (the most common sum, 99, is the answer to 1% of the pairs),
so exact match shows what a fine-tuned model has learnt.
"""

from __future__ import annotations

from typing import Iterator

from t5x_lite.data import builders

NAME = "addition"
LIMIT = 100
VALIDATION_FRACTION = 0.1


def pairs() -> Iterator[tuple[str, dict[str, str]]]:
  """Yields (key, {"inputs", "targets"}) for every a, b < LIMIT, in a fixed order."""
  for a in range(LIMIT):
    for b in range(LIMIT):
      yield f"{a}+{b}", {"inputs": f"add {a} and {b}", "targets": str(a + b)}


def build(data_dir: str) -> builders.RecordsDataset:
  """Builds the task as array_record under data_dir if it is not there yet (a second or two)."""
  return builders.build_once(builders.RecordsDataset(
      name=NAME, features=("inputs", "targets"), records=pairs, description=__doc__,
      data_dir=data_dir, validation_fraction=VALIDATION_FRACTION))
