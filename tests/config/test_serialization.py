"""The JSON round trip of a configuration (config.json in the workdir)."""

import dataclasses

import pytest
from config_helpers import experiment

from t5x_lite import config as config_lib
from t5x_lite.config import ConfigError


def test_saved_json_rebuilds_the_run(tmp_path):
  config = config_lib.load_experiment(experiment("ablation_relu_ffn"), ["train.steps=3"])
  path = str(tmp_path / "config.json")
  config_lib.save_json(config, path)
  assert config_lib.load_json(path) == config
  assert dataclasses.asdict(config_lib.load_json(path))["model"]["ffn_activation"] == "relu"


def test_a_saved_configuration_with_a_wrong_type_is_a_config_error():
  data = config_lib.to_dict(config_lib.ExperimentConfig())
  data["model"]["d_ff"] = "2048"
  with pytest.raises(ConfigError, match="model.d_ff = '2048' .* in the saved configuration"):
    config_lib.from_dict(data)


def test_unknown_sections_are_named():
  with pytest.raises(ConfigError, match=r"Unknown configuration sections \['modle'\]"):
    config_lib.from_dict({"modle": {}})


def test_a_cut_or_foreign_config_json_is_one_clear_error(tmp_path):
  path = tmp_path / "config.json"
  config_lib.save_json(config_lib.ExperimentConfig(), str(path))
  path.write_text(path.read_text()[:40])  # Cut short, as by a full disk.
  with pytest.raises(ConfigError, match="is not a valid configuration file"):
    config_lib.load_json(str(path))
  path.write_text("[1, 2]")
  with pytest.raises(ConfigError, match="holds list, not a configuration object"):
    config_lib.load_json(str(path))
