"""`t5x-lite info`: parameters, FLOPs and memory of an experiment, before anything is allocated."""

from __future__ import annotations

import argparse
import json
import sys

import jax

from t5x_lite import info
from t5x_lite.cli.common import add_experiment_arguments
from t5x_lite.config import load_experiment
from t5x_lite.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_experiment_arguments(parser)
  parser.add_argument("--devices", type=int, default=None,
                      help="plan memory for this many devices (default: the devices present; "
                           "1 with --target, where a TPU slice sets its own)")
  parser.add_argument("--target", default=None,
                      help="also compile the train step for this device and report XLA's memory "
                           "accounting: h100, h200, a100 (needs jax's CUDA plugin, not a GPU), a "
                           "TPU slice such as v5e:2x2 or v5p:2x2x1 (needs libtpu, not a TPU), or "
                           "cpu (this machine)")
  parser.add_argument("--suggest", action="store_true",
                      help="with --target (a GPU or TPU slice): compile candidates and print the "
                           "cheapest model.remat_policy that fits at the experiment's batch and "
                           "the largest batch that fits (minutes per candidate for large models)")
  parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run(args: argparse.Namespace) -> int:
  if args.devices is not None and args.devices < 1:
    raise ConfigError(f"--devices {args.devices}: plan for a positive number of devices.")
  if args.suggest and args.target is None:
    raise ConfigError("--suggest compiles for a device: add --target, e.g. --target h100 or v5e:2x2.")
  experiment = load_experiment(args.experiment, args.overrides)
  compiled = None
  if args.target is not None:
    from t5x_lite import aot  # pylint: disable=import-outside-toplevel  (imports the trainer)
    devices = aot.compile_only_devices(args.target, args.devices)
    aot.resolve_auto_dtype(experiment, args.target)
    if experiment.model.vocab_size is None:
      experiment.model.vocab_size = info.resolved_vocab_size(experiment.data)
    if args.suggest:
      return _suggest(experiment, args, devices)
    compiled = aot.compile_report(experiment, args.target, devices)
    num_devices = len(devices)
  else:
    num_devices = args.devices or jax.device_count()
  try:
    report = info.describe(experiment, num_devices)
  except ConfigError as e:
    if args.devices is not None or args.target is not None:
      raise
    raise ConfigError(
        f"{e} (This machine has {num_devices} device(s); to plan for another, add --devices N.)"
    ) from None
  if compiled is not None:
    report["compiled"] = compiled
  print(json.dumps(report) if args.json else info.format_report(report))
  return 0


def _suggest(experiment, args: argparse.Namespace, devices: list) -> int:
  from t5x_lite import suggest  # pylint: disable=import-outside-toplevel  (imports the trainer)

  def progress(candidate: dict) -> None:
    verdict = "fits" if candidate.get("fits") else "does not fit"
    print(f"compiled batch {candidate['batch_size']} remat {candidate['remat_policy']}: {verdict}",
          file=sys.stderr, flush=True)

  result = suggest.suggest(experiment, args.target, devices, on_candidate=progress)
  print(json.dumps(result) if args.json else suggest.format_suggestion(result))
  return 0
