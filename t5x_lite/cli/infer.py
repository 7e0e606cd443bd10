"""`t5x-lite infer`: generate text for inputs, or score (input, target) pairs, with a run's
checkpoint, from the command line or a file of any size.

With --output the results go to a JSON Lines file, one record per input, written as each
chunk finishes; a run that stops part-way (killed, preempted) is resumed by the same command,
which skips the records already written. In a multi-process run every process reads the
inputs and holds its own rows of each batch; process 0 writes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Iterator, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from t5x_lite import api, checkpoints, decoding, evaluation
from t5x_lite.cli.common import (
  add_distributed_arguments,
  add_override_argument,
  check_output_directory,
  initialize_distributed,
)
from t5x_lite.errors import ConfigError
from t5x_lite.fileio import write_atomically

# Inputs handed to the model at once, in batches: each chunk's records are then written.
_CHUNK_BATCHES = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, help="directory of a `t5x-lite train` run")
  parser.add_argument("--mode", choices=("generate", "score"), default="generate",
                      help="generate: decode each input; score: the log-likelihood of each "
                           "target given its input (default generate)")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--input", dest="inputs", action="append", metavar="TEXT",
                      help="an input text (repeatable)")
  source.add_argument("--input-file",
                      help="one input per line; .jsonl: one object per line (--input-field); "
                           "score mode: .jsonl, or INPUT<TAB>TARGET lines")
  parser.add_argument("--target", dest="targets", action="append", metavar="TEXT",
                      help="score mode with --input: the target of each --input, in order")
  parser.add_argument("--input-field", default="inputs", help=".jsonl field of the input")
  parser.add_argument("--target-field", default="targets", help=".jsonl field of the target")
  parser.add_argument("--output", default=None,
                      help="JSON Lines file to write (default: print); resumed if a run writing "
                           "it stopped part-way")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--method", choices=decoding.METHODS, default="greedy")
  parser.add_argument("--max-decode-length", type=int, default=None,
                      help="tokens to generate at most (default: data.targets_length)")
  parser.add_argument("--batch-size", type=int, default=32, help="inputs decoded together")
  parser.add_argument("--temperature", type=float, default=1.0, help="sample: softmax temperature")
  parser.add_argument("--top-k", type=int, default=0, help="sample: keep the k most likely (0 = all)")
  parser.add_argument("--top-p", type=float, default=1.0, help="sample: nucleus mass (1 = all)")
  parser.add_argument("--num-beams", type=int, default=4, help="beam: beams per input")
  parser.add_argument("--length-penalty", type=float, default=0.6, help="beam: alpha")
  parser.add_argument("--seed", type=int, default=0, help="sample: random seed")
  add_override_argument(parser)
  add_distributed_arguments(parser)


def _read_lines(path: str) -> list[str]:
  try:
    with open(path, encoding="utf-8") as f:
      return f.read().splitlines()
  except UnicodeDecodeError as e:
    raise ConfigError(f"--input-file {path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                      "convert it to UTF-8.") from None
  except OSError as e:
    raise ConfigError(f"cannot read --input-file {path} ({e.strerror}).") from None


def _field(record: dict, name: str, flag: str, path: str, number: int) -> str:
  value = record.get(name) if isinstance(record, dict) else None
  if not isinstance(value, str):
    raise ConfigError(f"{path} line {number} has no text field {name!r}; name the field with "
                      f"{flag}.")
  return value


def read_examples(args: argparse.Namespace) -> tuple[list[str], Optional[list[str]]]:
  """(inputs, targets): targets only in score mode."""
  scoring = args.mode == "score"
  if args.input_file is None:
    inputs = args.inputs
    targets = args.targets
    if scoring and (targets is None or len(targets) != len(inputs)):
      raise ConfigError(f"--mode score needs one --target per --input (got {len(inputs)} "
                        f"--input and {len(targets or [])} --target), or an --input-file.")
    if not scoring and targets:
      raise ConfigError("--target is for --mode score.")
  else:
    path = args.input_file
    lines = [(number, line) for number, line in enumerate(_read_lines(path), 1) if line.strip()]
    if path.endswith(".jsonl"):
      records = []
      for number, line in lines:
        try:
          records.append((number, json.loads(line)))
        except ValueError as e:
          raise ConfigError(f"{path} line {number} is not JSON ({e}).") from None
      inputs = [_field(r, args.input_field, "--input-field", path, n) for n, r in records]
      targets = ([_field(r, args.target_field, "--target-field", path, n) for n, r in records]
                 if scoring else None)
    elif scoring:
      pairs = [line.split("\t") for _, line in lines]
      bad = next((n for (n, _), pair in zip(lines, pairs) if len(pair) != 2), None)
      if bad is not None:
        raise ConfigError(f"{path} line {bad} is not INPUT<TAB>TARGET; --mode score reads such "
                          "lines, or .jsonl records.")
      inputs, targets = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
      inputs, targets = [line for _, line in lines], None
  if not any(text.strip() for text in inputs):
    raise ConfigError("no input text; pass --input TEXT or a non-empty --input-file.")
  return inputs, targets


class _Output:
  """The --output file and its progress marker (OUTPUT.progress.json, present while a job is
  unfinished), which names the job so that only the same job resumes it."""

  def __init__(self, path: str, job: str, overwrite: bool):
    self.path, self.marker, self.job = path, path + ".progress.json", job
    check_output_directory(path)
    unfinished = self._unfinished_job()
    if os.path.exists(path) and not overwrite and unfinished != job:
      why = ("was left part-way by another infer job (other inputs, checkpoint or settings)"
             if unfinished else "exists")
      raise ConfigError(f"--output {path} {why}; pass --overwrite to replace it, or choose "
                        "another --output.")
    self.resuming = os.path.exists(path) and unfinished == job and not overwrite

  def _unfinished_job(self) -> Optional[str]:
    try:
      with open(self.marker, encoding="utf-8") as f:
        return json.load(f)["job"]
    except (OSError, ValueError, KeyError, TypeError):
      return None

  def records_done(self) -> int:
    """Complete records already written; a last line a kill cut short is dropped."""
    if not self.resuming:
      return 0
    with open(self.path, "rb") as f:
      data = f.read()
    complete = data[:data.rfind(b"\n") + 1]
    if len(complete) != len(data):
      with open(self.path, "r+b") as f:
        f.truncate(len(complete))
    return complete.count(b"\n")

  def open(self):
    if not self.resuming:
      write_atomically(self.path, "")
    write_atomically(self.marker, json.dumps({"job": self.job}))
    return open(self.path, "a", encoding="utf-8")

  def finish(self) -> None:
    os.remove(self.marker)


def _job_id(args: argparse.Namespace, step: int, inputs: list[str],
            targets: Optional[list[str]], options: dict) -> str:
  fields = {"workdir": os.path.abspath(args.workdir), "step": step, "mode": args.mode,
            "method": args.method, "max_decode_length": args.max_decode_length,
            "seed": args.seed, "options": options, "overrides": args.overrides,
            "inputs": inputs, "targets": targets}
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _records(model: api.Model, args: argparse.Namespace, inputs: list[str],
             targets: Optional[list[str]], options: dict, offset: int) -> Iterator[dict]:
  """One record per input, computed a chunk at a time; `offset`: the index of inputs[0]
  among all inputs (sampling seeds follow it, so a resumed job samples as it would have)."""
  chunk = args.batch_size * _CHUNK_BATCHES
  for start in range(0, len(inputs), chunk):
    texts = inputs[start:start + chunk]
    if args.mode == "score":
      pairs = targets[start:start + chunk]
      scores = model.score(texts, pairs, per_token=True, batch_size=args.batch_size,
                           progress=False)
      for text, target, token_scores in zip(texts, pairs, scores):
        yield {"input": text, "target": target, "score": float(token_scores.sum()),
               "token_scores": [float(s) for s in token_scores]}
    else:
      outputs = model.generate(texts, method=args.method, max_length=args.max_decode_length,
                               batch_size=args.batch_size, seed=args.seed + offset + start,
                               progress=False, **options)
      for text, output in zip(texts, outputs):
        yield {"input": text, "output": output}


def run(args: argparse.Namespace) -> int:
  # Every flag is checked before the checkpoint is restored, which takes a while.
  inputs, targets = read_examples(args)
  if args.batch_size < 1:
    raise ConfigError(f"--batch-size={args.batch_size} must be at least 1.")
  options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                 num_beams=args.num_beams, length_penalty=args.length_penalty)
  config = evaluation.load_config(args.workdir, args.overrides)  # Saved with its vocab_size.
  decoding.check_settings(config.model, args.method,
                          (config.data.targets_length if args.max_decode_length is None
                           else args.max_decode_length), **options,
                          name=lambda arg: "--" + arg.replace("_", "-"))
  initialize_distributed(args)
  step = args.step if args.step is not None else checkpoints.latest_step(args.workdir)
  output = _Output(args.output, _job_id(args, step, inputs, targets, options),
                   args.overwrite) if args.output else None
  model = api.load(args.workdir, step=step, overrides=args.overrides)
  main = jax.process_index() == 0
  done = output.records_done() if output and main else 0
  if jax.process_count() > 1:  # Every process must skip what process 0 has written.
    done = int(multihost_utils.broadcast_one_to_all(np.int64(done)))
  too_long = model.vocabulary and sum(len(ids) >= config.data.inputs_length
                                      for ids in model.vocabulary.encode_batch(inputs[done:]))
  if too_long and main:
    print(f"{too_long} input(s) cut to data.inputs_length={config.data.inputs_length} tokens.",
          file=sys.stderr)
  records = _records(model, args, inputs[done:], None if targets is None else targets[done:],
                     options, offset=done)
  if output is None:
    for record in records:
      if main:
        line = (json.dumps(record) if args.mode == "score"
                else record["output"].replace("\n", "\\n"))
        print(line, flush=True)
    return 0
  if done and main:
    print(f"Resuming {args.output}: {done} of {len(inputs)} records were written.",
          file=sys.stderr)
  with tqdm(total=len(inputs), initial=done, unit="input", disable=not main,
            dynamic_ncols=True) as bar:
    if main:
      with output.open() as f:
        for record in records:
          f.write(json.dumps(record, ensure_ascii=False) + "\n")
          f.flush()
          bar.update(1)
      output.finish()
    else:
      for _ in records:  # The other processes compute their rows of every batch.
        pass
  if main:
    print(f"Wrote {len(inputs)} records to {args.output}", file=sys.stderr)
  return 0
