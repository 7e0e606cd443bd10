"""JSON round trip of an ExperimentConfig (config.json in the workdir)."""

from __future__ import annotations

import dataclasses
import json

from t5x_lite.config.overrides import field_types
from t5x_lite.config.schema import ExperimentConfig
from t5x_lite.config.validation import check_types, validate
from t5x_lite.errors import ConfigError
from t5x_lite.fileio import write_atomically


def to_dict(config: ExperimentConfig) -> dict:
  return dataclasses.asdict(config)


def to_json(config: ExperimentConfig) -> str:
  return json.dumps(to_dict(config), indent=2, sort_keys=False)


def from_dict(data: dict, where: str = " in the saved configuration") -> ExperimentConfig:
  """Rebuilds an ExperimentConfig from to_dict() output (e.g. a saved config.json)."""
  fields = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    raise ConfigError(f"Unknown configuration sections {unknown}{where}; valid: {sorted(fields)}.")
  sections = {}
  for name, values in data.items():
    cls = fields[name].default_factory
    if cls is dataclasses.MISSING:  # A plain field (name).
      sections[name] = values
      continue
    if not isinstance(values, dict):
      raise ConfigError(f"{name}{where} must be a mapping of its fields, not {values!r}.")
    unknown = sorted(set(values) - set(field_types(cls)))
    if unknown:
      raise ConfigError(f"Unknown keys in {name}{where}: {unknown}.")
    sections[name] = cls(**values)
  config = ExperimentConfig(**sections)
  check_types(config, where)
  return config


def save_json(config: ExperimentConfig, path: str) -> None:
  write_atomically(path, to_json(config) + "\n")


def load_json(path: str) -> ExperimentConfig:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except ValueError as e:  # Not JSON (cut short, edited), or not UTF-8.
    raise ConfigError(f"{path} is not a valid configuration file ({e}); it was damaged or "
                      "edited. Restore it from the checkpoint with `t5x-lite inspect "
                      "WORKDIR --json`, whose \"config\" is the same.") from None
  if not isinstance(data, dict):
    raise ConfigError(f"{path} holds {type(data).__name__}, not a configuration object.")
  return validate(from_dict(data, f" in {path}"))
