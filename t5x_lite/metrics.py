"""Where training metrics go: metrics.jsonl, TensorBoard event files and a progress bar.

Only the writing process (process 0) touches files. metrics.jsonl holds one
JSON object per logged step and split; a resumed run first drops lines past
the step it resumed from, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from tqdm import tqdm

from t5x_lite.fileio import write_atomically

_LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error")


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def lower_is_better(metric_name: str) -> bool:
  """The one rule for which way a metric improves (checkpoint retention, `compare`): lower
  when the name contains loss, perplexity or error, higher otherwise (accuracy, BLEU, ...)."""
  return any(word in metric_name.lower() for word in _LOWER_IS_BETTER)


class MetricWriter:
  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard = None
    if not enabled:
      return
    self._truncate_after(resume_step)
    from tensorboardX import SummaryWriter  # Writes event files without TensorFlow.
    self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)

  def _truncate_after(self, step: int) -> None:
    """Drops records a killed run logged after its last checkpoint."""
    records = [r for r in read_metrics(os.path.dirname(self.path)) if r["step"] <= step]
    write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in records))

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    record = {"step": step, "split": split, **metrics}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for name, value in metrics.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


class ProgressBar:
  """tqdm bar with loss, throughput, MFU and time left."""

  def __init__(self, total: int, initial: int = 0, *, enabled: bool = True, unit: str = "step"):
    self._bar: Optional[tqdm] = tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True,
                                     smoothing=0.1) if enabled else None
    self._position = initial

  def update(self, step: int, metrics: Optional[dict] = None) -> None:
    """Moves to `step`; with metrics (log steps), also shows loss, seq/s and MFU."""
    if self._bar is None:
      return
    self._bar.update(step - self._position)
    self._position = step
    if metrics is None:
      return
    postfix = {"loss": f"{metrics['loss']:.4f}", "seq/s": f"{metrics['seq_per_s']:.1f}"}
    if "mfu" in metrics:
      postfix["mfu"] = f"{100 * metrics['mfu']:.1f}%"
    self._bar.set_postfix(postfix, refresh=True)

  def write(self, message: str) -> None:
    if self._bar is None:
      return
    self._bar.write(message)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
