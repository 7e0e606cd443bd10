"""Throughput of the loader (examples/s into packed batches), for `t5x-lite bench-data`.

Only batches the loader makes after the clock starts are timed (see measure), so a short run
reports the rate the loader sustains, not how fast it hands over batches it had ready.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time

from t5x_lite.config import ConfigError, DataConfig, ExperimentConfig, UserError, validate
from t5x_lite.data.errors import name_flags
from t5x_lite.data.loader import Loader
from t5x_lite.data.packing import packing_efficiency
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
  return {
      "examples_per_s": examples / elapsed,
      "rows_per_s": batches * batch_size / elapsed,
      "examples_per_row": examples / (batches * batch_size),
      # Batches all have the same shape, so the mean is the fraction over all of them.
      "packing_efficiency": sum(packing_efficiency(b) for b in timed) / batches,
      "epoch": loader.get_state()["epoch"] + 1,  # The one the timed batches ended in, from 1.
  }


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--dataset", default="python_docs")
  parser.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None)
  parser.add_argument("--vocabulary", default="", help='.model path, or "" to train/reuse one')
  parser.add_argument("--vocab-train-size", "--vocab_train_size", dest="vocab_train_size", type=int,
                      default=1000)
  parser.add_argument("--vocab-extra-ids", "--vocab_extra_ids", dest="vocab_extra_ids", type=int,
                      default=100)
  parser.add_argument("--split", dest="train_split", default="train")
  parser.add_argument("--text-feature", "--text_feature", dest="text_feature", default="text")
  parser.add_argument("--inputs-feature", "--inputs_feature", dest="inputs_feature",
                      default="inputs", help="with --objective seq2seq")
  parser.add_argument("--targets-feature", "--targets_feature", dest="targets_feature",
                      default="targets", help="with --objective seq2seq")
  parser.add_argument("--objective", default="span_corruption")
  parser.add_argument("--inputs-length", "--inputs_length", dest="inputs_length", type=int,
                      default=512)
  parser.add_argument("--targets-length", "--targets_length", dest="targets_length", type=int,
                      default=114)
  parser.add_argument("--mean-noise-span-length", "--mean_noise_span_length",
                      dest="mean_noise_span_length", type=float, default=3.0)
  parser.add_argument("--no-pack", "--no_pack", dest="no_pack", action="store_true")
  parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=128)
  parser.add_argument("--batches", type=int, default=50)
  parser.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=2)


def run(args: argparse.Namespace) -> int:
  for flag, value in (("--batch-size", args.batch_size), ("--batches", args.batches)):
    if value < 1:
      raise ConfigError(f"{flag}={value} must be at least 1.")
  # Flags set the DataConfig field of their dest (--data-dir sets data_dir, --split train_split).
  fields = {f.name for f in dataclasses.fields(DataConfig)} & set(vars(args))
  config = DataConfig(pack=not args.no_pack, **{name: getattr(args, name) for name in fields})
  flags = {f"data.{name}": "--" + name.replace("_", "-") for name in fields}
  flags["data.train_split"] = flags["data.train_split / data.eval_split"] = "--split"
  try:
    validate(ExperimentConfig(data=config))  # Checks the objective and lengths like `train`.
    result = measure(config, batch_size=args.batch_size, batches=args.batches)
  except UserError as e:
    raise name_flags(e, flags) from e
  print(f"{config.dataset} {config.objective} {config.inputs_length}/{config.targets_length} "
        f"pack={config.pack} batch={args.batch_size}: "
        f"{result['examples_per_s']:.0f} examples/s, {result['rows_per_s']:.0f} rows/s, "
        f"{result['examples_per_row']:.2f} examples/row, packing efficiency "
        f"{result['packing_efficiency']:.3f}, ended in epoch {result['epoch']}")
  return 0
