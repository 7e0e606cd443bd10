"""`t5x-lite train`: sharded pretraining and fine-tuning, one jitted step per batch.

The train step is a single jax.jit whose in/out shardings come from the
model's logical axis names and the experiment's rules (pjit semantics), with
the state donated. Runs resume from WORKDIR/checkpoints automatically.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import fcntl
import functools
import math
import os
import signal
import socket
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from t5x_lite import checkpoints, distributed, flops, losses, model as model_lib, optimizers
from t5x_lite import partitioning, tasks
from t5x_lite.cli import add_experiment_arguments
from t5x_lite.checkpoints import VOCABULARY_FILE
from t5x_lite.config import (EVAL_METRICS, ConfigError, ExperimentConfig, ModelConfig, UserError,
                             all_keys, get_field, load_experiment, resolve_dropout, save_json,
                             validation_metric_names)
from t5x_lite.data import BATCH_KEYS, Loader, Vocabulary, get_vocabulary, make_eval_loader, make_train_loader
from t5x_lite.data import sources
from t5x_lite.data.loader import STATE_KEYS, ShardedLoader
from t5x_lite.data.packing import packing_efficiency
from t5x_lite.data.vocabulary import PAD_TO_MULTIPLE
from t5x_lite.fileio import write_atomically
from t5x_lite.metrics import MetricWriter, ProgressBar
from t5x_lite.train_state import TrainState, train_state_logical_axes

Batch = dict[str, Any]


# Exit status of a run stopped by SIGTERM after saving: 128 + SIGTERM, as if killed by it.
PREEMPTED_EXIT_STATUS = 128 + signal.SIGTERM


class TrainingError(UserError, RuntimeError):
  """The run cannot go on (a NaN loss, ...); the message names the step."""


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


def make_setup(config: ExperimentConfig, devices: Optional[list] = None) -> Setup:
  """Mesh, model and shardings; config.model.vocab_size must be resolved."""
  resolve_dropout(config)  # As validate() does, for configurations built in code.
  mesh = partitioning.make_mesh(config.mesh, devices)
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
                  loss_chunk_size: int, packed: bool = True) -> tuple[jax.Array, dict]:
  """Loss sum to differentiate, and metric sums (loss, z-loss, accuracy, tokens).

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
  return sums.loss, {"loss": sums.loss, "z_loss": sums.z_loss, "correct": correct, "weight": sums.weight}


def make_train_step(setup: Setup) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """One optimizer update; with grad_accum_steps > 1 the batch is split into
  microbatches whose gradient sums are added before dividing by the token count,
  so the update equals the full batch's."""
  cfg = setup.config
  accum = cfg.train.grad_accum_steps
  dropout = cfg.model.dropout_rate > 0
  base_rng = jax.random.key(cfg.train.seed + 1)
  grad_fn = jax.grad(
      functools.partial(_forward_sums, setup.model, z_loss=cfg.train.z_loss,
                        label_smoothing=cfg.train.label_smoothing,
                        loss_chunk_size=cfg.train.loss_chunk_size, packed=cfg.data.pack),
      has_aux=True)

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    # Dropout noise is a function of the step, so a resumed run repeats it.
    rng = jax.random.fold_in(base_rng, state.step) if dropout else None
    if accum == 1:
      grads, sums = grad_fn(state.params, batch, dropout_rng=rng)
    else:
      micro = jax.tree.map(lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)

      def accumulate(carry, inputs):
        index, microbatch = inputs
        micro_rng = None if rng is None else jax.random.fold_in(rng, index)
        grads, sums = grad_fn(state.params, microbatch, dropout_rng=micro_rng)
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

      zeros = jax.tree.map(jnp.zeros_like, (state.params, {k: jnp.zeros((), jnp.float32) for k in
                                                          ("loss", "z_loss", "correct", "weight")}))
      (grads, sums), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(accum), micro))
    tokens = jnp.maximum(sums["weight"], 1.0)
    grads = jax.tree.map(lambda g: g / tokens, grads)
    new_state = state.apply_gradients(grads, setup.optimizer)
    metrics = {
        # Cross-entropy alone, as in evaluation; the z-loss term is reported beside it.
        "loss": (sums["loss"] - sums["z_loss"]) / tokens, "z_loss": sums["z_loss"] / tokens,
        "accuracy": sums["correct"] / tokens, "target_tokens": sums["weight"],
        "learning_rate": setup.schedule(state.step), "grad_norm": global_norm(grads),
        "param_norm": global_norm(new_state.params),
    }
    return new_state, metrics

  batch_shardings = {key: setup.batch_sharding for key in BATCH_KEYS}
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

  batch_shardings = {key: setup.batch_sharding for key in BATCH_KEYS}
  return jax.jit(step, in_shardings=(setup.state_shardings.params, batch_shardings))


def to_global(batch: Batch, sharding: NamedSharding) -> Batch:
  """Each process's rows -> one global array per key."""
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(batch[key]))
          for key in BATCH_KEYS}


def unigram_entropy(counts: np.ndarray) -> float:
  """Entropy (nats) of token frequencies: the best loss of a model that ignores context."""
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())


def evaluate(setup: Setup, eval_step, params, loader: Loader, vocab_size: int,
             scorer: Optional[tasks.Seq2SeqScorer] = None) -> dict:
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


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------


class _Window:
  """Steps, wall time and packing since the last log line, for throughput figures."""

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self.start, self.steps, self.packing = time.perf_counter(), 0, 0.0

  def add(self, local_batch: Batch) -> None:
    self.steps += 1
    self.packing += packing_efficiency(local_batch)


def _train_metrics(step: int, metrics: dict, window: _Window, config: ExperimentConfig,
                   peak_flops: float) -> dict:
  """Fetches the step's metrics, stops on NaN/Inf, adds throughput and MFU."""
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  _check_finite(step, metrics)
  seq_per_s = window.steps * config.train.batch_size / (time.perf_counter() - window.start)
  metrics["seq_per_s"] = seq_per_s
  metrics["tokens_per_s"] = seq_per_s * (config.data.inputs_length + config.data.targets_length)
  metrics["packing_efficiency"] = window.packing / window.steps
  if peak_flops:
    metrics["mfu"] = seq_per_s * flops.train_flops_per_sequence(
        config.model, config.data.inputs_length, config.data.targets_length) / peak_flops
  return metrics


class _Preemption:
  """Turns SIGTERM (TPU VM / scheduler preemption) into a flag the loop checks."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)


# What fine-tuning may change about a pretrained model; the rest is its architecture.
_TRAINING_TIME_FIELDS = ("dropout_rate", "remat_policy", "dtype", "attention_impl")


def _architecture_differences(saved: ModelConfig, model: ModelConfig) -> list[str]:
  """Architecture fields where `model` differs from a checkpoint's; an unresolved
  vocab_size (None: from the vocabulary) is no difference."""
  return [f.name for f in dataclasses.fields(ModelConfig)
          if f.name not in _TRAINING_TIME_FIELDS and getattr(saved, f.name) != getattr(model, f.name)
          and not (f.name == "vocab_size" and model.vocab_size is None)]


def inherit_architecture(config: ExperimentConfig, source: str, step: Optional[int] = None) -> None:
  """The model of a run that starts from a checkpoint (checkpoint.init_from) is the
  checkpoint's: its saved architecture replaces the experiment's, keeping only
  training-time settings."""
  saved = checkpoints.read_config(source, step).model
  differing = _architecture_differences(saved, config.model)
  if differing and jax.process_index() == 0:
    print(f"Starting from {source}: using its architecture for "
          f"{', '.join(f'model.{name}' for name in differing)}.")
  config.model = dataclasses.replace(
      saved, **{name: getattr(config.model, name) for name in _TRAINING_TIME_FIELDS})


def check_resumable(config: ExperimentConfig, workdir: str, step: int) -> None:
  """A resumed run keeps its architecture: continuing a checkpoint as another model
  (say gated-GELU weights run as SwiGLU) would silently train something else. Other
  settings may change (a larger train.steps, another batch size); they are listed."""
  saved_config = checkpoints.read_config(workdir, step)
  saved = saved_config.model
  changed = [f"{key} {get_field(saved_config, key)!r} -> {get_field(config, key)!r}"
             for key in all_keys(config)
             if get_field(config, key) not in (None, "")  # Resolved later (vocabulary, ...).
             and not key.startswith("model.") and key != "name"
             and get_field(config, key) != get_field(saved_config, key)]
  if changed and jax.process_index() == 0:
    print(f"Resuming {workdir} at step {step} with changed settings: {'; '.join(changed)}.")
  differing = _architecture_differences(saved, config.model)
  if differing:
    changes = "; ".join(f"model.{name}: saved {getattr(saved, name)!r}, now "
                        f"{getattr(config.model, name)!r}" for name in differing)
    raise ConfigError(
        f"{workdir} holds a run of another architecture at step {step} ({changes}). Resume "
        "it with the architecture it was trained with (drop those --set overrides), or "
        "train the new architecture in a new --workdir.")


def check_same_stream(meta: dict, train_loader: ShardedLoader, config: ExperimentConfig,
                      workdir: str) -> None:
  """A resumed run reads on from where its checkpoint stopped: with the same vocabulary
  and the stream split into as many shards (else data would be repeated or skipped)."""
  step = meta["step"]
  saved_shards = len(meta["loader_state"]["shards"])
  if saved_shards != train_loader.shards:
    raise ConfigError(
        f"{workdir} step {step} was trained with its data stream in {saved_shards} shard(s) "
        f"(data.shards, where 0 means one per process); this run would read "
        f"{train_loader.shards}, repeating or skipping data. Resume with --set "
        f"data.shards={saved_shards} (it must be a multiple of the process count), or with "
        f"{saved_shards} process(es).")
  saved_vocabulary = meta.get("vocabulary")
  if saved_vocabulary and (checkpoints.file_reference(config.data.vocabulary)["sha256"]
                           != saved_vocabulary["sha256"]):
    raise ConfigError(
        f"{config.data.vocabulary} is not the vocabulary {workdir} was trained with up to step "
        f"{step} (it was {saved_vocabulary['path']}, sha256 {saved_vocabulary['sha256'][:12]}...); "
        "put that file back in its place to resume.")


@contextlib.contextmanager
def _only_run_in(workdir: str):
  """Holds WORKDIR/train.lock while training: a second job on the same workdir would
  interleave its metrics with this one's and race it to save and delete checkpoints."""
  handle = open(os.path.join(workdir, "train.lock"), "a+", encoding="utf-8")
  locked = True
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno in (errno.EAGAIN, errno.EACCES):
      handle.seek(0)
      holder = handle.read().strip() or "another process"
      handle.close()
      raise ConfigError(
          f"{workdir} is being trained by another `t5x-lite train` ({holder}); wait for it or "
          "stop it, or give this run another --workdir.") from None
    locked = False  # A filesystem without locks (some network mounts): run unguarded.
  if locked:
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
  try:
    yield
  finally:
    handle.close()  # Releases the lock.


def resolve_vocabulary(config: ExperimentConfig, workdir: str) -> Vocabulary:
  """Loads or trains the vocabulary, keeps a copy in the workdir (eval and infer
  read it there) and fixes model.vocab_size from it.

  A workdir that already has its copy (a resumed run) keeps using it; a fine-tuning
  run without its own vocabulary uses the one of the run it starts from.
  """
  path = os.path.join(workdir, VOCABULARY_FILE)
  if os.path.exists(path):
    config.data.vocabulary = path
  elif config.checkpoint.init_from and not config.data.vocabulary:
    config.data.vocabulary = os.path.join(
        os.path.dirname(checkpoints.checkpoint_dir(config.checkpoint.init_from)), VOCABULARY_FILE)
  sources.prepare(config.data)
  vocabulary = get_vocabulary(config.data)
  if jax.process_index() == 0 and not os.path.exists(path):
    write_atomically(path, vocabulary.model_proto)
  config.data.vocabulary = os.path.abspath(path)  # What config.json records: this run's own.
  if config.model.vocab_size is None:
    config.model.vocab_size = vocabulary.vocab_size
  elif config.model.vocab_size < vocabulary.vocab_size:
    raise ConfigError(
        f"model.vocab_size={config.model.vocab_size} is smaller than the vocabulary's "
        f"{vocabulary.vocab_size} ids; set model.vocab_size to {vocabulary.vocab_size} or None.")
  return vocabulary


def global_loader_state(loader: ShardedLoader) -> dict:
  """The state of every process's shards, so a checkpoint holds the whole stream."""
  local = loader.get_state()
  table = np.array([[shard[key] for key in STATE_KEYS] for shard in local["shards"]], np.int32)
  rows = distributed.allgather_rows(table)
  return {"first_shard": 0, "shards": [dict(zip(STATE_KEYS, map(int, row))) for row in rows]}


def _check_finite(step: int, metrics: dict[str, float]) -> None:
  """Stops the run before it saves (or trains on) a state whose loss or parameters went
  non-finite: a checkpoint of NaN parameters would be kept and good ones deleted."""
  bad = [f"{name} is {metrics[name]}" for name in ("loss", "param_norm") if not math.isfinite(metrics[name])]
  if bad:
    raise TrainingError(
        f"{' and '.join(bad)} by step {step} (checked every train.log_every steps and before "
        "each save); stopping without saving it. Checkpoints already saved are intact. "
        "Lower optimizer.learning_rate or set optimizer.grad_clip_norm, then resume.")


def train(config: ExperimentConfig, workdir: str, devices: Optional[list] = None) -> dict:
  """Trains (or resumes) the experiment in `workdir` on `devices` (default: all of them, in
  every process); returns the final metrics."""
  # Mesh, batch and parameter layout first: the dataset build and vocabulary training can
  # take long, and a configuration that cannot run must fail before them and before writing
  # anything. (A checkpoint.init_from run takes its architecture from there, later.)
  if config.checkpoint.init_from:
    check_batch_divides(config, partitioning.make_mesh(config.mesh, devices),
                        partitioning.logical_rules(config.mesh))
  else:
    # An unknown vocabulary size stands in as a multiple of 128, as every vocabulary's is.
    make_setup(dataclasses.replace(config, model=dataclasses.replace(
        config.model, vocab_size=config.model.vocab_size or PAD_TO_MULTIPLE)), devices)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  with contextlib.ExitStack() as cleanup:  # Also on errors: saves in flight finish first.
    # Entered first, left last: SIGTERM cannot interrupt the final wait for a save.
    preemption = cleanup.enter_context(_Preemption())
    if is_main:
      cleanup.enter_context(_only_run_in(workdir))
    ckpt = checkpoints.Checkpointer(workdir, config.checkpoint)
    cleanup.callback(ckpt.close)
    start_step = ckpt.latest_step()
    if start_step is not None and config.checkpoint.init_from:
      inherit_architecture(config, workdir, start_step)
    elif start_step is not None:
      check_resumable(config, workdir, start_step)
    elif config.checkpoint.init_from:
      try:
        inherit_architecture(config, config.checkpoint.init_from, config.checkpoint.init_from_step)
      except checkpoints.CheckpointError as e:  # Say which setting pointed there.
        raise checkpoints.CheckpointError(
            f"checkpoint.init_from={config.checkpoint.init_from!r}: {e}") from None
    # Recorded in config.json, so that the run can be rebuilt where $TFDS_DATA_DIR differs.
    config.data.data_dir = sources.resolve_data_dir(config.data.data_dir)
    # Process 0 builds the dataset and trains the vocabulary; the others then read them.
    vocabulary = distributed.on_main_process_first(
        functools.partial(resolve_vocabulary, config, workdir), "vocabulary")
    setup = make_setup(config, devices)
    train_loader = make_train_loader(config, vocabulary, jax.process_index(), jax.process_count())
    cleanup.callback(train_loader.close)
    if start_step is not None:
      state, meta = ckpt.restore(setup.abstract_state, start_step)
      check_same_stream(meta, train_loader, config, workdir)
      train_loader.set_state(meta["loader_state"])
    else:
      state = init_state(setup, config.train.seed)
      if config.checkpoint.init_from:
        params = checkpoints.restore_params(config.checkpoint.init_from, setup.abstract_state.params,
                                            config.checkpoint.init_from_step)
        state = state.replace(params=params)
      start_step = 0
    state = jax.block_until_ready(state)  # Start stepping once set-up work has finished.
    # Only once the state is in hand (a failed restore leaves the workdir as it was), and
    # only if it trains: a run already at train.steps keeps the configuration it ran with.
    if is_main and start_step < config.train.steps:
      save_json(config, os.path.join(workdir, "config.json"))
    writer = MetricWriter(workdir, enabled=is_main, resume_step=start_step)
    cleanup.callback(writer.close)
    progress = ProgressBar(total=config.train.steps, initial=start_step, enabled=is_main)
    cleanup.callback(progress.close)
    return _loop(setup, state, start_step, train_loader, vocabulary, ckpt, writer, progress,
                 preemption, workdir)


def _decoded_metrics(config: ExperimentConfig, metrics: dict) -> str:
  """', exact_match 0.412, bleu 31.2' for seq2seq tasks: the scores of decoded text."""
  names = [n for n in validation_metric_names(config) if n not in EVAL_METRICS and n in metrics]
  return "".join(f", {name} {metrics[name]:.3f}" for name in names)


def _loop(setup: Setup, state: TrainState, step: int, train_loader: ShardedLoader,
          vocabulary: Vocabulary, ckpt: checkpoints.Checkpointer, writer: MetricWriter,
          progress: ProgressBar, preemption: "_Preemption", workdir: str) -> dict:
  """Steps from `step` to train.steps: log, evaluate and save on their schedules."""
  config = setup.config
  train_step, eval_step = make_train_step(setup), make_eval_step(setup)
  peak = flops.peak_flops_per_device(config.train.peak_flops_per_device) * jax.device_count()
  total = config.train.steps
  last_train: dict = {}
  last_eval: dict = {}
  window = _Window()
  batches = iter(train_loader)
  first_step = step + 1
  while step < total:
    local_batch = next(batches)
    window.add(local_batch)
    state, metrics = train_step(state, to_global(local_batch, setup.batch_sharding))
    step += 1
    # Every process must agree to stop, or the collectives of the save would not match.
    stopping = distributed.any_process(preemption.requested)
    saving = step % config.checkpoint.every_steps == 0 or step == total or stopping
    if step % config.train.log_every == 0 or step == total:
      last_train = _train_metrics(step, metrics, window, config, peak_flops=peak)
      writer.write(step, "train", last_train)
      progress.update(step, last_train)
      window.reset()
    else:
      progress.update(step)
      if saving:  # Never save a state whose loss or parameters went non-finite.
        _check_finite(step, {name: float(metrics[name]) for name in ("loss", "param_norm")})
    if step == first_step:  # Mostly compilation: not training throughput.
      jax.block_until_ready(metrics)
      window.reset()
    evaluated = step % config.train.eval_every == 0 or step == total
    if evaluated:
      eval_loader = make_eval_loader(config, vocabulary, jax.process_index(), jax.process_count())
      last_eval = evaluate(setup, eval_step, state.params, eval_loader, config.model.vocab_size,
                           tasks.make_scorer(config, vocabulary))
      writer.write(step, "validation", last_eval)
      progress.write(f"step {step}: validation loss {last_eval['loss']:.4f}, accuracy "
                     f"{last_eval['accuracy']:.3f}{_decoded_metrics(config, last_eval)} "
                     f"(unigram entropy {last_eval['unigram_entropy']:.4f})")
      window.reset()  # Evaluation time is not training throughput.
    if saving:
      ckpt.save(step, state, loader_state=global_loader_state(train_loader), experiment_config=config,
                vocabulary_path=os.path.join(workdir, VOCABULARY_FILE),
                metrics=last_eval if evaluated else None)
    if stopping:
      ckpt.wait_until_finished()  # Only then is it saved (a second SIGTERM is ignored meanwhile).
      progress.write(f"SIGTERM received: saved a checkpoint at step {step} in {ckpt.directory}; "
                     "run the same command to resume.")
      break
  return {"step": step, "train": last_train, "validation": last_eval, "preempted": step < total}


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_experiment_arguments(parser)
  parser.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, config)")
  distributed.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
  distributed.initialize(args)
  config = load_experiment(args.experiment, args.overrides)
  result = train(config, args.workdir)
  if result["preempted"]:  # Saved, not finished: a scheduler must not count the job done.
    return PREEMPTED_EXIT_STATUS
  if jax.process_index() != 0:
    return 0
  if not result["validation"]:  # Resumed at the last step: nothing left to do.
    print(f"{args.workdir} is already at step {result['step']} (train.steps); "
          f"raise train.steps with --set to train further, or use `t5x-lite eval`.")
  else:
    validation = result["validation"]
    print(f"final validation loss {validation['loss']:.4f} nats/token "
          f"(unigram entropy of the validation targets: {validation['unigram_entropy']:.4f}); "
          f"token accuracy {validation['accuracy']:.3f}{_decoded_metrics(config, validation)}")
  return 0
