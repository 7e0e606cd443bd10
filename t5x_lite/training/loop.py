"""`t5x_lite.train`: pretraining and fine-tuning, one jitted step per batch.

Runs resume from WORKDIR/checkpoints automatically. Progress is reported through the
`t5x_lite` logger and callbacks (training.callbacks), never printed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import fcntl
import functools
import logging
import math
import os
import shutil
import signal
import socket
import time
from typing import Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from t5x_lite import checkpoints, distributed, flops, partitioning
from t5x_lite.checkpoints import VOCABULARY_FILE
from t5x_lite.config import (
  EVAL_METRICS,
  ExperimentConfig,
  save_json,
  validate,
  validation_metric_names,
)
from t5x_lite.data import pipeline, sources
from t5x_lite.data.packing import packing_efficiency
from t5x_lite.data.pipeline import ShardedLoader, make_train_loader
from t5x_lite.data.vocabulary import PAD_TO_MULTIPLE, Vocabulary, get_vocabulary, vocabulary_digest
from t5x_lite.errors import ConfigError, UserError
from t5x_lite.evaluation import evaluate_tasks
from t5x_lite.fileio import check_writable_directory, write_atomically
from t5x_lite.metrics import MetricWriter, check_loggers_installed
from t5x_lite.train_state import TrainState
from t5x_lite.training.callbacks import Callback
from t5x_lite.training.resume import (
  check_resumable,
  check_same_data,
  check_same_stream,
  inherit_architecture,
)
from t5x_lite.training.step import (
  Batch,
  Setup,
  check_batch_divides,
  init_state,
  make_eval_step,
  make_setup,
  make_train_step,
  to_global,
)

logger = logging.getLogger(__name__)

# Exit status of a run stopped by SIGTERM after saving: 128 + SIGTERM, as if killed by it.
PREEMPTED_EXIT_STATUS = 128 + signal.SIGTERM


class TrainingError(UserError, RuntimeError):
  """The run cannot go on (a NaN loss, ...); the message names the step."""


@dataclasses.dataclass
class TrainResult:
  """What `train` returns."""

  step: int  # The step the run stopped at.
  train: dict  # The last logged training metrics ({} if none were logged).
  validation: dict  # The last evaluation's metrics ({} if the run had nothing left to do).
  preempted: bool  # Stopped by SIGTERM after saving, before train.steps.
  checkpoint: Optional[str]  # The latest checkpoint's directory, if any.
  config: ExperimentConfig  # The configuration as resolved for the run (a copy).


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
  """Tells the loop when to save and stop after SIGTERM (TPU VM / scheduler preemption).

  Several processes use JAX's preemption service: its own handler catches SIGTERM on any of
  them, and reached_preemption_sync_point(step) turns true on all of them at one step without a
  collective per step. One process turns SIGTERM into a flag itself.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    self._service = jax.process_count() > 1 and _preemption_service_running()

  def __enter__(self):
    if not self._service:  # The service's handler must stay: Python's would replace it.
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def stop_at(self, step: int) -> bool:
    """Whether every process stops (and saves) after `step`; call it at every step."""
    if self._service:
      return multihost_utils.reached_preemption_sync_point(step)
    return distributed.any_process(self.requested)

  def __exit__(self, *exc):
    if not self._service:
      signal.signal(signal.SIGTERM, self._previous)


def _preemption_service_running() -> bool:
  from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel
  return getattr(jax_distributed.global_state, "preemption_sync_manager", None) is not None


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
    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
      handle.close()
      raise ConfigError(f"Cannot lock {workdir}/train.lock ({e.strerror}); check the "
                        "workdir's permissions and filesystem.") from None
    # A filesystem without locks (some network mounts): run unguarded, and say so.
    logger.warning("%s is on a filesystem without file locks: nothing stops a second "
                   "`t5x-lite train` on it; run one at a time.", workdir)
    locked = False
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
  starting_from = config.checkpoint.init_from if not os.path.exists(path) else None
  if os.path.exists(path):
    asked = config.data.vocabulary
    if asked and vocabulary_digest(asked) != checkpoints.file_reference(path)["sha256"]:
      raise ConfigError(
          f"{workdir} was trained with its own {VOCABULARY_FILE}; data.vocabulary={asked!r} is "
          "another file. Drop that setting to go on with the run's vocabulary, or train the "
          "new vocabulary in a new --workdir.")
    config.data.vocabulary = path
  elif config.checkpoint.init_from and not config.data.vocabulary:
    config.data.vocabulary = os.path.join(
        os.path.dirname(checkpoints.checkpoint_dir(config.checkpoint.init_from)), VOCABULARY_FILE)
  pipeline.prepare_data(config.data)
  vocabulary = get_vocabulary(config.data)
  # Checked before the copy is written: a refused run leaves the workdir as it was.
  if config.model.vocab_size is not None and config.model.vocab_size < vocabulary.vocab_size:
    if starting_from:  # The size is the checkpoint's (inherit_architecture): its vocabulary differs.
      meta = checkpoints.read_meta(starting_from, config.checkpoint.init_from_step)
      raise ConfigError(checkpoints.vocabulary_mismatch(
          f"checkpoint.init_from={starting_from!r} (step {meta['step']})", meta,
          config.model.vocab_size, vocabulary.vocab_size))
    raise ConfigError(
        f"model.vocab_size={config.model.vocab_size} is smaller than the vocabulary's "
        f"{vocabulary.vocab_size} ids; set model.vocab_size to {vocabulary.vocab_size} or None.")
  if jax.process_index() == 0 and not os.path.exists(path):
    write_atomically(path, vocabulary.serialized)
  config.data.vocabulary = os.path.abspath(path)  # What config.json records: this run's own.
  if config.model.vocab_size is None:
    config.model.vocab_size = vocabulary.vocab_size
  return vocabulary


def global_loader_state(loader: ShardedLoader) -> dict:
  """The state of every process's shards, so a checkpoint holds the whole stream."""
  keys = loader.state_keys
  local = np.array([[shard[key] for key in keys] for shard in loader.get_state()["shards"]], np.int64)
  # Gathered as int32 pairs: counts of a long run pass 2**31, and jax gathers 32-bit integers.
  rows = distributed.allgather_rows(local.view(np.int32)).view(np.int64)
  return {"first_shard": 0, "shards": [dict(zip(keys, map(int, row))) for row in rows]}


def _check_finite(step: int, metrics: dict[str, float]) -> None:
  """Stops the run before it saves (or trains on) a state whose loss or parameters went
  non-finite: a checkpoint of NaN parameters would be kept and good ones deleted."""
  bad = [f"{name} is {metrics[name]}" for name in ("loss", "param_norm") if not math.isfinite(metrics[name])]
  if bad:
    raise TrainingError(
        f"{' and '.join(bad)} by step {step} (checked every train.log_every steps and before "
        "each save); stopping without saving it. Checkpoints already saved are intact. "
        "Lower optimizer.learning_rate or set optimizer.grad_clip_norm, then resume.")


def train(config: ExperimentConfig, workdir: str, *, callbacks: Sequence[Callback] = (),
          devices: Optional[list] = None) -> TrainResult:
  """Trains (or resumes) the experiment in `workdir` on `devices` (default: all of them, in
  every process) and returns the final metrics and checkpoint.

  `config` is validated as the CLI does and never changed: the run works on a copy, which
  the result carries as resolved (vocabulary size, data_dir, dropout). Progress goes to the
  `t5x_lite` logger and, on process 0, to `callbacks`.
  """
  config = validate(copy.deepcopy(config))
  check_loggers_installed(config.train.loggers)
  workdir = os.fspath(workdir)
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
  check_writable_directory(workdir, "the workdir")
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  try:
    return _train(config, workdir, callbacks, devices)
  except BaseException:
    # A run that fails before its first checkpoint leaves no half-made workdir behind (one
    # it made itself: a directory the user gave that existed is left as it is).
    checkpoints_dir = os.path.join(workdir, checkpoints.CHECKPOINTS_DIRNAME)
    saved = os.path.isdir(checkpoints_dir) and any(
        name.isdigit() for name in os.listdir(checkpoints_dir))
    if created and not saved and jax.process_index() == 0:
      shutil.rmtree(workdir, ignore_errors=True)
    raise


def _train(config: ExperimentConfig, workdir: str, callbacks: Sequence[Callback],
           devices: Optional[list]) -> TrainResult:
  """train() in a workdir that exists, with a validated copy of the configuration."""
  is_main = jax.process_index() == 0
  callbacks = list(callbacks) if is_main else []
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
    # Every task's splits and features, before the first step, not at the first evaluation.
    pipeline.check_data(config.data, vocabulary)
    # Recorded at every save; a resumed run is checked against it before any other work.
    data_fingerprint = pipeline.fingerprint(config.data)
    if start_step is not None:
      check_same_data(checkpoints.read_meta(workdir, start_step), data_fingerprint, workdir)
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
        state = dataclasses.replace(state, params=params)
      start_step = 0
    state = jax.block_until_ready(state)  # Start stepping once set-up work has finished.
    # Only once the state is in hand (a failed restore leaves the workdir as it was), and
    # only if it trains: a run already at train.steps keeps the configuration it ran with.
    if is_main and start_step < config.train.steps:
      save_json(config, os.path.join(workdir, "config.json"))
    writer = MetricWriter(workdir, enabled=is_main, resume_step=start_step, config=config)
    cleanup.callback(writer.close)
    for callback in callbacks:
      close = getattr(callback, "close", None)
      if close is not None:  # A bar closes on errors too.
        cleanup.callback(close)
      callback.on_train_begin(start_step, config.train.steps)
    result = _loop(setup, state, start_step, train_loader, vocabulary, ckpt, writer, callbacks,
                   preemption, workdir, data_fingerprint)
  for callback in callbacks:
    callback.on_train_end(result)
  return result


def format_validation(config: ExperimentConfig, metrics: dict) -> str:
  """'validation loss 2.3456, accuracy 0.412, exact_match 0.300 (unigram entropy 4.1)': the
  evaluation line of the log and of the CLI's closing summary."""
  names = [n for n in validation_metric_names(config) or () if n not in EVAL_METRICS and n in metrics
           and "/" not in n]
  decoded = "".join(f", {name} {metrics[name]:.3f}" for name in names)
  # A mixture's tasks, each with its own loss (and decoded metrics): "(docs 2.51, addition 0.93)".
  per_task = ", ".join(f"{key[:-len('/loss')]} {value:.4f}" for key, value in metrics.items()
                       if key.endswith("/loss"))
  return (f"validation loss {metrics['loss']:.4f}{f' ({per_task})' if per_task else ''}, accuracy "
          f"{metrics['accuracy']:.3f}{decoded} (unigram entropy {metrics['unigram_entropy']:.4f})")


def _loop(setup: Setup, state: TrainState, step: int, train_loader: ShardedLoader,
          vocabulary: Vocabulary, ckpt: checkpoints.Checkpointer, writer: MetricWriter,
          callbacks: Sequence[Callback], preemption: "_Preemption", workdir: str,
          data_fingerprint: dict) -> TrainResult:
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
  saved_step = ckpt.latest_step()
  while step < total:
    local_batch = next(batches)
    window.add(local_batch)
    state, metrics = train_step(state, to_global(local_batch, setup.batch_sharding))
    step += 1
    # Every process must agree to stop, or the collectives of the save would not match.
    stopping = preemption.stop_at(step)
    saving = step % config.checkpoint.every_steps == 0 or step == total or stopping
    if step % config.train.log_every == 0 or step == total:
      last_train = _train_metrics(step, metrics, window, config, peak_flops=peak)
      writer.write(step, "train", last_train)
      for callback in callbacks:
        callback.on_log(step, last_train)
      window.reset()
    elif saving:  # Never save a state whose loss or parameters went non-finite.
      _check_finite(step, {name: float(metrics[name]) for name in ("loss", "param_norm")})
    for callback in callbacks:
      callback.on_step(step)
    if step == first_step:  # Mostly compilation: not training throughput.
      jax.block_until_ready(metrics)
      window.reset()
    evaluated = step % config.train.eval_every == 0 or step == total
    if evaluated:
      last_eval, _ = evaluate_tasks(setup, eval_step, state.params, vocabulary)
      writer.write(step, "validation", last_eval)
      if jax.process_index() == 0:
        logger.info("step %d: %s", step, format_validation(config, last_eval))
      for callback in callbacks:
        callback.on_eval(step, last_eval)
      window.reset()  # Evaluation time is not training throughput.
    if saving:
      ckpt.save(step, state, loader_state=global_loader_state(train_loader), experiment_config=config,
                vocabulary_path=os.path.join(workdir, VOCABULARY_FILE),
                metrics=last_eval if evaluated else None, dataset=data_fingerprint)
      saved_step = step
      for callback in callbacks:
        callback.on_checkpoint(step, os.path.join(str(ckpt.directory), str(step)))
    if stopping:
      ckpt.wait_until_finished()  # Only then is it saved (a second SIGTERM is ignored meanwhile).
      if jax.process_index() == 0:
        logger.warning("SIGTERM received: saved a checkpoint at step %d in %s; run the same "
                       "command to resume.", step, ckpt.directory)
      break
  return TrainResult(step=step, train=last_train, validation=last_eval, preempted=step < total,
                     checkpoint=(None if saved_step is None
                                 else os.path.join(str(ckpt.directory), str(saved_step))),
                     config=config)
