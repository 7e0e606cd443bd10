"""What a run that starts from a checkpoint must share with it.

A resumed run must be the same run: the same architecture, data stream, vocabulary and
dataset, or it would silently train something else; settings that may change are listed.
A fine-tuning run (checkpoint.init_from) takes the checkpoint's architecture.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import jax

from t5x_lite import checkpoints
from t5x_lite.config import ExperimentConfig, ModelConfig, all_keys, get_field
from t5x_lite.data.pipeline import ShardedLoader
from t5x_lite.errors import ConfigError

logger = logging.getLogger(__name__)

# What fine-tuning may change about a pretrained model; the rest is its architecture.
_TRAINING_TIME_FIELDS = ("dropout_rate", "dropout_shared_over_length", "remat_policy", "dtype",
                         "attention_impl")


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
    logger.info("Starting from %s: using its architecture for %s.", source,
                ", ".join(f"model.{name}" for name in differing))
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
    logger.info("Resuming %s at step %d with changed settings: %s.", workdir, step,
                "; ".join(changed))
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


def _split_change(saved: dict, now: dict, role: str, step: int) -> Optional[str]:
  """How split `role` ('train_split', 'eval_split') of fingerprint `now` differs from the one
  `saved` with checkpoint `step`, in a line; None if it does not (or `saved` has no record).
  Only the data is compared: a data.train_split set to another slice is a changed setting,
  which check_resumable lists."""
  old, new = saved.get(role), now[role]
  if old is None or all(new.get(key) == value for key, value in old.items() if key != "split"):
    return None
  reasons = []
  if saved.get("dataset_info_sha256") != now["dataset_info_sha256"]:
    reasons.append("dataset_info.json changed")
  if old.get("shard_bytes") != new.get("shard_bytes"):
    reasons.append("its shard files' sizes changed")
  if old.get("records_digest") != new.get("records_digest"):
    reasons.append("its records changed")

  def counts(found: dict, noun: str = "") -> str:
    shards = found["shards"]
    return (f"{found['examples']:,}{noun} in {shards:,} shard{'' if shards == 1 else 's'} "
            f"({found['num_bytes']:,} bytes)")

  now_counts = "the same counts" if counts(new) == counts(old) else counts(new)
  return (f"{role.split('_')[0]} split {new['split']!r}: {counts(old, ' examples')} when step {step} "
          f"was saved, now {now_counts}" + (f" ({'; '.join(reasons)})" if reasons else ""))


def check_same_data(meta: dict, fingerprint: dict, workdir: str) -> None:
  """A resumed run reads on from where its checkpoint stopped, which is only the same run if
  the data is the one it was trained on: a dataset replaced since (`import-text --overwrite`)
  is refused, naming what changed. A changed eval split only changes the evaluation: a warning.
  Checkpoints saved before fingerprints were recorded (no "dataset" in `meta`) are not checked."""
  saved, step = meta.get("dataset"), meta["step"]
  if not saved:
    return
  dataset = f"{saved['dataset']!r} ({saved['path']})"
  if (saved["dataset"], saved["path"]) != (fingerprint["dataset"], fingerprint["path"]):
    dataset += f"; this run reads {fingerprint['dataset']!r} ({fingerprint['path']}), and its data differs"
  else:
    dataset += ", whose data has changed since"
  train_change = _split_change(saved, fingerprint, "train_split", step)
  if train_change:
    raise ConfigError(
        f"{workdir} was trained up to step {step} on dataset {dataset}: {train_change}. Resuming "
        "would go on with other data where the old stopped. To resume, put back the dataset the "
        "run was trained on; to train on the new data from these parameters, use a new workdir "
        f"with --set checkpoint.init_from={workdir} (parameters only: the optimizer state and the "
        "data position start afresh).")
  eval_change = _split_change(saved, fingerprint, "eval_split", step)
  if eval_change and jax.process_index() == 0:
    logger.warning("Resuming %s at step %d on dataset %s: %s; validation metrics from here on "
                   "are not comparable with earlier ones.", workdir, step, dataset, eval_change)
