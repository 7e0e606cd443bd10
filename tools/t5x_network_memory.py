"""XLA's memory accounting of a training step of T5X's own T5.1.1 network, compiled for a target device.

`t5x-lite info EXPERIMENT --target h100` says what t5x-lite's train step needs on a device
that need not be here. This tool compiles the equivalent step of T5X's reference network
(t5x/examples/t5/network.py and layers.py, imported from the user's checkout, never copied
here) with the same compiler, target description, XLA flags and settings: T5.1.1 shapes from
T5X's t5_1_1/*.gin, bfloat16 activations, float32 parameters, no dropout, unpacked rows,
float32 cross-entropy with z-loss 1e-4 on the float32 logits, and optax's Adafactor (T5
defaults) updating the parameters, the state donated and the batch split over the target's
devices (parameters replicated). So the memory either codebase needs for one batch, model
size and device can be compared in one run, with XLA's FLOP count beside the analytic one
t5x-lite's MFU uses (t5x_lite.flops): the ratio shows what a program computes beyond the
model's matmuls (T5X's network embeds tokens with a one-hot matmul, for one).

The compilers come with `pip install "jax[cuda12]"` (GPU targets) and `pip install "jax[tpu]"`
(TPU slices), neither needing the hardware; T5X itself is not installed (its package
__init__ imports TensorFlow and seqio), only its source is read:

  git clone https://github.com/google-research/t5x /tmp/t5x
  python tools/t5x_network_memory.py --t5x-dir /tmp/t5x --target h100 --size base --batch 128
  python tools/t5x_network_memory.py --t5x-dir /tmp/t5x --target v5e:2x2 --size base --batch 64
  python tools/t5x_network_memory.py --t5x-dir /tmp/t5x --target h100 --size small --batch 256 --json
  t5x-lite info EXPERIMENT --target h100   # t5x-lite's step at the same settings, to compare

Memory figures are per device and in GiB; "fits" is against the share of device memory jax's
allocator takes (XLA_PYTHON_CLIENT_MEM_FRACTION, default 75%) on a GPU, and the TPU compiler's
own verdict on a TPU slice (it refuses a step that does not fit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from typing import Any, Optional

# Runnable as `python tools/t5x_network_memory.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
from t5x_lite import xla_flags
from t5x_lite.errors import UserError

# T5X's t5x/examples/t5/t5_1_1/{size}.gin: (emb_dim, num_heads, layers per stack, head_dim, mlp_dim).
T5_1_1_SIZES = {
    "small": (512, 6, 8, 64, 1024),
    "base": (768, 12, 12, 64, 2048),
    "large": (1024, 16, 24, 64, 2816),
    "xl": (2048, 32, 24, 64, 5120),
    "xxl": (4096, 64, 24, 64, 10240),
}
VOCAB_SIZE = 32128  # T5X's t5_1_1/base.gin: the SentencePiece vocabulary + 100 extra ids, padded to 128.
Z_LOSS = 1e-4  # T5X's t5_1_1/base.gin.
NETWORK_FILES = ("t5x/examples/t5/network.py", "t5x/examples/t5/layers.py")
# Rematerialisation T5X's t5x/examples/t5 network offers: none (its scalable_t5 sibling has some).
REMAT_CHOICES = ("none",)
_GIB = 2**30


def checkout_root(t5x_dir: str) -> str:
  """The root of a t5x checkout (the directory holding the t5x package); the package
  directory itself is accepted too."""
  for root in (t5x_dir, os.path.dirname(os.path.abspath(t5x_dir))):
    if all(os.path.isfile(os.path.join(root, name)) for name in NETWORK_FILES):
      return os.path.abspath(root)
  missing = [name for name in NETWORK_FILES if not os.path.isfile(os.path.join(t5x_dir, name))]
  raise UserError(
      f"--t5x-dir {t5x_dir}: expected a checkout of github.com/google-research/t5x, the directory "
      f"holding {' and '.join(NETWORK_FILES)}, but it has no {' or '.join(missing)} "
      f"(get one with: git clone https://github.com/google-research/t5x).")


def import_network(root: str) -> types.ModuleType:
  """T5X's t5x.examples.t5.network from the checkout at `root`, without running the t5x and
  t5x.examples package __init__s (they import TensorFlow, seqio, gin, ...): empty packages
  stand in for them, their __path__ in the checkout."""
  import importlib  # pylint: disable=import-outside-toplevel
  for name in ("t5x", "t5x.examples", "t5x.examples.t5"):
    package = types.ModuleType(name)
    package.__path__ = [os.path.join(root, *name.split("."))]
    sys.modules[name] = package
  return importlib.import_module("t5x.examples.t5.network")


def t5_config(network: types.ModuleType, size: str) -> Any:
  """network.T5Config as T5X's t5_1_1/{size}.gin sets it, for pretraining (no dropout)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  emb_dim, heads, layers, head_dim, mlp_dim = T5_1_1_SIZES[size]
  return network.T5Config(
      vocab_size=VOCAB_SIZE, dtype=jnp.bfloat16, emb_dim=emb_dim, num_heads=heads,
      num_encoder_layers=layers, num_decoder_layers=layers, head_dim=head_dim, mlp_dim=mlp_dim,
      mlp_activations=("gelu", "linear"), dropout_rate=0.0, logits_via_embedding=False,
      float32_attention_logits=False)


def analytic_model_config(size: str):
  """The same shapes as t5x-lite's ModelConfig, for t5x_lite.flops."""
  from t5x_lite.config import ModelConfig  # pylint: disable=import-outside-toplevel
  emb_dim, heads, layers, head_dim, mlp_dim = T5_1_1_SIZES[size]
  return ModelConfig(vocab_size=VOCAB_SIZE, d_model=emb_dim, d_ff=mlp_dim, num_heads=heads, d_kv=head_dim,
                     num_encoder_layers=layers, num_decoder_layers=layers, ffn_activation="gated-gelu",
                     tie_logits=False)


def compile_step(network: types.ModuleType, args: argparse.Namespace,
                 devices: list) -> tuple[Any, float]:
  """(compiled train step, seconds to lower and compile) of T5X's network for `devices`,
  nothing allocated: state and batch are shapes. Raises aot.OutOfMemory when the compiler
  finds the step does not fit."""
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  from t5x_lite.aot import compile_timed

  if args.batch % len(devices):
    raise UserError(f"--batch {args.batch}: not divisible by the target's {len(devices)} devices.")
  model = network.Transformer(config=t5_config(network, args.size))
  optimizer = optax.adafactor(learning_rate=1e-2, multiply_by_parameter_scale=True, decay_rate=0.8,
                              clipping_threshold=1.0, min_dim_size_to_factor=128)
  shapes = {"encoder_input_tokens": (args.batch, args.inputs_length),
            "decoder_input_tokens": (args.batch, args.targets_length),
            "decoder_target_tokens": (args.batch, args.targets_length)}

  def init_state(rng):
    # Only "params": layers.py's param_with_axes adds a "params_axes" collection of axis names.
    dummy = {key: jnp.ones((1,) + shape[1:], jnp.int32) for key, shape in shapes.items()}
    params = model.init(rng, **dummy, enable_dropout=False)["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params)}

  def loss_fn(params, batch):
    logits = model.apply({"params": params}, **batch, enable_dropout=False).astype(jnp.float32)
    targets = batch["decoder_target_tokens"]
    weights = (targets > 0).astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    per_token = lse - target_logits + Z_LOSS * jnp.square(lse)
    return jnp.sum(per_token * weights) / jnp.maximum(jnp.sum(weights), 1.0)

  def train_step(state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, loss

  mesh = Mesh(np.array(devices), ("data",))
  replicated, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
  abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                                jax.eval_shape(init_state, jax.random.key(0)))
  abstract_batch = {key: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=split) for key, shape in shapes.items()}
  step = jax.jit(train_step, in_shardings=(replicated, split), out_shardings=(replicated, replicated),
                 donate_argnums=(0,))
  return compile_timed(step, abstract_state, abstract_batch)


def report(args: argparse.Namespace) -> dict:
  """The compiled step's per-device memory, fit and FLOPs (see the module docstring)."""
  root = checkout_root(args.t5x_dir)  # Before the slow part, so a wrong path fails at once.
  flags = xla_flags.set_gpu_flags()  # t5x-lite's own defaults, so both steps compile alike.
  # pylint: disable=import-outside-toplevel
  from t5x_lite import aot, flops
  devices = aot.compile_only_devices(args.target, args.devices)  # Before anything starts a backend.
  try:
    network = import_network(root)
  except ImportError as e:
    raise UserError(f"--t5x-dir {args.t5x_dir}: importing T5X's t5x/examples/t5/network.py failed "
                    f"({type(e).__name__}: {e}); it needs flax and jax.") from e
  result = {
      "network": f"t5x.examples.t5.network T5.1.1-{args.size}", "t5x_dir": root, "target": args.target,
      "device_kind": devices[0].device_kind, "devices": len(devices), "batch": args.batch,
      "inputs_length": args.inputs_length, "targets_length": args.targets_length, "remat": args.remat,
      "xla_flags": os.environ.get("XLA_FLAGS") if flags is None else flags,
  }
  try:
    compiled, result["compile_s"] = compile_step(network, args, devices)
  except aot.OutOfMemory as e:
    return {**result, "fits": False, "compiler_message": str(e)}
  memory = result["memory_per_device_bytes"] = aot.memory_bytes(compiled, devices[0].platform)
  result.update(aot.fit(args.target, memory))
  counted = aot.xla_flops(compiled)
  per_sequence = flops.train_flops_per_sequence(analytic_model_config(args.size), args.inputs_length,
                                                args.targets_length)
  analytic = per_sequence * args.batch / len(devices)  # One device's share, as XLA's count.
  result.update({"xla_flops": counted, "analytic_train_flops": analytic,
                 "xla_to_analytic_flops": None if counted is None else counted / analytic})
  return result


def _gib(num_bytes: Optional[float]) -> str:
  return "?" if num_bytes is None else f"{num_bytes / _GIB:.2f}"


def format_line(result: dict) -> str:
  """One table line: what ran, then per-device memory, fit, FLOPs and compile time."""
  where = f"{result['target']} ({result['devices']} x {result['device_kind']})"
  head = (f"T5X T5.1.1-{result['network'].rsplit('-', 1)[1]} | {where} | batch {result['batch']} "
          f"| {result['inputs_length']}/{result['targets_length']} | remat {result['remat']}")
  if "compiler_message" in result:
    return f"{head} | fits: NO, the compiler refused it: {result['compiler_message']}"
  memory = result["memory_per_device_bytes"]
  if "needed_fraction" in result:
    fits = (f"fits at {result['memory_fraction']:.0%}: {'yes' if result['fits'] else 'NO'} "
            f"({result['needed_fraction']:.0%} of {_gib(result['device_memory_bytes'])} GiB)")
  elif result.get("fits"):
    fits = "fits: yes (the TPU compiler's check)"
  else:
    fits = "fits: n/a (no device memory size for this target)"
  if result["xla_flops"] is None:
    flop = f"FLOPs XLA ? (--target cpu counts them), analytic {result['analytic_train_flops']:.3e}"
  else:
    flop = (f"FLOPs per device XLA {result['xla_flops']:.3e} / analytic {result['analytic_train_flops']:.3e} "
            f"= {result['xla_to_analytic_flops']:.3f}")
  return (f"{head} | args {_gib(memory['arguments'])} GiB, temp {_gib(memory['temp'])} GiB, "
          f"total {_gib(memory['total'])} GiB per device | {fits} | {flop} | "
          f"compiled in {result['compile_s']:.1f} s")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
  parser.add_argument("--t5x-dir", required=True,
                      help="a checkout of github.com/google-research/t5x (the directory holding t5x/)")
  parser.add_argument("--target", required=True,
                      help="h100, h200, a100, a TPU slice such as v5e:2x2, or cpu (this machine)")
  parser.add_argument("--devices", type=int, default=None,
                      help="GPUs (or CPU devices) to split the batch over, default 1; a TPU slice has its own")
  parser.add_argument("--size", choices=sorted(T5_1_1_SIZES), default="base", help="T5.1.1 size (default base)")
  parser.add_argument("--batch", type=int, default=128, help="global batch in sequences (default 128)")
  parser.add_argument("--inputs-length", type=int, default=512, help="encoder tokens per row (default 512)")
  parser.add_argument("--targets-length", type=int, default=114, help="decoder tokens per row (default 114)")
  parser.add_argument("--remat", choices=REMAT_CHOICES, default="none",
                      help="rematerialisation: T5X's t5x/examples/t5 network has none to turn on")
  parser.add_argument("--json", action="store_true", help="print the result as one JSON line instead")
  args = parser.parse_args(argv)
  for name in ("batch", "inputs_length", "targets_length", "devices"):
    value = getattr(args, name)
    if value is not None and value < 1:
      parser.error(f"--{name.replace('_', '-')} {value}: must be at least 1")
  return args


def main(argv: Optional[list[str]] = None) -> int:
  args = parse_args(argv)
  try:
    result = report(args)
  except UserError as e:  # ConfigError is one too.
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result) if args.json else format_line(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
