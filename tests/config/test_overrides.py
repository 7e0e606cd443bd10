"""--set overrides: dotted keys, values parsed to their fields' types, and their error messages."""

import pytest
from config_helpers import experiment

from t5x_lite import config as config_lib
from t5x_lite.config import ConfigError


def test_overrides_are_parsed_to_field_types():
  config = config_lib.load_experiment(experiment("tiny_python_docs"), [
      "model.d_ff=4096", "optimizer.learning_rate=0.5", "model.scan_layers=true",
      "mesh.shape=[2,-1]", "mesh.axes=data,model", "model.vocab_size=None",
      "checkpoint.init_from_step=7", "data.dataset=c4/en:3.1.0",
      'mesh.rules=[["batch", "data"], ["mlp", ["model"]]]', "mesh.rules_preset=custom",
      "train.loss_chunk_size=8"])
  assert config.model.d_ff == 4096 and isinstance(config.model.d_ff, int)
  assert config.optimizer.learning_rate == 0.5 and config.model.scan_layers is True
  assert config.mesh.shape == (2, -1) and config.mesh.axes == ("data", "model")
  assert config.model.vocab_size is None and config.checkpoint.init_from_step == 7
  assert config.data.dataset == "c4/en:3.1.0" and config.train.loss_chunk_size == 8
  assert config.mesh.rules == (("batch", "data"), ("mlp", ("model",)))


def test_unknown_key_names_it_and_suggests():
  with pytest.raises(ConfigError) as error:
    config_lib.load_experiment(experiment("tiny_python_docs"), ["model.dff=10"])
  message = str(error.value)
  assert "model.dff" in message and "model.d_ff" in message and "model.d_model" in message
  with pytest.raises(ConfigError, match="Unknown configuration key 'trian.steps'.*train.steps"):
    config_lib.load_experiment(experiment("tiny_python_docs"), ["trian.steps=3"])


@pytest.mark.parametrize("override,expected", [
    ("train.steps=ten", "expected a value of type int"),
    ("model.scan_layers=maybe", "expected a value of type bool"),
    ("optimizer.learning_rate=fast", "expected a value of type float"),
    ("mesh.shape=[1,x]", "mesh.shape"),
    ("train.steps", "expected KEY=VALUE"),
    ("model.ffn_activation=tanh", "not a valid choice"),
    ("train.batch_size=0", "must be positive"),
    ("train.grad_accum_steps=3", "does not divide"),
    ("train.loss_chunk_size=5", r"divide data.targets_length=32: one of \[1, 2, 4, 8, 16, 32\]"),
    ("train.loss_chunk_size=-1", "must be 0 \\(off\\) or divide"),
])
def test_bad_values_are_clear_errors(override, expected):
  with pytest.raises(ConfigError, match=expected):
    config_lib.load_experiment(experiment("tiny_python_docs"), [override])


def test_sequences_in_python_or_json_spelling():
  config = config_lib.load_experiment(experiment("tiny_python_docs"), [
      "mesh.axes=[data, model]", "mesh.rules_preset=custom",
      'mesh.rules=(("batch", "data"), ("mlp", None))', "data.eval_metrics=[bleu]"])
  assert config.mesh.axes == ("data", "model") and config.data.eval_metrics == ("bleu",)
  assert config.mesh.rules == (("batch", "data"), ("mlp", None))


def test_every_field_has_a_dotted_key():
  config = config_lib.ExperimentConfig()
  keys = config_lib.all_keys(config)
  assert "model.d_ff" in keys and "checkpoint.init_from_step" in keys and "name" in keys
  assert config_lib.get_field(config, "mesh.shape") == config.mesh.shape
