"""Throughput of the loader (examples/s into packed batches), for `t5x-lite bench-data`.

Only batches the loader makes after the clock starts are timed (see measure), so a short run
reports the rate the loader sustains, not how fast it hands over batches it had ready.
"""

from __future__ import annotations

import contextlib
import time

from t5x_lite.config import DataConfig
from t5x_lite.data.packing import packing_efficiency
from t5x_lite.data.pipeline import Loader
from t5x_lite.data.vocabulary import get_vocabulary


def measure(data_config: DataConfig, *, batch_size: int = 128, batches: int = 50,
            warmup: int = 3) -> dict[str, float]:
  """Runs the training loader and times `batches` batches after `warmup` ones.

  The loader prefetches during the warm-up; batches it has ready would arrive at once. So it is
  restarted (from where the warm-up left it, with an empty queue) when the clock starts: the
  time covers making every timed batch, the restart's reading and tokenizing included.
  """
  vocabulary = get_vocabulary(data_config)
  loader = Loader(data_config, vocabulary, split=data_config.train_split, batch_size=batch_size,
                  seed=0)
  with contextlib.closing(loader):
    for _ in range(warmup):
      next(loader)
    loader.close()  # Drops the prefetched batches; the next one still follows the warm-up.
    start_examples, start = loader.examples_seen, time.perf_counter()
    timed = [next(loader) for _ in range(batches)]
    elapsed = time.perf_counter() - start
  examples = loader.examples_seen - start_examples
  total = max(sum(loader.task_examples.values()), 1)
  return {
      # Per task: (its share of the examples made so far, its rate).
      "task_shares": {name: (count / total, rate) for (name, count), rate in
                      zip(loader.task_examples.items(), loader.rates)},
      "examples_per_s": examples / elapsed,
      "rows_per_s": batches * batch_size / elapsed,
      "examples_per_row": examples / (batches * batch_size),
      # Batches all have the same shape, so the mean is the fraction over all of them.
      "packing_efficiency": sum(packing_efficiency(b) for b in timed) / batches,
      "epoch": loader.epoch() + 1,  # The one the timed batches ended in, from 1.
  }


