"""`t5x-lite eval`: a saved run's parameters scored on a whole split, on the devices at hand.

Only the parameters are restored (no optimizer state), into the shardings of the run's saved
configuration (WORKDIR/config.json, with --set overrides); a saved mesh that does not fit this
machine falls back to data parallelism over all its devices. Every example of the split is
counted once; seq2seq tasks are also decoded and scored (exact match, BLEU, ROUGE). Results go
to WORKDIR/eval/step_N_SPLIT.json and TensorBoard (WORKDIR/eval/tensorboard).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys
from typing import Any, Optional

import jax

from t5x_lite import checkpoints, distributed, partitioning, tasks, trainer
from t5x_lite.cli import add_override_argument
from t5x_lite.compare import format_table
from t5x_lite.config import (ConfigError, ExperimentConfig, MeshConfig, apply_overrides, load_json,
                             validate)
from t5x_lite.data import Vocabulary, make_eval_loader

EVAL_DIRNAME = "eval"
NUM_SAMPLES = 20  # Decoded examples kept in the results file, to eyeball.


@dataclasses.dataclass
class RestoredRun:
  """A run's configuration (fitted to this machine), vocabulary and parameters at one step."""

  config: ExperimentConfig
  setup: trainer.Setup
  vocabulary: Vocabulary
  params: Any
  step: int


def fit_to_devices(config: ExperimentConfig) -> None:
  """Keeps the saved mesh if it fits the devices here, else data parallelism over all of them;
  rounds the batch up to what the batch sharding needs (one microbatch: no gradients here);
  swaps cuDNN attention (GPU only) for XLA's elsewhere, as a run trained on GPUs may ask."""
  backend = jax.default_backend()
  if config.model.attention_impl == "cudnn" and backend != "gpu":
    print(f"model.attention_impl='cudnn' needs a GPU; using 'xla' on {backend}.", file=sys.stderr)
    config.model.attention_impl = "xla"
  try:
    partitioning.resolve_mesh_shape(config.mesh, jax.device_count())
  except ConfigError as e:
    print(f"The saved mesh does not fit this machine ({e}); using data parallelism over its "
          f"{jax.device_count()} devices instead.", file=sys.stderr)
    config.mesh = MeshConfig()
  mesh = partitioning.make_mesh(config.mesh)
  ways = partitioning.data_axis_size(mesh, partitioning.logical_rules(config.mesh))
  config.train.grad_accum_steps = 1
  config.train.batch_size = -(-config.train.batch_size // ways) * ways


def load_config(workdir: str, overrides: Optional[list[str]] = None) -> ExperimentConfig:
  """WORKDIR/config.json with the overrides applied, reading the vocabulary kept in WORKDIR."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ConfigError(f"{workdir} has no config.json; pass the --workdir of a `t5x-lite train` run.")
  config = load_json(path)
  config.data.vocabulary = os.path.join(workdir, trainer.VOCABULARY_FILE)
  if not os.path.isfile(config.data.vocabulary):
    raise ConfigError(
        f"{workdir} has no {trainer.VOCABULARY_FILE}, the vocabulary its model was trained with "
        "(`t5x-lite train` keeps a copy there); copy that SentencePiece model to "
        f"{config.data.vocabulary}.")
  return validate(apply_overrides(config, overrides or []))


def restore_run(workdir: str, config: ExperimentConfig, step: Optional[int] = None) -> RestoredRun:
  """The parameters of `step` (default: the latest) laid out for this machine's devices."""
  fit_to_devices(config)
  vocabulary = trainer.resolve_vocabulary(config, workdir)
  setup = trainer.make_setup(config)
  if step is None:
    step = checkpoints.latest_step(workdir)
  params = checkpoints.restore_params(workdir, setup.abstract_state.params, step)
  return RestoredRun(config, setup, vocabulary, params, step)


def evaluate_run(run: RestoredRun, split: str) -> tuple[dict, Optional[tasks.Seq2SeqScorer]]:
  """Metrics over every example of `split` once (and the scorer holding the decodes, if any)."""
  config = dataclasses.replace(run.config, data=dataclasses.replace(run.config.data, eval_split=split))
  scorer = tasks.make_scorer(config, run.vocabulary)
  # Closed on errors too, so no prefetch thread outlives the evaluation.
  with contextlib.closing(make_eval_loader(config, run.vocabulary, jax.process_index(),
                                           jax.process_count())) as loader:
    metrics = trainer.evaluate(run.setup, trainer.make_eval_step(run.setup), run.params, loader,
                               config.model.vocab_size, scorer)
    metrics["examples"] = loader.examples_seen
  return metrics, scorer


def results_path(workdir: str, step: int, split: str) -> str:
  safe_split = re.sub(r"[^\w.-]+", "_", split)  # "validation[:10%]" -> "validation_10_"
  return os.path.join(workdir, EVAL_DIRNAME, f"step_{step}_{safe_split}.json")


def write_results(workdir: str, step: int, split: str, metrics: dict,
                  scorer: Optional[tasks.Seq2SeqScorer]) -> str:
  """The JSON file and TensorBoard scalars (tag SPLIT/METRIC at the checkpoint's step)."""
  path = results_path(workdir, step, split)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  record = {"step": step, "split": split, "metrics": metrics,
            "samples": scorer.samples(NUM_SAMPLES) if scorer else []}
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=2)
  os.replace(path + ".tmp", path)
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel  (slow import)
  with SummaryWriter(os.path.join(workdir, EVAL_DIRNAME, "tensorboard")) as writer:
    for name, value in metrics.items():
      writer.add_scalar(f"{split}/{name}", value, step)
  return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, help="directory of a `t5x-lite train` run")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--split", default=None, help="split to evaluate (default: data.eval_split)")
  add_override_argument(parser)
  distributed.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
  distributed.initialize(args)
  # The whole split unless an override limits it.
  config = load_config(args.workdir, ["data.max_eval_examples=None", *args.overrides])
  restored = restore_run(args.workdir, config, args.step)
  split = args.split or config.data.eval_split
  metrics, scorer = evaluate_run(restored, split)
  if jax.process_index() == 0:
    path = write_results(args.workdir, restored.step, split, metrics, scorer)
    rows = [[name, f"{value:.6g}"] for name, value in metrics.items()]
    print(f"{config.name} step {restored.step}, split {split!r}:")
    print(format_table(["metric", "value"], rows))
    print(f"Wrote {path}")
  return 0
