"""The PyTorch peer of `t5x-lite benchmark`: Hugging Face transformers' T5 training step.

Same shapes as the t5x-lite run (T5.1.1 size from t5x_lite.config, random
tokens without padding at INPUTS/TARGETS lengths), the setup docs/reference.md's
peer figures used (torch.compile, bf16 autocast, fp32 parameters, fused
AdamW), and the same JSON fields with FLOPs counted by the same formula
(t5x_lite.flops on the shapes of the model actually built), so one device
call gives both numbers and their ratio. On CPU (tests) compile, autocast and
fused AdamW default to off.

  python3 tools/bench_hf_t5.py --size base --batch 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional

import torch
import transformers

# Runnable as `python tools/bench_hf_t5.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
from t5x_lite import config as config_lib
from t5x_lite import flops
from t5x_lite.benchmark import MODEL_FIELDS, synthetic_batch, throughput_fields
from t5x_lite.interop import hf as hf_interop

SIZES = ("tiny", "small", "base", "large", "xl")
T5_VOCAB_SIZE = 32128  # T5's SentencePiece vocabulary with its extra ids, padded (docs/reference.md)


def model_config(size: str, vocab_size: int) -> config_lib.ModelConfig:
  """The t5x-lite preset of that size (tiny: the CPU test model), without dropout as in
  T5.1.1 pretraining."""
  config = config_lib.tiny(vocab_size) if size == "tiny" else config_lib.t5_1_1(size)
  config.vocab_size, config.dropout_rate = vocab_size, 0.0
  return config


def build_model(config: config_lib.ModelConfig,
                device: torch.device) -> transformers.T5ForConditionalGeneration:
  """T5ForConditionalGeneration with the preset's shapes, fp32 parameters, no dropout."""
  hf_config = transformers.T5Config.from_dict(hf_interop.hf_config_from_model(config))
  with device:
    model = transformers.T5ForConditionalGeneration(hf_config)
  if not config.tie_logits and model.lm_head.weight is model.shared.weight:
    # transformers 5 ties lm_head to the embedding at init even for untied
    # configs; T5.1.1 has its own logits matrix (and its parameter count).
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
  return model.train()


def train_flops_per_sequence(model: transformers.T5ForConditionalGeneration, inputs_length: int,
                             targets_length: int) -> int:
  """docs/reference.md's count on the built model's own config, not on the preset asked for."""
  built = hf_interop.model_config_from_hf(model.config.to_dict())
  return flops.train_flops_per_sequence(built, inputs_length, targets_length)


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
  device = torch.device(args.device)
  cuda = device.type == "cuda"
  use_compile = cuda if args.compile is None else args.compile
  use_bf16 = cuda if args.bf16 is None else args.bf16
  fused = cuda if args.fused is None else args.fused
  torch.manual_seed(args.seed)
  config = model_config(args.size, args.vocab_size)
  model = build_model(config, device)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
  arrays = synthetic_batch(args.batch, args.inputs_length, args.targets_length, args.vocab_size,
                           seed=args.seed)
  batch = {
      "input_ids": torch.from_numpy(arrays["encoder_input_tokens"]).long().to(device),
      "decoder_input_ids": torch.from_numpy(arrays["decoder_input_tokens"]).long().to(device),
      "labels": torch.from_numpy(arrays["decoder_target_tokens"]).long().to(device),
  }
  forward = torch.compile(model) if use_compile else model

  def step() -> torch.Tensor:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
      loss = forward(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()

  def synchronize() -> None:
    if cuda:
      torch.cuda.synchronize(device)

  if cuda:
    torch.cuda.reset_peak_memory_stats(device)
  start = time.perf_counter()
  step()  # torch.compile traces and compiles on the first call
  synchronize()
  compile_s = time.perf_counter() - start
  for _ in range(args.warmup):
    step()
  synchronize()
  step_times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    loss = step()
    synchronize()
    step_times.append(time.perf_counter() - start)

  device_kind = torch.cuda.get_device_name(device) if cuda else device.type
  peak: Optional[int] = torch.cuda.max_memory_allocated(device) if cuda else None
  return {
      "system": "hf-transformers-t5",
      "experiment": f"t5_1_1_{args.size}" if args.size != "tiny" else "tiny",
      "batch": args.batch,
      "inputs_length": args.inputs_length,
      "targets_length": args.targets_length,
      "steps": args.steps,
      "warmup": args.warmup,
      **throughput_fields(step_times, args.batch, args.inputs_length, args.targets_length,
                          train_flops_per_sequence(model, args.inputs_length, args.targets_length),
                          flops.peak_flops_per_device(args.peak_tflops * 1e12, device_kind),
                          flops.measured_matmul_flops_per_device(device_kind)),
      "compile_s": compile_s,
      "peak_memory_bytes": peak,
      "loss": float(loss),
      "parameters": sum(p.numel() for p in model.parameters()),
      "device_kind": device_kind,
      "device_count": 1,
      "backend": device.type,
      "settings": {
          "dtype": "bfloat16" if use_bf16 else "float32",
          "param_dtype": "float32",
          "torch_compile": use_compile,
          "optimizer": "adamw-fused" if fused else "adamw",
          "attention_impl": model.config._attn_implementation,  # pylint: disable=protected-access
      },
      "model": {key: getattr(config, key) for key in MODEL_FIELDS},
      "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
  }


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=SIZES, default="base", help="T5.1.1 size (tiny: CPU test model)")
  parser.add_argument("--vocab-size", type=int, default=T5_VOCAB_SIZE)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--inputs-length", type=int, default=512)
  parser.add_argument("--targets-length", type=int, default=114)
  parser.add_argument("--steps", type=int, default=20, help="timed steps")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first (compiling) one")
  parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
  parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                      help="torch.compile the model (default: on CUDA)")
  parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                      help="bf16 autocast (default: on CUDA)")
  parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                      help="fused AdamW (default: on CUDA)")
  parser.add_argument("--peak-tflops", type=float, default=0.0,
                      help="peak bf16 TFLOP/s of the device for MFU (default: known devices)")
  parser.add_argument("--seed", type=int, default=0)
  return parser


def main(argv: Optional[list[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  if args.steps < 1 or args.warmup < 0 or args.batch < 1:
    raise SystemExit("--steps and --batch must be at least 1, --warmup at least 0")
  print(json.dumps(benchmark(args)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
