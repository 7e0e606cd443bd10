"""`t5x-lite compare`: ablation runs side by side.

For each run directory: the configuration keys whose values differ between the runs (from
config.json), final and best metrics (from metrics.jsonl), and one PNG with the training and
validation loss of every run against the step.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

from t5x_lite.config import ConfigError
from t5x_lite.metrics import lower_is_better, read_metrics

DEFAULT_PLOT = "compare_runs.png"
_ABSENT = "-"
# Validation metrics summarised as final and best.
_SUMMARIZED = ("loss", "accuracy", "exact_match", "bleu", "rougeL")
# Keys that may name a file in the run's own workdir (a resumed run's config names its own copy of
# the vocabulary): such a value is shown relative to the run, so runs do not differ by directory.
_PER_RUN_PATHS = ("data.vocabulary",)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """Left-aligned columns under a header and a rule, for a terminal."""
  widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
  lines = [list(header), ["-" * w for w in widths], *rows]
  return "\n".join("  ".join(f"{c!s:<{w}}" for c, w in zip(line, widths)).rstrip() for line in lines)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """{"model": {"d_ff": 4}} -> {"model.d_ff": 4}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = value
  return flat


def load_run(workdir: str) -> dict:
  """{"workdir", "config" (dotted keys; its own files as WORKDIR/...), "records" (metrics.jsonl)}
  of one run directory."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ConfigError(f"{workdir} has no config.json; pass directories of `t5x-lite train` runs.")
  with open(path) as f:
    config = flatten(json.load(f))
  own = os.path.realpath(workdir)
  for key in _PER_RUN_PATHS:
    value = config.get(key)
    if value and os.path.realpath(value).startswith(own + os.sep):
      config[key] = os.path.join("WORKDIR", os.path.relpath(os.path.realpath(value), own))
  return {"workdir": workdir, "config": config, "records": read_metrics(workdir)}


def labels(workdirs: Sequence[str]) -> list[str]:
  """Directory names, or the paths as given where two names coincide."""
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  return names if len(set(names)) == len(names) else list(workdirs)


def config_differences(configs: Sequence[dict]) -> list[str]:
  """Dotted keys whose values are not the same in every configuration (keys of any of them)."""
  keys = sorted(set().union(*configs))
  return [k for k in keys if len({json.dumps(c.get(k, _ABSENT)) for c in configs}) > 1]


def summarize(records: Sequence[dict]) -> dict[str, float]:
  """Final train loss; final and best validation loss, accuracy and decoded-text metrics."""
  train = [r for r in records if r["split"] == "train"]
  validation = [r for r in records if r["split"] == "validation"]
  out: dict[str, float] = {}
  if train:
    out["final step"] = train[-1]["step"]
    out["final train loss"] = train[-1]["loss"]
  for name in _SUMMARIZED:
    values = [r[name] for r in validation if name in r]
    if values:
      out[f"final validation {name}"] = values[-1]
      out[f"best validation {name}"] = min(values) if lower_is_better(name) else max(values)
  return out


def _cell(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4f}"
  return value if isinstance(value, str) and value else json.dumps(value)


def comparison_table(runs: Sequence[dict]) -> str:
  """Rows: the differing configuration keys, then the metrics; one column per run."""
  keys = config_differences([r["config"] for r in runs])
  summaries = [summarize(r["records"]) for r in runs]
  metric_names = list(dict.fromkeys(name for s in summaries for name in s))
  rows = [[key, *(_cell(r["config"].get(key, _ABSENT)) for r in runs)] for key in keys]
  rows += [[name, *(_cell(s.get(name, _ABSENT)) for s in summaries)] for name in metric_names]
  return format_table(["", *labels([r["workdir"] for r in runs])], rows)


def plot_losses(runs: Sequence[dict], path: Optional[str] = None) -> Any:
  """Training and validation loss against the step, one colour per run: the matplotlib
  Figure (a notebook shows it), also written as a PNG to `path` if given."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  figure = Figure(figsize=(12, 4.5), layout="constrained")
  FigureCanvasAgg(figure)
  axes = figure.subplots(1, 2, sharey=True)
  for index, (run, label) in enumerate(zip(runs, labels([r["workdir"] for r in runs]))):
    for ax, split in zip(axes, ("train", "validation")):
      points = [(r["step"], r["loss"]) for r in run["records"] if r["split"] == split]
      if points:
        steps, losses = zip(*points)
        dots = split == "validation" or len(points) == 1
        ax.plot(steps, losses, color=f"C{index}", marker="o" if dots else None, markersize=3,
                label=label)
  for ax, split in zip(axes, ("train", "validation")):
    ax.set_title(f"{split} loss")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  axes[0].set_ylabel("cross-entropy (nats/token)")
  if path:
    figure.savefig(path, dpi=120)
  return figure


def compare(workdirs: Sequence[str], plot_path: Optional[str] = DEFAULT_PLOT) -> str:
  """The comparison table; also writes the loss plot unless plot_path is None."""
  runs = [load_run(w) for w in workdirs]
  if plot_path:
    plot_losses(runs, plot_path)
  return comparison_table(runs)


