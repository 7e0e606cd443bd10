"""Experiment files and a run's config.json as an experiment: loading and their error messages."""

import dataclasses
import json
import os

import pytest
from config_helpers import EXPERIMENTS, SHIPPED, experiment

from t5x_lite import config as config_lib
from t5x_lite.config import ConfigError


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_experiments_load_and_round_trip(name):
  config = config_lib.load_experiment(experiment(name))
  assert config.name == name
  for key in ("train.steps", "train.batch_size", "train.seed", "train.eval_every",
              "train.log_every", "checkpoint.every_steps"):
    assert config_lib.get_field(config, key) is not None
  rebuilt = config_lib.from_dict(json.loads(config_lib.to_json(config)))
  assert rebuilt == config


def test_required_experiments_exist():
  for name in ("t5_1_1_small", "t5_1_1_base", "t5_1_1_large", "t5_1_1_xl", "t5_1_1_xxl",
               "tiny_python_docs"):
    assert name in SHIPPED
  assert sum(name.startswith("ablation_") for name in SHIPPED) >= 2


def test_ablation_changes_only_its_field():
  base = config_lib.load_experiment(experiment("tiny_python_docs"))
  tied = config_lib.load_experiment(experiment("ablation_tied_logits"))
  assert tied.model.tie_logits and not base.model.tie_logits
  tied.model.tie_logits = False
  tied.name = base.name
  assert tied == base


@pytest.mark.parametrize("body,expected", [
    ("raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
    ("x = 1\n", "defines no get_config"),
    ("def get_config():\n  return {'model': 1}\n", "returned dict, expected"),
    ("def get_config(:\n", "raised SyntaxError"),
    ("from t5x_lite.config import ExperimentConfig\n"
     "def get_config():\n  c = ExperimentConfig()\n  c.model.norm = 'batchnorm'\n  return c\n",
     "model.norm='batchnorm' is not a valid choice"),
])
def test_broken_experiment_files(tmp_path, body, expected):
  path = tmp_path / "broken.py"
  path.write_text(body)
  with pytest.raises(ConfigError, match=expected) as error:
    config_lib.load_experiment(str(path))
  assert str(path) in str(error.value) or "not a valid choice" in expected


def test_missing_experiment_lists_available():
  with pytest.raises(ConfigError, match="not found.*tiny_python_docs"):
    config_lib.load_experiment(os.path.join(EXPERIMENTS, "no_such_experiment.py"))


def test_a_runs_config_json_is_an_experiment(tmp_path):
  config = config_lib.load_experiment(experiment("ablation_relu_ffn"))
  path = tmp_path / "config.json"
  config_lib.save_json(config, str(path))
  rebuilt = config_lib.load_experiment(str(path), ["train.steps=7"])
  assert rebuilt == dataclasses.replace(config, train=dataclasses.replace(config.train, steps=7))
  path.write_text('{"model": {"d_moddel": 3}}')
  with pytest.raises(ConfigError, match=r"Unknown keys in model in .*config.json: \['d_moddel'\]"):
    config_lib.load_experiment(str(path))
  path.write_text("{not json")
  with pytest.raises(ConfigError, match=r"config.json is not a readable config.json"):
    config_lib.load_experiment(str(path))
  other = tmp_path / "notes.txt"
  other.write_text("hello")
  with pytest.raises(ConfigError, match=r"notes.txt is not an experiment: give a Python experiment"):
    config_lib.load_experiment(str(other))
