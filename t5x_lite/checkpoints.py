"""Checkpoints: asynchronous, atomic, resharding-on-restore saves of the training state.

Layout: ``WORKDIR/checkpoints/<step>/`` holds three Orbax items, so each can be
restored alone:

- ``params``: the parameter pytree (StandardSave: tensorstore, one array per leaf);
- ``opt_state``: the optimizer state pytree (same format);
- ``meta``: JSON with the step, the data loader's state, the resolved experiment
  configuration (``config.to_dict``), the vocabulary reference (path + sha256), the
  dataset's fingerprint (``data.sources.fingerprint``; absent in older checkpoints) and
  the metrics given to ``save``.

A parameters-only checkpoint (``save_params``, e.g. a model imported from
Hugging Face) has no ``opt_state`` and a null loader state: eval, inference and
export read it like any other; training starts from it in a new workdir with
``checkpoint.init_from``.

Atomicity (orbax-checkpoint 0.12.x, local filesystems): a step is written into
``<step>.orbax-checkpoint-tmp`` and renamed to ``<step>`` only after every item
and every process has finished (a ``commit_success.txt`` is also written). Orbax
lists only finalized step folders, so a process killed mid-save leaves the
previous steps intact and restorable; the unfinished folder is ignored by readers
and deleted by the next writer (``Checkpointer`` construction). Readers
(``restore_params``, ``read_meta``, ``describe``) open the directory read-only,
so an evaluator never deletes a trainer's in-progress save.

Failures: a full disk during a save (ENOSPC, raised when the save starts or when its
background write is waited for) is one CheckpointError naming the step and the checkpoint
kept; the unfinished folder is left to the next writer as above. ``describe`` (``t5x-lite
inspect``) flags a finished step whose files were removed or truncated since, from the
metadata and OCDBT indexes, without reading arrays.

Retention: the latest ``CheckpointConfig.keep`` steps are always kept (0 = keep
all). With ``keep_best_metric`` set, the single best step by that metric (given
to ``save`` as ``metrics``) is kept in addition, compared by
``metrics.lower_is_better``.

All processes must call ``save`` and ``restore`` (Orbax synchronizes them and
writes shared files from process 0 only).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
from typing import Any, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from absl import logging
from etils import epath

from t5x_lite import config as config_lib
from t5x_lite.config import CheckpointConfig, ExperimentConfig, UserError
from t5x_lite.metrics import lower_is_better

CHECKPOINTS_DIRNAME = "checkpoints"
# The run's SentencePiece model, copied into its workdir so eval and infer need nothing else.
VOCABULARY_FILE = "vocabulary.model"
# Lines of a mismatch report before it is cut short.
_MAX_REPORTED = 20


class CheckpointError(UserError, ValueError):
  """A checkpoint is missing, unreadable or does not fit what is being restored."""


# ----------------------------------------------------------------------------
# Directories and Orbax managers
# ----------------------------------------------------------------------------


def _absolute(path: str) -> epath.Path:
  """Orbax writes only to absolute paths; gs:// and other URIs already are."""
  path = epath.Path(path)
  # A relative path is a local one (os.path, as etils' paths gained absolute() only lately).
  return path if path.is_absolute() else epath.Path(os.path.abspath(os.fspath(path)))


def checkpoint_dir(path: str) -> epath.Path:
  """The checkpoints/ directory of a workdir, or ``path`` itself if it is one."""
  path = _absolute(path)
  if not path.exists():
    raise CheckpointError(f"Checkpoint directory {path} does not exist.")
  nested = path / CHECKPOINTS_DIRNAME
  return nested if nested.is_dir() else path


def _handler_registry() -> Any:
  # Registered up front so item metadata can be read before anything is restored.
  return ocp.handlers.create_default_handler_registry(
      params=ocp.StandardCheckpointHandler(),
      opt_state=ocp.StandardCheckpointHandler(),
      meta=ocp.JsonCheckpointHandler())


def _writer_options(config: CheckpointConfig) -> ocp.CheckpointManagerOptions:
  policies = ocp.checkpoint_managers
  latest = policies.LatestN(n=config.keep if config.keep > 0 else None)
  preservation = latest
  best_fn = None
  metric = config.keep_best_metric
  if metric:
    best_fn = lambda metrics: float(metrics[metric])
    preservation = policies.AnyPreservationPolicy([
        latest,
        # Steps saved without the metric are covered by LatestN only.
        policies.BestN(get_metric_fn=best_fn, reverse=lower_is_better(metric), n=1,
                       keep_checkpoints_without_metrics=False),
    ])
  return ocp.CheckpointManagerOptions(
      preservation_policy=preservation,
      # best_fn makes Orbax write the metrics next to each step, so the best
      # step is still known after a restart.
      best_fn=best_fn,
      enable_async_checkpointing=config.async_save,
      cleanup_tmp_directories=True,
      create=True)


@contextlib.contextmanager
def _reading(path: str) -> Iterator[ocp.CheckpointManager]:
  """A read-only manager on a workdir or checkpoints/ dir: it never deletes anything."""
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # Orbax warns that a read-only directory is read-only.
  try:
    manager = ocp.CheckpointManager(
        checkpoint_dir(path), options=options, handler_registry=_handler_registry())
    try:
      yield manager
    finally:
      manager.close()
  finally:
    logging.set_verbosity(verbosity)


def _resolve_step(manager: ocp.CheckpointManager, step: Optional[int]) -> int:
  steps = sorted(manager.all_steps())
  if not steps:
    unfinished = ocp.path.step.tmp_checkpoints(manager.directory)
    detail = f" (only unfinished saves: {', '.join(sorted(unfinished))})" if unfinished else ""
    raise CheckpointError(
        f"No finished checkpoint in {manager.directory}{detail}: the run has saved none yet. "
        "Check the path, or train it first (checkpoints are saved every "
        "checkpoint.every_steps steps and at the end).")
  if step is None:
    return steps[-1]
  if step not in steps:
    raise CheckpointError(
        f"Checkpoint step {step} not found in {manager.directory}; steps present: "
        f"{', '.join(map(str, steps))}.")
  return step


# ----------------------------------------------------------------------------
# Structure checks (before any array is read)
# ----------------------------------------------------------------------------


def _is_array_like(x: Any) -> bool:
  return hasattr(x, "shape") and hasattr(x, "dtype")


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _flat(tree: Any) -> dict[str, Any]:
  """'a/b/c' -> leaf; NamedTuple fields and dict keys spell the same way."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_array_like)
  return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _mismatches(item: str, saved: Any, expected: Any) -> list[str]:
  """Missing arrays first, then unexpected ones, then shape differences."""
  saved_flat, expected_flat = _flat(saved), _flat(expected)
  missing, extra, reshaped = [], [], []
  for name, want in sorted(expected_flat.items()):
    have = saved_flat.get(name)
    if have is None:
      missing.append(f"  {item}/{name}: missing from the checkpoint (expected {tuple(want.shape)})")
    elif tuple(have.shape) != tuple(want.shape):
      reshaped.append(f"  {item}/{name}: saved {tuple(have.shape)}, expected {tuple(want.shape)}")
  for name in sorted(saved_flat.keys() - expected_flat.keys()):
    extra.append(
        f"  {item}/{name}: in the checkpoint but not in the model "
        f"(saved {tuple(saved_flat[name].shape)})")
  return missing + extra + reshaped


def _first_line(error: BaseException) -> str:
  """An error's gist: Orbax and TensorStore append the whole store spec to it."""
  line = (str(error).strip().splitlines() or [""])[0]
  return line.split(" See full")[0].split(" [tensorstore_spec=")[0][:300]


def _move_aside(directory: epath.Path, step: int) -> str:
  """The command that moves a damaged step out of Orbax's sight (nothing is deleted)."""
  return f"mv {directory / str(step)} {directory.parent / f'damaged_step_{step}'}"


def _damaged_message(directory: epath.Path, steps: list[int], step: int, reason: str) -> str:
  earlier = [s for s in sorted(steps) if s < step]
  fallback = (f"to go on from step {earlier[-1]}, move this one out of the way: "
              f"{_move_aside(directory, step)}" if earlier else "no earlier step is saved")
  return (f"Checkpoint step {step} in {directory} cannot be read, its files are damaged "
          f"or incomplete ({reason}); {fallback}.")


@contextlib.contextmanager
def _reading_step(manager: ocp.CheckpointManager, step: int) -> Iterator[None]:
  """Turns a failure to read a finished step (its files damaged or deleted since) into one
  message that says how to go on from an earlier step, without deleting anything."""
  try:
    yield
  except CheckpointError:
    raise
  except Exception as e:  # Orbax, TensorStore and JSON errors alike.
    if not _looks_damaged(e):
      raise  # Out of memory, a sharding or compile error, a bug: not the files' fault.
    raise CheckpointError(_damaged_message(
        manager.directory, list(manager.all_steps()), step, f"{type(e).__name__}: {_first_line(e)}")) from e


# Failures of reading that are no fault of the files (the traceback tells what they are).
_NOT_DAMAGE = ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory", "sharding", "Sharding")


def _looks_damaged(error: Exception) -> bool:
  if isinstance(error, (MemoryError, KeyboardInterrupt, AssertionError, TypeError)):
    return False
  text = str(error)
  return not any(marker in text for marker in _NOT_DAMAGE)


class _DamagedFile(FileNotFoundError):
  """A file of a step is missing or shorter than the data it should hold; the message names it."""


def _check_array_files(item_dir: epath.Path, name: str) -> None:
  """Raises _DamagedFile for the first file of an item's OCDBT database that is missing or
  shorter than the array data its b-tree points into. Reads the b-tree nodes (small) and
  the files' sizes, not the arrays; ``name``: how the message spells ``item_dir``."""
  if not json.loads((item_dir / "_METADATA").read_text()).get("use_ocdbt", True):
    return  # One file per chunk (never written by this package): nothing cheap to check.
  if not (item_dir / "manifest.ocdbt").exists():
    raise _DamagedFile(f"{name}/manifest.ocdbt: missing")
  path = f"{item_dir}/"
  base = ts.KvStore.open(path if "://" in path else {"driver": "file", "path": path}).result()
  versions = ts.ocdbt.dump(base).result()["versions"]
  pending = [versions[-1]["root"].get("location")] if versions else []
  ends: dict[str, int] = {}  # File -> the furthest byte the tree points to in it.
  while pending:
    location = pending.pop()
    if location is None:  # An empty tree.
      continue
    _check_file(item_dir, name, *_file_and_end(location))  # Named, not a TensorStore error.
    for entry in ts.ocdbt.dump(base, location).result().get("entries", []):
      for value in entry.values():
        if isinstance(value, str) and value.startswith("btreenode:"):
          pending.append(value)
        elif isinstance(value, str) and value.startswith("value:"):
          file, end = _file_and_end(value)
          ends[file] = max(ends.get(file, 0), end)
  for file, end in sorted(ends.items()):
    _check_file(item_dir, name, file, end)


def _check_file(item_dir: epath.Path, name: str, file: str, end: int) -> None:
  size = (item_dir / file).stat().length if (item_dir / file).exists() else None
  if size is None or size < end:
    problem = "missing" if size is None else f"truncated to {size} bytes, its data end at byte {end}"
    raise _DamagedFile(f"{name}/{file}: {problem}")


def _file_and_end(location: str) -> tuple[str, int]:
  """'value:ocdbt.process_0/:d/<id>:<offset>:<length>' (an OCDBT dump's reference) ->
  ('ocdbt.process_0/d/<id>', offset + length)."""
  _, prefix, rest = location.split(":", 2)
  file, offset, length = rest.rsplit(":", 2)
  return prefix + file, int(offset) + int(length)


def _damage(manager: ocp.CheckpointManager, step: int) -> Optional[str]:
  """Why a finished ``step`` could not be restored (what is wrong with which file), or None.

  Cheap enough to run on every step: it reads the items' metadata, the meta JSON and the
  OCDBT b-trees, and checks the arrays' files are there and long enough; no array is read.
  """
  step_dir, name = manager.directory / str(step), f"{manager.directory.name}/{step}"
  where = f"{name}/meta"
  try:
    _require(step_dir, name, "meta", "metadata")
    loader_state = _read_meta(manager, step).get("loader_state")
    for item in ("params",) + (() if loader_state is None else ("opt_state",)):
      where = f"{name}/{item}"
      _require(step_dir, name, item, "_METADATA")
      _check_array_files(step_dir / item, where)
    where = name
    manager.item_metadata(step)  # What a restore reads first (it opens every array).
  except _DamagedFile as e:
    return str(e)
  except Exception as e:
    if not _looks_damaged(e):
      raise
    return f"{where}: {type(e).__name__}: {_first_line(e)}"
  return None


def _require(directory: epath.Path, name: str, *parts: str) -> None:
  """Raises _DamagedFile naming the first missing one of directory/a, directory/a/b, ..."""
  for i in range(len(parts)):
    if not directory.joinpath(*parts[:i + 1]).exists():
      raise _DamagedFile(f"{name}/{'/'.join(parts[:i + 1])}: missing")


def _check_fits(manager: ocp.CheckpointManager, step: int, expected: dict[str, Any]) -> None:
  """Compares saved shapes (metadata only) with the abstract target, item by item."""
  metadata = manager.item_metadata(step)
  lines = []
  for item, target in expected.items():
    saved = metadata.get(item)
    if saved is None and item == "opt_state" and "params" in metadata and (
        _read_meta(manager, step).get("loader_state") is None):
      raise CheckpointError(
          f"Checkpoint step {step} in {manager.directory} holds parameters only (e.g. imported "
          "from Hugging Face by `t5x-lite import-hf`), so there is no optimizer state to resume. "
          "To fine-tune from it, train in a new workdir with --set "
          f"checkpoint.init_from={manager.directory.parent}.")
    if saved is None:  # Deleted since it was saved: _reading_step reports it.
      raise FileNotFoundError(f"its {item!r} item is missing")
    lines += _mismatches(item, saved, target)
  if lines:
    shown = lines[:_MAX_REPORTED]
    if len(lines) > _MAX_REPORTED:
      shown.append(f"  ... and {len(lines) - _MAX_REPORTED} more")
    sizes = _vocab_sizes(metadata["params"], expected["params"])
    if sizes is not None:
      others = sum(not any(name in line for name in _VOCAB_AXES) for line in lines)
      raise CheckpointError(
          vocabulary_mismatch(f"Checkpoint step {step} in {manager.directory}",
                              _read_meta(manager, step), *sizes)
          + (f" ({others} other arrays differ too.)" if others else "") + "\n" + "\n".join(shown))
    hint = ""
    if all(line.lstrip().startswith("opt_state/") for line in lines):
      hint = (" Only the optimizer state differs: resume with the optimizer settings the run was "
              "trained with (optimizer.name, factored, clipping_threshold, ...; `t5x-lite inspect` "
              "shows them), or start a new workdir from its weights with checkpoint.init_from.")
    raise CheckpointError(
        f"Checkpoint step {step} in {manager.directory} does not fit the configured model "
        f"({len(lines)} mismatched arrays).{hint}\n" + "\n".join(shown))


# The arrays with a vocabulary axis, and which axis it is (model.py's token embedder and
# untied output projection); optimizer statistics of these arrays carry the same names.
_VOCAB_AXES = {"token_embedder/embedding": 0, "logits_dense": 1}


def _vocab_sizes(saved: Any, expected: Any) -> Optional[tuple[int, int]]:
  """(saved, expected) vocabulary sizes where the embedding's vocabulary axis differs."""
  saved_flat, expected_flat = _flat(saved), _flat(expected)
  for name, axis in _VOCAB_AXES.items():
    have, want = saved_flat.get(name), expected_flat.get(name)
    if have is not None and want is not None and len(have.shape) == len(want.shape) > axis and (
        have.shape[axis] != want.shape[axis]):
      return int(have.shape[axis]), int(want.shape[axis])
  return None


def vocabulary_mismatch(where: str, meta: dict, saved: int, size: int) -> str:
  """Says that the checkpoint ``where`` (with its ``meta``) was trained with vocab_size
  ``saved`` and which vocabulary file (a list of reshaped arrays does not say that another
  vocabulary is the cause), that this run has ``size``, and how to go on."""
  recorded = meta.get("vocabulary") or {}
  path = recorded.get("path") or ((meta.get("config") or {}).get("data") or {}).get("vocabulary")
  trained = f"vocab_size {saved}"
  if path:
    trained += f" (vocabulary {path}"
    if recorded.get("sha256") and epath.Path(path).is_file() and (
        file_reference(path)["sha256"] != recorded["sha256"]):
      trained += f", sha256 {recorded['sha256'][:12]}...: that file has been replaced since"
    trained += ")"
  settings = (f"data.vocabulary={path} " if path else "") + f"model.vocab_size={saved}"
  return (f"{where} was trained with {trained}; this run has vocab_size {size}. Use the same "
          f"vocabulary as the checkpoint (--set {settings}, or drop the settings that changed "
          "them), or start a new workdir to train with the new vocabulary from scratch.")


def _check_shardings(item: str, abstract: Any) -> None:
  for name, leaf in _flat(abstract).items():
    if not isinstance(leaf, jax.ShapeDtypeStruct) or leaf.sharding is None:
      raise CheckpointError(
          f"Restore target {item}/{name} must be a jax.ShapeDtypeStruct with .sharding set "
          f"(got {leaf!r}), so that each array is read directly into its shards.")


def _restore_args(abstract_items: dict[str, Any]) -> ocp.args.Composite:
  return ocp.args.Composite(
      **{item: ocp.args.StandardRestore(tree) for item, tree in abstract_items.items()})


# ----------------------------------------------------------------------------
# JSON metadata
# ----------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
  if isinstance(value, (np.generic, np.ndarray, jax.Array)):
    return np.asarray(value).tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _jsonable(value: Any) -> Any:
  """Plain JSON types, so the meta item round-trips exactly."""
  return json.loads(json.dumps(value, default=_json_default))


def file_reference(path: str) -> dict[str, str]:
  """{'path', 'sha256'}: lets a restore tell whether the vocabulary file changed."""
  file = epath.Path(path)
  return {"path": str(file.resolve()), "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}


def _meta(step: int, experiment_config: ExperimentConfig, vocabulary_path: Optional[str],
          loader_state: Optional[dict], metrics: dict, dataset: Optional[dict] = None) -> dict:
  return {
      "step": step,
      "loader_state": _jsonable(loader_state),
      "config": _jsonable(config_lib.to_dict(experiment_config)),
      "vocabulary": file_reference(vocabulary_path) if vocabulary_path else None,
      "dataset": _jsonable(dataset),  # What the run read, to tell on resume if it was replaced.
      "metrics": metrics,
  }


def _scalar(value: int, abstract: Any) -> jax.Array:
  """The step as an array placed like ``abstract`` (replicated over its mesh)."""
  dtype = getattr(abstract, "dtype", jnp.int32)
  host = np.asarray(value, dtype=dtype)
  sharding = getattr(abstract, "sharding", None)
  if sharding is None:
    return jnp.asarray(host)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


# ----------------------------------------------------------------------------
# The writer used by the trainer
# ----------------------------------------------------------------------------


class Checkpointer:
  """Saves and restores a TrainState under WORKDIR/checkpoints.

  The state is any flax.struct dataclass with fields ``step``, ``params`` and
  ``opt_state`` (t5x_lite.train_state.TrainState). Creating one deletes unfinished
  saves left by a killed process; use a single Checkpointer per workdir and job.
  """

  def __init__(self, workdir: str, config: CheckpointConfig):
    self.directory = _absolute(workdir) / CHECKPOINTS_DIRNAME
    self._manager = ocp.CheckpointManager(
        self.directory, options=_writer_options(config), handler_registry=_handler_registry())
    # Orbax deletes unfinished saves in a background thread; a process that stops early (a
    # configuration error found next) must not exit under it.
    cleanup = getattr(self._manager, "_cleanup_tmp_directory_future", None)
    if cleanup is not None:
      cleanup.result()
    self._best_metric = config.keep_best_metric
    self._writing: Optional[int] = None  # The step whose save may still be in flight.

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, *, loader_state: dict, experiment_config: ExperimentConfig,
           vocabulary_path: Optional[str], metrics: Optional[dict] = None,
           dataset: Optional[dict] = None) -> bool:
    """Starts saving ``step`` (the trainer decides when); returns whether it did.

    ``dataset``: the fingerprint of the data trained on (data.sources.fingerprint), if known.

    Returns as soon as the arrays are copied off the devices; writing continues in
    the background (async_save). A step that is already saved is not saved again.
    """
    step = int(step)
    self.wait_until_finished()  # Else Orbax would report the previous save's failure as this one's.
    if step in self._manager.all_steps():
      return False
    metrics = _jsonable(metrics or {})
    meta = _meta(step, experiment_config, vocabulary_path, loader_state, metrics, dataset)
    tracked = {self._best_metric: metrics[self._best_metric]} if self._best_metric in metrics else None
    self._writing = step
    with self._saving(step):
      return self._manager.save(
          step,
          args=ocp.args.Composite(
              params=ocp.args.StandardSave(state.params),
              opt_state=ocp.args.StandardSave(state.opt_state),
              meta=ocp.args.JsonSave(meta)),
          metrics=tracked, force=True)

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> tuple[Any, dict]:
    """(state, meta) of ``step`` (default: latest), each array in its target sharding.

    ``abstract_state``: the TrainState of jax.ShapeDtypeStruct with .sharding set
    (e.g. from jax.eval_shape plus the mesh shardings). Raises CheckpointError if
    there is no checkpoint, the step is absent, it holds parameters only, or shapes
    differ from the target.
    """
    self.wait_until_finished()
    step = _resolve_step(self._manager, step)
    targets = {"params": abstract_state.params, "opt_state": abstract_state.opt_state}
    for item, tree in targets.items():
      _check_shardings(item, tree)
    with _reading_step(self._manager, step):
      _check_fits(self._manager, step, targets)
      restored = self._manager.restore(
          step, args=ocp.args.Composite(**_restore_args(targets), meta=ocp.args.JsonRestore()))
    meta = dict(restored["meta"])
    state = abstract_state.replace(
        step=_scalar(meta["step"], abstract_state.step),
        params=restored["params"], opt_state=restored["opt_state"])
    return state, meta

  def wait_until_finished(self) -> None:
    """Returns once the last save is on disk; raises CheckpointError if the disk filled up."""
    step, self._writing = self._writing, None
    with self._saving(step):
      self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending writes and deletions; call before the process exits."""
    try:
      self.wait_until_finished()
    finally:
      self._manager.close()  # Orbax raises a failed save once: this only closes.

  @contextlib.contextmanager
  def _saving(self, step: Optional[int]) -> Iterator[None]:
    """A full disk during the save of ``step`` (raised when it starts, or when its background
    write is waited for) becomes one message that says which checkpoint is kept."""
    try:
      yield
    except Exception as e:
      if step is None or not _is_disk_full(e):
        raise
      self._manager.reload()  # From the disk: Orbax forgot the steps it meant to delete after this save.
      kept = [s for s in self._manager.all_steps() if s != step]
      outcome = (f"the last complete checkpoint (step {max(kept)}) is kept; free space (or set "
                 "checkpoint.keep lower) and resume with the same command" if kept else
                 "no complete checkpoint is saved yet; free space and run the same command again")
      raise CheckpointError(
          f"disk full while saving the checkpoint of step {step} in {self.directory}: {outcome}.") from e

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def _is_disk_full(error: BaseException) -> bool:
  """Whether a full disk (or quota) caused ``error``: Orbax wraps the OSError in asyncio,
  future and ExceptionGroup layers; TensorStore keeps only its text."""
  seen, pending = set(), [error]
  while pending:
    e = pending.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if (isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS) or any(
        text in str(e) for text in _DISK_FULL_TEXT):
      return True
    pending += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
  return False


def save_params(workdir: str, params: Any, experiment_config: ExperimentConfig, step: int = 0,
                vocabulary_path: Optional[str] = None) -> None:
  """Writes a parameters-only checkpoint of ``step`` and returns once it is on disk.

  For models that come without training state (import-hf). ``params``: numpy or
  jax arrays laid out as model.abstract_params(experiment_config.model). One
  process only; raises CheckpointError if ``step`` is already saved.
  """
  directory = _absolute(workdir) / CHECKPOINTS_DIRNAME
  options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=True)
  manager = ocp.CheckpointManager(directory, options=options, handler_registry=_handler_registry())
  with contextlib.closing(manager):
    if step in manager.all_steps():
      raise CheckpointError(f"{directory} already holds step {step}; write to a new workdir.")
    meta = _meta(step, experiment_config, vocabulary_path, loader_state=None, metrics={})
    manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                               meta=ocp.args.JsonSave(meta)), force=True)


# ----------------------------------------------------------------------------
# Readers (read-only: safe next to a running trainer)
# ----------------------------------------------------------------------------


def all_steps(path: str) -> list[int]:
  """Finished steps in a workdir or checkpoints/ dir."""
  with _reading(path) as manager:
    return sorted(manager.all_steps())


def latest_step(path: str) -> Optional[int]:
  steps = all_steps(path)
  return steps[-1] if steps else None


def restore_params(path: str, abstract_params: Any, step: Optional[int] = None) -> Any:
  """Only the parameters (eval, inference, fine-tuning with a fresh optimizer).

  ``path``: a workdir or its checkpoints/ dir; ``abstract_params``: pytree of
  jax.ShapeDtypeStruct with .sharding set.
  """
  _check_shardings("params", abstract_params)
  with _reading(path) as manager:
    step = _resolve_step(manager, step)
    with _reading_step(manager, step):
      _check_fits(manager, step, {"params": abstract_params})
      return manager.restore(step, args=_restore_args({"params": abstract_params}))["params"]


def _read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  return dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def read_meta(path: str, step: Optional[int] = None) -> dict:
  """The JSON meta item: step, loader_state, config, vocabulary, dataset (if recorded), metrics."""
  with _reading(path) as manager:
    step = _resolve_step(manager, step)
    with _reading_step(manager, step):
      return _read_meta(manager, step)


def read_config(path: str, step: Optional[int] = None) -> ExperimentConfig:
  """The experiment configuration a checkpoint was trained with."""
  return config_lib.from_dict(read_meta(path, step)["config"])


def _bytes_on_disk(directory: epath.Path) -> int:
  return sum((root / name).stat().length for root, _, files in directory.walk() for name in files)


def describe(path: str, step: Optional[int] = None) -> dict:
  """Steps, bytes on disk per step, damaged steps, and the parameter tree and config of
  ``step`` (default: the latest step that is not damaged).

  Reads metadata, JSON and the arrays' indexes only; no array is loaded.
  """
  with _reading(path) as manager:
    directory = manager.directory
    asked = step
    step = _resolve_step(manager, step)
    steps = sorted(manager.all_steps())
    damaged = {s: reason for s in steps if (reason := _damage(manager, s)) is not None}
    if asked is None:
      step = max((s for s in steps if s not in damaged), default=step)
    if step in damaged:
      raise CheckpointError(_damaged_message(directory, steps, step, damaged[step]))
    saved = _flat(manager.item_metadata(step)["params"])
    meta = _read_meta(manager, step)
  params = {name: {"shape": list(leaf.shape), "dtype": str(np.dtype(leaf.dtype))}
            for name, leaf in sorted(saved.items())}
  return {
      "directory": str(directory),
      "steps": steps,
      "step": step,
      "bytes_on_disk": {s: _bytes_on_disk(directory / str(s)) for s in steps},
      "damaged": damaged,  # Step -> which file is missing, truncated or unreadable.
      "params": params,
      "num_params": sum(math.prod(p["shape"]) for p in params.values()),
      "param_bytes": sum(math.prod(p["shape"]) * np.dtype(p["dtype"]).itemsize
                         for p in params.values()),
      "config": meta["config"],
      "loader_state": meta["loader_state"],
      "vocabulary": meta["vocabulary"],
      "metrics": meta["metrics"],
  }


def _human_bytes(n: float) -> str:
  if n < 1024:
    return f"{int(n)} B"
  for unit in ("KiB", "MiB", "GiB", "TiB"):  # noqa: B007  (read after the loop)
    n /= 1024
    if n < 1024:
      break
  return f"{n:.1f} {unit}"


def format_description(info: dict) -> str:
  """describe() as text for a terminal."""
  lines = [f"Checkpoints in {info['directory']}", "Steps (bytes on disk):"]
  for s in info["steps"]:
    damage = info["damaged"].get(s)
    lines.append(f"  {s}: {_human_bytes(info['bytes_on_disk'][s])}" + (
        f"  DAMAGED ({damage}); move it aside with: {_move_aside(epath.Path(info['directory']), s)}"
        if damage else ""))
  lines.append(
      f"Parameters at step {info['step']}: {info['num_params']:,} "
      f"({_human_bytes(info['param_bytes'])})")
  width = max(len(name) for name in info["params"])
  for name, leaf in info["params"].items():
    lines.append(f"  {name:<{width}}  {tuple(leaf['shape'])!s:<18} {leaf['dtype']}")
  vocabulary = info["vocabulary"]
  if vocabulary:
    lines.append(f"Vocabulary: {vocabulary['path']} (sha256 {vocabulary['sha256'][:16]}...)")
  if info["metrics"]:
    lines.append(f"Metrics: {json.dumps(info['metrics'], sort_keys=True)}")
  lines.append(f"Configuration at step {info['step']}:")
  lines.append(json.dumps(info["config"], indent=2))
  return "\n".join(lines)


def use_host_only() -> None:
  """Keeps JAX off accelerators a trainer may be using, for jobs that only move files.

  Effective only before JAX starts its first backend (later it changes nothing).
  """
  jax.config.update("jax_platforms", "cpu")
