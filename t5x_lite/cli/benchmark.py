"""`t5x-lite benchmark`: the train step's steady-state speed and MFU, one JSON line."""

from __future__ import annotations

import argparse
import json
import os

import jax

from t5x_lite import benchmark
from t5x_lite.cli.common import add_experiment_arguments
from t5x_lite.config import load_experiment
from t5x_lite.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_experiment_arguments(parser)
  parser.add_argument("--batch", type=int, default=None,
                      help="global batch size (default: the experiment's train.batch_size)")
  parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
  parser.add_argument("--warmup", type=int, default=3,
                      help="untimed steps after compilation (default 3)")
  parser.add_argument("--data", choices=("synthetic", "real"), default="synthetic",
                      help="real: also time the step fed by the experiment's training loader "
                           "(the \"input\" record; default synthetic batches only)")
  parser.add_argument("--workdir", default=None,
                      help="with --data real: a run directory whose vocabulary to use or keep, as "
                           "train's (default: a temporary directory)")
  parser.add_argument("--peak-tflops", type=float, default=0.0,
                      help="peak bf16 TFLOP/s of one device for MFU (default: known devices, "
                           "the datasheet's, e.g. 989 for an H100 SXM; otherwise MFU is null)")


def run(args: argparse.Namespace) -> int:
  config = load_experiment(args.experiment, args.overrides)
  if args.batch is not None:
    if args.batch < 1 or args.batch % config.train.grad_accum_steps:
      raise ConfigError(f"--batch {args.batch} must be a positive multiple of "
                        f"train.grad_accum_steps={config.train.grad_accum_steps}.")
    config.train.batch_size = args.batch
  vocabulary = benchmark.resolve_vocabulary(config, args.workdir) if args.data == "real" else None
  record = benchmark.benchmark(config, steps=args.steps, warmup=args.warmup,
                     peak_flops_per_device=args.peak_tflops * 1e12 or config.train.peak_flops_per_device,
                     experiment=os.path.splitext(os.path.basename(args.experiment))[0],
                     vocabulary=vocabulary)
  if jax.process_index() == 0:
    print(json.dumps(record), flush=True)
  return 0
