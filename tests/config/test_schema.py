"""The configuration dataclasses and the names the package exports."""

import dataclasses

from t5x_lite import config as config_lib
from t5x_lite.errors import ConfigError, UserError


def test_model_defaults_are_t5_1_1_base():
  assert config_lib.ModelConfig() == config_lib.t5_1_1("base")


def test_gated_ffn():
  assert config_lib.ModelConfig(ffn_activation="gated-relu").gated_ffn
  assert config_lib.ModelConfig(ffn_activation="swiglu").gated_ffn
  assert not config_lib.ModelConfig(ffn_activation="relu").gated_ffn


def test_sections_are_fresh_per_experiment():
  a, b = config_lib.ExperimentConfig(), config_lib.ExperimentConfig()
  a.train.steps = 7
  assert b.train.steps != 7
  assert [f.name for f in dataclasses.fields(a)] == [
      "model", "data", "optimizer", "train", "mesh", "checkpoint", "name"]


def test_package_exports_its_modules_names():
  """`from t5x_lite.config import X` keeps working for every name in __all__; errors are the
  ones in t5x_lite.errors, so `except ConfigError` catches either spelling."""
  for name in config_lib.__all__:
    assert hasattr(config_lib, name), name
  assert config_lib.ConfigError is ConfigError and config_lib.UserError is UserError
  assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
