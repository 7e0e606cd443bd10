"""Experiment files: finding one, running its get_config() (or reading a run's config.json),
then applying --set overrides and validating."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Optional

from t5x_lite.config.overrides import apply_overrides
from t5x_lite.config.schema import ExperimentConfig
from t5x_lite.config.serialization import from_dict
from t5x_lite.config.validation import check_types, validate
from t5x_lite.errors import ConfigError


def resolve_experiment_path(name_or_path: str) -> str:
  """Accepts a path to a .py file or a run's config.json, or a bare name found in
  ./experiments."""
  candidates = [name_or_path]
  if not name_or_path.endswith(".py"):
    candidates += [name_or_path + ".py", os.path.join("experiments", name_or_path + ".py")]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  here = os.path.dirname(name_or_path) or "experiments"
  available = sorted(f[:-3] for f in os.listdir(here) if f.endswith(".py")) if os.path.isdir(here) else []
  listing = f" Experiments in {here}/: {', '.join(available)}." if available else ""
  raise ConfigError(f"Experiment file {name_or_path!r} not found.{listing}")


def load_experiment(name_or_path: str, overrides: Optional[list[str]] = None) -> ExperimentConfig:
  """Runs an experiment file's get_config() (or reads a run's config.json, which rebuilds
  that run), applies overrides and validates."""
  path = resolve_experiment_path(name_or_path)
  if path.endswith(".json"):
    config = _read_saved_config(path)
  elif path.endswith(".py"):
    config = _run_experiment_file(path)
  else:
    raise ConfigError(
        f"{path} is not an experiment: give a Python experiment file (.py) defining "
        "get_config(), or a run's config.json.")
  check_types(config, f" in {path}")
  apply_overrides(config, overrides or [])
  if path.endswith(".py") and not config.data.tasks_module:
    from t5x_lite.data import tasks  # pylint: disable=import-outside-toplevel  (data imports config)
    if tasks.is_registered(config.data.dataset):  # Registered by the file (or what it imports).
      config.data.tasks_module = path
  return validate(config)


def _read_saved_config(path: str) -> ExperimentConfig:
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path} is not a readable config.json ({e}).") from None
  if not isinstance(data, dict):
    raise ConfigError(f"{path} holds a JSON {type(data).__name__}, not a saved configuration.")
  return from_dict(data, where=f" in {path}")


def _run_experiment_file(path: str) -> ExperimentConfig:
  directory = os.path.dirname(path)
  module_name = "_t5x_lite_experiment_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(module_name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"Experiment file {path} cannot be loaded as Python; give a .py file.")
  module = importlib.util.module_from_spec(spec)
  # Experiments may import sibling experiments (ablations import their base).
  sys.path.insert(0, directory)
  try:
    spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
      raise ConfigError(
          f"Experiment file {path} defines no get_config() function; it must define "
          "`def get_config() -> t5x_lite.config.ExperimentConfig`.")
    config = get_config()
  except ConfigError:
    raise
  except Exception as e:  # The user's file raised: report it as theirs, not ours.
    raise ConfigError(
        f"Experiment file {path} raised {type(e).__name__}: {e}. "
        "Fix the experiment file; it must define get_config() returning an ExperimentConfig.") from e
  finally:
    sys.path.remove(directory)
  if not isinstance(config, ExperimentConfig):
    raise ConfigError(
        f"get_config() in {path} returned {type(config).__name__}, expected "
        "t5x_lite.config.ExperimentConfig.")
  if not config.name:
    config.name = os.path.splitext(os.path.basename(path))[0]
  return config
