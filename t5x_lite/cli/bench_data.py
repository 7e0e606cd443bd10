"""`t5x-lite bench-data`: the input pipeline's throughput, in examples/s into packed batches."""

from __future__ import annotations

import argparse
import dataclasses

from t5x_lite.config import DataConfig, ExperimentConfig, load_experiment, validate
from t5x_lite.data import bench, pipeline
from t5x_lite.data.errors import name_flags
from t5x_lite.errors import ConfigError, UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--experiment", default=None,
                      help="measure this experiment's data (its task or mixture) instead of the "
                           "data flags below; --set KEY=VALUE overrides it")
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
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
  parser.add_argument("--per-document", "--per_document", dest="per_document", action="store_true",
                      help="cut each document on its own instead of T5's concatenated stream")
  parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=128)
  parser.add_argument("--batches", type=int, default=50)
  parser.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=2,
                      help="SentencePiece's threads tokenizing each block of documents")
  parser.add_argument("--worker-processes", "--worker_processes", dest="worker_processes", type=int,
                      default=0, help="grain worker processes reading and tokenizing blocks ahead")


def run(args: argparse.Namespace) -> int:
  for flag, value in (("--batch-size", args.batch_size), ("--batches", args.batches)):
    if value < 1:
      raise ConfigError(f"{flag}={value} must be at least 1.")
  if args.experiment:
    config = load_experiment(args.experiment, args.overrides).data
    flags: dict[str, str] = {}
  else:
    if args.overrides:
      raise ConfigError("--set overrides an experiment's settings: give --experiment too, or use "
                        "the data flags.")
    # Flags set the DataConfig field of their dest (--data-dir sets data_dir, --split train_split).
    fields = {f.name for f in dataclasses.fields(DataConfig)} & set(vars(args))
    config = DataConfig(pack=not args.no_pack, concatenate_documents=not args.per_document,
                        **{name: getattr(args, name) for name in fields})
    flags = {f"data.{name}": "--" + name.replace("_", "-") for name in fields}
    flags["data.train_split"] = flags["data.train_split / data.eval_split"] = "--split"
  try:
    validate(ExperimentConfig(data=config))  # Checks the objective and lengths like `train`.
    pipeline.prepare_data(config)  # A mixture's vocabulary, as `train` finds it.
    result = bench.measure(config, batch_size=args.batch_size, batches=args.batches)
  except UserError as e:
    raise name_flags(e, flags) from e
  stream = "T5 stream" if config.concatenate_documents else "per document"
  objective = "" if len(result["task_shares"]) > 1 else f" {config.objective}"
  print(f"{config.dataset}{objective} {config.inputs_length}/{config.targets_length} "
        f"{stream} pack={config.pack} batch={args.batch_size}: "
        f"{result['examples_per_s']:.0f} examples/s, {result['rows_per_s']:.0f} rows/s, "
        f"{result['examples_per_row']:.2f} examples/row, packing efficiency "
        f"{result['packing_efficiency']:.3f}, ended in epoch {result['epoch']}")
  if len(result["task_shares"]) > 1:
    print(f"{'task':<32} {'share':>8} {'rate':>8}")
    for name, (share, rate) in result["task_shares"].items():
      print(f"{name:<32} {share:8.3f} {rate:8.3f}")
  return 0
