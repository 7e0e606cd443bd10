"""What `train` reports as it goes: hooks for logged steps, evaluations and checkpoints.

The loop calls callbacks on process 0 only (where logs and metrics are written), so a
callback never needs to ask which process it runs on. The CLI's progress bar is one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from t5x_lite.metrics import ProgressBar

if TYPE_CHECKING:
  from t5x_lite.training.loop import TrainResult


class Callback:
  """Base class: override the hooks you need; each does nothing by default."""

  def on_train_begin(self, step: int, total_steps: int) -> None:
    """Once the state is ready: `step` is where training starts (0, or a resumed step)."""

  def on_step(self, step: int) -> None:
    """After every optimizer step (no metrics: fetching them would stall the device)."""

  def on_log(self, step: int, metrics: dict[str, float]) -> None:
    """Every train.log_every steps: loss, accuracy, learning rate, throughput, MFU, ..."""

  def on_eval(self, step: int, metrics: dict[str, float]) -> None:
    """After each evaluation: the validation metrics."""

  def on_checkpoint(self, step: int, path: str) -> None:
    """After a checkpoint of `step` was started at `path` (it lands asynchronously)."""

  def on_train_end(self, result: "TrainResult") -> None:
    """Once, when the loop stops (finished or preempted), not on errors."""


class ProgressBarCallback(Callback):
  """A tqdm bar with loss, throughput, MFU and time left (the CLI's). Lines written with
  tqdm.write (the CLI's log handler does) appear above it without tearing it."""

  def __init__(self) -> None:
    self._bar: Optional[ProgressBar] = None

  def on_train_begin(self, step: int, total_steps: int) -> None:
    self._bar = ProgressBar(total=total_steps, initial=step)

  def on_step(self, step: int) -> None:
    if self._bar is not None:
      self._bar.update(step)

  def on_log(self, step: int, metrics: dict[str, float]) -> None:
    if self._bar is not None:
      self._bar.update(step, metrics)

  def on_train_end(self, result: "TrainResult") -> None:
    self.close()

  def close(self) -> None:
    """Also called when training stops on an error."""
    if self._bar is not None:
      self._bar.close()
      self._bar = None
