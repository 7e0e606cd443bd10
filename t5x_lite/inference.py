"""`t5x-lite infer`: text in, generated text out, with a trained run's vocabulary and parameters.

Inputs are tokenized with the vocabulary saved in the workdir, cut to data.inputs_length (EOS
included, as in training) and decoded in batches: each batch is padded to the longest input
rounded up to a power of two, so a handful of shapes is compiled whatever the lengths.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterator, Optional, Sequence

import jax
import numpy as np

from t5x_lite import decoding, partitioning
from t5x_lite.cli import add_override_argument, check_output_directory
from t5x_lite.config import ConfigError
from t5x_lite.data import Vocabulary
from t5x_lite.evaluation import RestoredRun, load_config, restore_run

_MIN_BUCKET = 8


def encode_inputs(vocabulary: Vocabulary, texts: Sequence[str], inputs_length: int) -> list[np.ndarray]:
  """Token ids of each text, cut to inputs_length - 1, then EOS."""
  return [np.append(ids[:inputs_length - 1], decoding.EOS_ID).astype(np.int32)
          for ids in vocabulary.encode_batch(texts)]


def pad_batch(inputs: Sequence[np.ndarray], rows: int) -> np.ndarray:
  """(rows, bucket) int32: inputs left-aligned, 0-padded; spare rows hold a lone EOS."""
  longest = max(x.size for x in inputs)
  bucket = max(_MIN_BUCKET, 1 << (longest - 1).bit_length())
  batch = np.zeros((rows, bucket), np.int32)
  batch[len(inputs):, 0] = decoding.EOS_ID
  for row, tokens in enumerate(inputs):
    batch[row, :tokens.size] = tokens
  return batch


def generate(run: RestoredRun, texts: Sequence[str], *, batch_size: int = 32, method: str = "greedy",
             max_decode_length: Optional[int] = None, seed: int = 0,
             **decode_options) -> Iterator[str]:
  """Yields the decoded text of each input, in order.

  decode_options go to decoding.decode (temperature, top_k, top_p, num_beams, length_penalty);
  max_decode_length defaults to data.targets_length.
  """
  config = run.config
  if max_decode_length is None:
    max_decode_length = config.data.targets_length
  inputs = encode_inputs(run.vocabulary, texts, config.data.inputs_length)
  ways = partitioning.data_axis_size(run.setup.mesh, run.setup.rules)
  rows = -(-min(batch_size, max(len(inputs), 1)) // ways) * ways
  key = jax.random.key(seed)
  for index, start in enumerate(range(0, len(inputs), rows)):
    chunk = inputs[start:start + rows]
    tokens = jax.device_put(pad_batch(chunk, rows), run.setup.batch_sharding)
    out = decoding.decode(
        run.params, config.model, tokens, method=method,
        max_decode_length=max_decode_length,
        rng=jax.random.fold_in(key, index) if method == "sample" else None, **decode_options)
    for ids in np.asarray(jax.device_get(out.tokens))[:len(chunk)]:
      yield run.vocabulary.decode(ids)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, help="directory of a `t5x-lite train` run")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--input", dest="inputs", action="append", metavar="TEXT",
                      help="text to decode (repeatable)")
  source.add_argument("--input-file", help="file with one input per line")
  parser.add_argument("--output", default=None,
                      help="write one line per input here (default: print); newlines become \\n")
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


def _read_inputs(args: argparse.Namespace) -> list[str]:
  if args.input_file:
    try:
      with open(args.input_file, encoding="utf-8") as f:
        texts = f.read().splitlines()
    except OSError as e:
      raise ConfigError(f"cannot read --input-file {args.input_file} ({e.strerror}).") from e
  else:
    texts = args.inputs
  if not any(text.strip() for text in texts):
    raise ConfigError("no input text; pass --input TEXT or a non-empty --input-file.")
  return texts


def run(args: argparse.Namespace) -> int:
  # Every flag is checked before the checkpoint is restored, which takes a while.
  texts = _read_inputs(args)
  if args.output:
    check_output_directory(args.output)
  if args.batch_size < 1:
    raise ConfigError(f"--batch-size={args.batch_size} must be at least 1.")
  config = load_config(args.workdir, args.overrides)
  max_decode_length = (config.data.targets_length if args.max_decode_length is None
                       else args.max_decode_length)
  options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                 num_beams=args.num_beams, length_penalty=args.length_penalty)
  decoding.check_settings(config.model, args.method, max_decode_length, **options,
                          name=lambda arg: "--" + arg.replace("_", "-"))
  restored = restore_run(args.workdir, config, args.step)
  too_long = sum(len(ids) >= config.data.inputs_length for ids in restored.vocabulary.encode_batch(texts))
  if too_long:
    print(f"{too_long} input(s) cut to data.inputs_length={config.data.inputs_length} tokens.",
          file=sys.stderr)
  outputs = generate(restored, texts, batch_size=args.batch_size, method=args.method,
                     max_decode_length=max_decode_length, seed=args.seed, **options)
  lines = (text.replace("\n", "\\n") + "\n" for text in outputs)
  if args.output:
    with open(args.output, "w", encoding="utf-8") as f:
      f.writelines(lines)
  else:
    sys.stdout.writelines(lines)
  return 0
