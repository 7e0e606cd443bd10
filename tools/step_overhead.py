"""How much of a train step is not the model: the jitted gradient alone against the whole
step (gradient, optimizer update, step metrics), timed in turn on the same batch, plus the
optimizer update and the two norms on their own. Prints medians and the share of the step.

  python3 tools/step_overhead.py --batch 8 --repeats 5   # T5.1.1-small, float32, on the CPU
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from t5x_lite.benchmark import synthetic_batch
from t5x_lite.config import load_experiment
from t5x_lite.training import step as step_lib


def _timed(function, *args, **kwargs) -> float:
  start = time.perf_counter()
  jax.block_until_ready(function(*args, **kwargs))
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--experiment", default="experiments/t5_1_1_small.py")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--set", action="append", default=[], dest="overrides",
                      help="extra KEY=VALUE settings (default: float32, unrolled, unpacked, no dropout)")
  args = parser.parse_args()
  config = load_experiment(args.experiment, [
      f"train.batch_size={args.batch}", "model.scan_layers=false", "model.dtype=float32",
      "model.vocab_size=32128", "data.pack=false", "model.remat_policy=none",
      "model.dropout_rate=0.0", *args.overrides])
  setup = step_lib.make_setup(config, jax.devices()[:1])
  state = step_lib.init_state(setup, 0)
  batch = jax.device_put(synthetic_batch(args.batch, config.data.inputs_length,
                                         config.data.targets_length, config.model.vocab_size))
  tokens = float(np.sum(batch["decoder_loss_weights"]))
  # The step's own gradient function, with the same loss scaling; nothing else.
  gradient = jax.jit(functools.partial(step_lib.make_gradient_fn(setup), dropout_rng=None))
  train_step = step_lib.make_train_step(setup)
  update = jax.jit(lambda s, g: s.apply_gradients(g, setup.optimizer))
  norms = jax.jit(lambda g, p: (step_lib.global_norm(g), step_lib.global_norm(p)))
  params = jax.tree.map(jnp.copy, state.params)
  grads, _ = gradient(params, batch, loss_scale=1.0 / tokens)  # Compiles each once, untimed.
  state, _ = train_step(state, batch)
  jax.block_until_ready((update(state, grads), norms(grads, params)))

  times: dict[str, list[float]] = {"gradient": [], "step": [], "update": [], "norms": []}
  for _ in range(args.repeats):
    times["gradient"].append(_timed(gradient, params, batch, loss_scale=1.0 / tokens))
    start = time.perf_counter()
    state, metrics = train_step(state, batch)
    jax.block_until_ready((state, metrics))
    times["step"].append(time.perf_counter() - start)
    times["update"].append(_timed(update, state, grads))
    times["norms"].append(_timed(norms, grads, params))
  median = {name: float(np.median(values)) for name, values in times.items()}
  besides = median["step"] - median["gradient"]
  print(f"batch {args.batch} on {jax.devices()[0].device_kind}: gradient {median['gradient']:.3f} s, "
        f"step {median['step']:.3f} s, step - gradient {besides:.3f} s "
        f"({besides / median['step']:.1%} of the step); update alone {median['update'] * 1e3:.0f} ms, "
        f"two norms {median['norms'] * 1e3:.0f} ms")
  for name, values in times.items():
    print(f"  {name:8s}", " ".join(f"{value:.3f}" for value in values))


if __name__ == "__main__":
  main()
