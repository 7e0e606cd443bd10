"""The sharded train and eval steps, and everything they are built from.

The train step is a single jax.jit whose in/out shardings come from the model's logical
axis names and the experiment's rules (pjit semantics), with the state donated. `Setup`
holds what a configuration and the devices determine: mesh, model, optimizer, shardings.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from t5x_lite import distributed, losses, optimizers, partitioning, text_metrics
from t5x_lite import model as model_lib
from t5x_lite.config import ExperimentConfig, resolve_dropout
from t5x_lite.data.packing import KEYS as BATCH_KEYS
from t5x_lite.errors import ConfigError
from t5x_lite.train_state import TrainState, train_state_logical_axes

Batch = dict[str, Any]


# ----------------------------------------------------------------------------
# Everything derived from the configuration and the devices
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
  """A run's mesh, model, optimizer and shardings, built once from its config."""

  config: ExperimentConfig
  mesh: Mesh
  rules: partitioning.LogicalRules
  model: model_lib.Transformer
  optimizer: optax.GradientTransformation
  schedule: Callable[[Any], Any]
  abstract_state: TrainState  # ShapeDtypeStructs carrying the state's shardings
  state_shardings: TrainState
  batch_sharding: NamedSharding


def make_setup(config: ExperimentConfig, devices: Optional[list] = None,
               mesh: Optional[Mesh] = None) -> Setup:
  """Mesh (built from config.mesh over `devices`, unless given), model and shardings;
  config.model.vocab_size must be resolved."""
  resolve_dropout(config)  # As validate() does, for configurations built in code.
  mesh = mesh if mesh is not None else partitioning.make_mesh(config.mesh, devices)
  rules = partitioning.logical_rules(config.mesh)
  check_batch_divides(config, mesh, rules)
  sharding = partitioning.ActivationSharding(mesh, rules)
  model = model_lib.Transformer(config.model, sharding)
  params_shapes, param_specs = model_lib.abstract_params(config.model)
  optimizer = optimizers.make_optimizer(config.optimizer, config.train.steps, param_specs)
  schedule = optimizers.make_schedule(config.optimizer, config.train.steps)
  state_specs = train_state_logical_axes(optimizer, param_specs, params_shapes)
  state_shardings = partitioning.logical_to_sharding(state_specs, mesh, rules)
  partitioning.check_divisible(params_shapes, param_specs, state_shardings.params)
  state_shapes = jax.eval_shape(functools.partial(TrainState.create, optimizer=optimizer), params_shapes)
  abstract_state = jax.tree.map(
      lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
      state_shapes, state_shardings)
  return Setup(config, mesh, rules, model, optimizer, schedule, abstract_state, state_shardings,
               partitioning.batch_sharding(mesh, rules))


def check_batch_divides(config: ExperimentConfig, mesh: Mesh, rules) -> None:
  ways = partitioning.data_axis_size(mesh, rules)
  micro = config.train.batch_size // config.train.grad_accum_steps
  if micro % ways:
    raise ConfigError(
        f"train.batch_size={config.train.batch_size} (microbatch {micro} with "
        f"train.grad_accum_steps={config.train.grad_accum_steps}) does not divide over the "
        f"{ways}-way batch sharding of mesh {dict(mesh.shape)}. Use a batch that is a multiple "
        f"of {ways * config.train.grad_accum_steps}, or change mesh.shape.")
  if config.train.batch_size % jax.process_count():
    raise ConfigError(
        f"train.batch_size={config.train.batch_size} does not divide over "
        f"{jax.process_count()} processes.")
  if partitioning.processes_share_rows(partitioning.batch_sharding(mesh, rules),
                                      config.train.batch_size):
    raise ConfigError(
        f"mesh {dict(mesh.shape)} with mesh.rules_preset={config.mesh.rules_preset!r} splits the "
        f"batch {ways} ways, which does not separate the {jax.process_count()} processes: each "
        "must hold its own rows. Make the batch's mesh axis (data) a multiple of the process "
        "count, e.g. mesh.shape=[-1, N] with N the devices of one process or fewer.")


def init_state(setup: Setup, seed: int) -> TrainState:
  """Parameters and optimizer state created directly in their shardings."""
  def create(rng):
    params = model_lib.init_params(setup.config.model, rng)
    return TrainState.create(params, setup.optimizer)
  return jax.jit(create, out_shardings=setup.state_shardings)(jax.random.key(seed))


# ----------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------


def _forward_sums(model: model_lib.Transformer, params: Any, batch: Batch, *, z_loss: float,
                  label_smoothing: float, dropout_rng: Optional[jax.Array],
                  loss_chunk_size: int, packed: bool = True, loss_scale: Any = 1.0) -> tuple[jax.Array, dict]:
  """Loss sum times `loss_scale` to differentiate, and metric sums (loss, z-loss, accuracy, tokens).

  loss_chunk_size > 0 (train.loss_chunk_size) computes the same sums chunk by chunk
  from the decoder output, never holding the full logits (losses.chunked_output_sums).
  packed=False (data.pack=False: one example per row) leaves the segment ids out, so
  fused attention masks by lengths instead of a dense mask; the sums are the same.
  """
  deterministic = dropout_rng is None
  variables = {"params": params}
  segment_ids = ((batch["encoder_segment_ids"], batch["decoder_segment_ids"]) if packed
                 else (None, None))
  forward = functools.partial(
      model.apply, variables, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
      *segment_ids, deterministic=deterministic,
      rngs=None if deterministic else {"dropout": dropout_rng})
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  if loss_chunk_size:
    kernel, scale = model.apply(variables, method=model_lib.Transformer.logits_kernel)
    project = functools.partial(model_lib.project_logits, kernel=kernel, scale=scale,
                                sharding=model.sharding)
    sums, correct = losses.chunked_output_sums(
        forward(return_hidden=True), project, targets, weights, chunk_size=loss_chunk_size,
        z_loss=z_loss, label_smoothing=label_smoothing)
  else:
    sums, correct = losses.output_sums(forward(), targets, weights, z_loss=z_loss,
                                       label_smoothing=label_smoothing)
  return sums.loss * loss_scale, {"loss": sums.loss, "z_loss": sums.z_loss, "correct": correct, "weight": sums.weight}


def make_gradient_fn(setup: Setup) -> Callable[..., tuple[Any, dict]]:
  """(params, batch, *, dropout_rng, loss_scale) -> (gradient of the loss sum times
  loss_scale, metric sums): the train step's model work, unjitted, alone."""
  cfg = setup.config
  return jax.grad(
      functools.partial(_forward_sums, setup.model, z_loss=cfg.train.z_loss,
                        label_smoothing=cfg.train.label_smoothing,
                        loss_chunk_size=cfg.train.loss_chunk_size, packed=cfg.data.pack),
      has_aux=True)


def make_train_step(setup: Setup) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """One optimizer update; with grad_accum_steps > 1 the batch is split into
  microbatches whose gradient sums are added before dividing by the token count,
  so the update equals the full batch's."""
  cfg = setup.config
  accum = cfg.train.grad_accum_steps
  dropout = cfg.model.dropout_rate > 0
  base_rng = jax.random.key(cfg.train.seed + 1)
  grad_fn = make_gradient_fn(setup)

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    # Dropout noise is a function of the step, so a resumed run repeats it.
    rng = jax.random.fold_in(base_rng, state.step) if dropout else None
    # The per-token mean's divisor, known from the batch before the forward pass: the
    # gradient comes out divided (no extra pass over it), and each parameter's update can
    # start as soon as its own gradient is ready.
    tokens = jnp.maximum(jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)), 1.0)
    if accum == 1:
      grads, sums = grad_fn(state.params, batch, dropout_rng=rng, loss_scale=1.0 / tokens)
    else:
      micro = jax.tree.map(lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)

      def accumulate(carry, inputs):
        index, microbatch = inputs
        micro_rng = None if rng is None else jax.random.fold_in(rng, index)
        grads, sums = grad_fn(state.params, microbatch, dropout_rng=micro_rng, loss_scale=1.0 / tokens)
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

      zeros = jax.tree.map(jnp.zeros_like, (state.params, {k: jnp.zeros((), jnp.float32) for k in
                                                          ("loss", "z_loss", "correct", "weight")}))
      (grads, sums), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(accum), micro))
    new_state = state.apply_gradients(grads, setup.optimizer)
    metrics = {
        # Cross-entropy alone, as in evaluation; the z-loss term is reported beside it.
        "loss": (sums["loss"] - sums["z_loss"]) / tokens, "z_loss": sums["z_loss"] / tokens,
        "accuracy": sums["correct"] / tokens, "target_tokens": sums["weight"],
        "learning_rate": setup.schedule(state.step), "grad_norm": global_norm(grads),
        "param_norm": global_norm(new_state.params),
    }
    return new_state, metrics

  batch_shardings = dict.fromkeys(BATCH_KEYS, setup.batch_sharding)
  return jax.jit(step, in_shardings=(setup.state_shardings, batch_shardings),
                 out_shardings=(setup.state_shardings, None), donate_argnums=(0,))


def global_norm(tree: Any) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def make_eval_step(setup: Setup) -> Callable[[Any, Batch], dict]:
  """Metric sums over one batch; padding rows have zero loss weights."""
  cfg = setup.config

  def step(params, batch):
    _, sums = _forward_sums(setup.model, params, batch, z_loss=cfg.train.z_loss,
                            label_smoothing=0.0, dropout_rng=None,
                            loss_chunk_size=cfg.train.loss_chunk_size, packed=cfg.data.pack)
    return sums

  batch_shardings = dict.fromkeys(BATCH_KEYS, setup.batch_sharding)
  return jax.jit(step, in_shardings=(setup.state_shardings.params, batch_shardings))


def to_global(batch: Batch, sharding: NamedSharding) -> Batch:
  """Each process's rows -> one global array per key."""
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(batch[key]))
          for key in BATCH_KEYS}


def unigram_entropy(counts: np.ndarray) -> float:
  """Entropy (nats) of token frequencies: the best loss of a model that ignores context."""
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())


def evaluate(setup: Setup, eval_step, params, loader: Iterable[Batch], vocab_size: int,
             scorer: Optional[text_metrics.Seq2SeqScorer] = None) -> dict:
  """Loss, accuracy and perplexity over the whole eval stream (each example once), plus the
  scorer's metrics after decoding each batch (seq2seq tasks)."""
  totals = {"loss": 0.0, "z_loss": 0.0, "correct": 0.0, "weight": 0.0}
  target_counts = np.zeros(vocab_size, np.int64)
  for batch in loader:
    weights = batch["decoder_loss_weights"] > 0
    target_counts += np.bincount(batch["decoder_target_tokens"][weights], minlength=vocab_size)
    global_batch = to_global(batch, setup.batch_sharding)
    sums = jax.device_get(eval_step(params, global_batch))
    for key in totals:
      totals[key] += float(sums[key])
    if scorer is not None:
      scorer.add(params, global_batch)
  tokens = max(totals["weight"], 1.0)
  cross_entropy = (totals["loss"] - totals["z_loss"]) / tokens
  return {
      "loss": cross_entropy, "z_loss": totals["z_loss"] / tokens,
      "accuracy": totals["correct"] / tokens, "perplexity": math.exp(min(cross_entropy, 50.0)),
      "target_tokens": totals["weight"],
      # Each process counted the targets of its own rows.
      "unigram_entropy": unigram_entropy(distributed.allgather_rows(target_counts[None]).sum(axis=0)),
      **(scorer.result() if scorer is not None else {}),
  }


