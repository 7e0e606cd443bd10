"""Dotted keys ('model.d_ff') and --set overrides: parsing each value to its field's type.

Also the type coercion and type names that check_types (validation) shares, and the
unknown-key error with suggestions.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from typing import Any

from t5x_lite.config.schema import ExperimentConfig
from t5x_lite.errors import ConfigError


def field_types(cls) -> dict[str, Any]:
  """A dataclass's field annotations as types (``from __future__ import annotations`` leaves
  strings in __annotations__)."""
  return typing.get_type_hints(cls)


def all_keys(config: ExperimentConfig) -> list[str]:
  """Every settable dotted key, e.g. 'model.d_ff'."""
  keys = []
  for section in dataclasses.fields(config):
    value = getattr(config, section.name)
    if dataclasses.is_dataclass(value):
      keys.extend(f"{section.name}.{f.name}" for f in dataclasses.fields(value))
    else:
      keys.append(section.name)
  return keys


def get_field(config: ExperimentConfig, key: str) -> Any:
  obj = config
  for part in key.split("."):
    obj = getattr(obj, part)
  return obj


def unknown_key_error(config: ExperimentConfig, key: str, where: str = "") -> ConfigError:
  """The error for a key no section has: the closest keys, then the valid keys of its section."""
  keys = all_keys(config)
  close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
  section = key.split(".")[0]
  nearby = [k for k in keys if k.startswith(section + ".")] or sorted({k.split(".")[0] for k in keys})
  hint = f" Did you mean {', '.join(close)}?" if close else ""
  return ConfigError(
      f"Unknown configuration key {key!r}{where}.{hint} Valid keys here: {', '.join(nearby)}.")


def _parse_value(text: str, annotation: Any, key: str) -> Any:
  """Parses the text of a --set value into the field's declared type."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin in (typing.Union, types.UnionType):
    non_none = [a for a in args if a is not type(None)]
    if text.lower() in ("none", "null"):
      return None
    return _parse_value(text, non_none[0], key)
  try:
    if annotation is bool:
      lowered = text.lower()
      if lowered in ("true", "1", "yes", "on"):
        return True
      if lowered in ("false", "0", "no", "off"):
        return False
      raise ValueError(text)
    if annotation is int:
      return int(text)
    if annotation is float:
      return float(text)
    if annotation is str:
      return text
    if origin is tuple:
      return coerce(_parse_sequence(text), annotation)
    if annotation is Any:
      return json.loads(text)
  except (ValueError, TypeError, json.JSONDecodeError):
    pass
  raise ConfigError(
      f"--set {key}={text!r}: expected a value of type {type_name(annotation)}.")


def _parse_sequence(text: str) -> list:
  """'4,2', '[4, 2]', '(4, 2)', '[data, model]', '[["batch", "data"]]' or
  '(("batch", None),)' -> a list: JSON or Python spelling, words quoted or bare."""
  stripped = text.strip()
  if not stripped.startswith(("[", "(")):
    return [_parse_scalar(item.strip()) for item in stripped.split(",") if item.strip()]
  stripped = stripped.replace("(", "[").replace(")", "]").replace("'", '"')
  stripped = re.sub(r'"[^"]*"|(?<![\w.])[A-Za-z_][\w\-./]*', _word_as_json, stripped)
  return json.loads(re.sub(r",\s*]", "]", stripped))


_JSON_WORDS = {"None": "null", "True": "true", "False": "false",
               "null": "null", "true": "true", "false": "false"}


def _word_as_json(match: re.Match) -> str:
  """A quoted string as it is; a bare word as JSON's constant or as a string."""
  word = match.group(0)
  return word if word.startswith('"') else _JSON_WORDS.get(word, json.dumps(word))


def _parse_scalar(text: str) -> Any:
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


def coerce(value: Any, annotation: Any) -> Any:
  """`value` as a field of type `annotation`: a list becomes a tuple and an int a float;
  any other mismatch (a bool for an int included) raises TypeError or ValueError."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin in (typing.Union, types.UnionType):
    if value is None:
      return None
    return coerce(value, next(a for a in args if a is not type(None)))
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise TypeError(value)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(coerce(v, args[0]) for v in value)
    return tuple(coerce(v, a) for v, a in zip(value, args, strict=True))
  if annotation is Any:
    return tuple(value) if isinstance(value, list) else value
  if annotation is float and type(value) is int:
    return float(value)
  if isinstance(value, bool) != (annotation is bool) or not isinstance(value, annotation):
    raise TypeError(value)
  return value


def type_name(annotation: Any) -> str:
  """'int', 'Optional[int]', 'tuple[str, ...]': generics' __name__ would drop their arguments."""
  return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def apply_overrides(config: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
  """Applies ["model.d_ff=4096", ...] in place, each parsed to its field's type."""
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example --set train.steps=100.")
    key, text = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if len(parts) == 1 and key in {f.name for f in dataclasses.fields(config)}:
      section_obj, name = config, key
    elif len(parts) == 2 and hasattr(config, parts[0]) and dataclasses.is_dataclass(
        getattr(config, parts[0])):
      section_obj, name = getattr(config, parts[0]), parts[1]
    else:
      raise unknown_key_error(config, key)
    types_ = field_types(type(section_obj))
    if name not in types_:
      raise unknown_key_error(config, key)
    setattr(section_obj, name, _parse_value(text, types_[name], key))
  return config
