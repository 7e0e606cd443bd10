"""Where training metrics go: metrics.jsonl, the trackers of train.loggers (TensorBoard event
files, Weights & Biases) and a progress bar.

Only the writing process (process 0) touches files. metrics.jsonl holds one
JSON object per logged step and split; a resumed run first drops lines past
the step it resumed from, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from typing import TYPE_CHECKING, Optional, Sequence

from tqdm import tqdm

from t5x_lite.config import ExperimentConfig, to_dict
from t5x_lite.errors import ConfigError
from t5x_lite.fileio import write_atomically

if TYPE_CHECKING:
  import tensorboardX

_LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error")


def read_metrics(workdir: str) -> list[dict]:
  """The records of WORKDIR/metrics.jsonl. A last line without its newline is one a kill cut
  short: it is left out. Any other line that is not a JSON record is a clear error."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = f.read().split("\n")
  records = []
  for number, line in enumerate(lines[:-1], 1):  # lines[-1]: after the last newline.
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if not isinstance(record, dict) or "step" not in record or "split" not in record:
      raise ConfigError(
          f"{path} line {number} is not a metrics record ({line[:60]!r}); the file was edited "
          "or damaged. Move it aside to start a new one (TensorBoard keeps the curves).")
    records.append(record)
  return records


def lower_is_better(metric_name: str) -> bool:
  """The one rule for which way a metric improves (checkpoint retention, `compare`): lower
  when the name contains loss, perplexity or error, higher otherwise (accuracy, BLEU, ...)."""
  return any(word in metric_name.lower() for word in _LOWER_IS_BETTER)


def import_wandb():
  """wandb, imported only by runs that log to it."""
  try:
    import wandb  # pylint: disable=import-outside-toplevel  (optional, slow import)
  except ImportError:
    raise ConfigError('train.loggers includes "wandb", but wandb is not installed: pip install '
                      '"t5x-lite[wandb]", or drop "wandb" from train.loggers.') from None
  return wandb


def check_loggers_installed(loggers: Sequence[str]) -> None:
  """Fails before any work, rather than after the data and state are set up."""
  if "wandb" in loggers:
    import_wandb()


def summary_writer(logdir: str, purge_step: Optional[int] = None) -> tensorboardX.SummaryWriter:
  """tensorboardX's SummaryWriter, which writes event files without TensorFlow. Its first
  import hides torch where torch is installed but not yet imported: tensorboardX imports it
  (3-5 s on a CPU) only for type hints, and again if ever given a torch tensor. Another
  thread's first `import torch` during that import would fail; t5x-lite imports torch only in
  its Hugging Face commands."""
  hide_torch = "torch" not in sys.modules and "tensorboardX" not in sys.modules
  if hide_torch:
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError.
  try:
    import tensorboardX  # pylint: disable=import-outside-toplevel  (slow import)
  finally:
    if hide_torch and sys.modules.get("torch", 0) is None:
      del sys.modules["torch"]
  return tensorboardX.SummaryWriter(logdir, purge_step=purge_step)


class _TensorBoard:
  """WORKDIR/tensorboard; a resumed run purges the steps after the one it resumed from."""

  def __init__(self, workdir: str, resume_step: int, config: ExperimentConfig):
    del config
    self._writer = summary_writer(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)

  def log(self, step: int, scalars: dict) -> None:
    for tag, value in scalars.items():
      self._writer.add_scalar(tag, value, step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class _WandB:
  """One W&B run per workdir: its id, kept in WORKDIR/wandb_run_id, makes a resumed training
  run continue it. W&B ignores steps below the last it has: the steps a killed run logged
  after its last checkpoint keep their first values when the resumed run logs them again."""

  def __init__(self, workdir: str, resume_step: int, config: ExperimentConfig):
    del resume_step
    id_path = os.path.join(workdir, "wandb_run_id")
    if not os.path.exists(id_path):
      write_atomically(id_path, secrets.token_hex(6) + "\n")
    with open(id_path, encoding="utf-8") as f:
      run_id = f.read().strip()
    train = config.train
    self._run = import_wandb().init(
        project=train.wandb_project, entity=train.wandb_entity or None,
        name=config.name or os.path.basename(os.path.abspath(workdir)), dir=workdir,
        config=to_dict(config), id=run_id, resume="allow")

  def log(self, step: int, scalars: dict) -> None:
    self._run.log(scalars, step=step)

  def close(self) -> None:
    self._run.finish()


_LOGGERS = {"tensorboard": _TensorBoard, "wandb": _WandB}


class MetricWriter:
  """metrics.jsonl, and each logger of config.train.loggers (default: TensorBoard) under the
  tags "SPLIT/METRIC"."""

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int = 0,
               config: Optional[ExperimentConfig] = None):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._sinks: list = []
    if not enabled:
      return
    self._truncate_after(resume_step)
    config = config or ExperimentConfig()
    try:
      for name in config.train.loggers:
        self._sinks.append(_LOGGERS[name](workdir, resume_step, config))
    except BaseException:  # wandb.init failed (not logged in, ...): close those opened.
      self.close()
      raise

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
    scalars = {f"{split}/{name}": value for name, value in metrics.items()}
    for sink in self._sinks:
      sink.log(step, scalars)

  def close(self) -> None:
    while self._sinks:
      self._sinks.pop().close()


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
