"""Experiment files, --set overrides and their error messages."""

import dataclasses
import json
import os

import pytest

from t5x_lite import config as config_lib
from t5x_lite.config import ConfigError

EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "experiments")
SHIPPED = sorted(f[:-3] for f in os.listdir(EXPERIMENTS) if f.endswith(".py"))


def _experiment(name):
  return os.path.join(EXPERIMENTS, name + ".py")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_experiments_load_and_round_trip(name):
  config = config_lib.load_experiment(_experiment(name))
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
  base = config_lib.load_experiment(_experiment("tiny_python_docs"))
  tied = config_lib.load_experiment(_experiment("ablation_tied_logits"))
  assert tied.model.tie_logits and not base.model.tie_logits
  tied.model.tie_logits = False
  tied.name = base.name
  assert tied == base


def test_overrides_are_parsed_to_field_types():
  config = config_lib.load_experiment(_experiment("tiny_python_docs"), [
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
    config_lib.load_experiment(_experiment("tiny_python_docs"), ["model.dff=10"])
  message = str(error.value)
  assert "model.dff" in message and "model.d_ff" in message and "model.d_model" in message
  with pytest.raises(ConfigError, match="Unknown configuration key 'trian.steps'.*train.steps"):
    config_lib.load_experiment(_experiment("tiny_python_docs"), ["trian.steps=3"])


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
    config_lib.load_experiment(_experiment("tiny_python_docs"), [override])


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


def test_saved_json_rebuilds_the_run(tmp_path):
  config = config_lib.load_experiment(_experiment("ablation_relu_ffn"), ["train.steps=3"])
  path = str(tmp_path / "config.json")
  config_lib.save_json(config, path)
  assert config_lib.load_json(path) == config
  assert dataclasses.asdict(config_lib.load_json(path))["model"]["ffn_activation"] == "relu"


def _write_experiment(tmp_path, *lines):
  """An experiment file: the tiny experiment with `lines` applied to its config `c`."""
  path = tmp_path / "typed.py"
  path.write_text("\n".join([
      "from tiny_python_docs import get_config as base", "def get_config():", "  c = base()",
      *(f"  {line}" for line in lines), "  return c", ""]))
  return str(path)


@pytest.fixture(name="experiments_on_path")
def _experiments_on_path(monkeypatch):
  """Lets an experiment file in tmp_path import the shipped tiny experiment."""
  monkeypatch.syspath_prepend(EXPERIMENTS)


@pytest.mark.usefixtures("experiments_on_path")
@pytest.mark.parametrize("line,expected", [
    ("c.model.d_model = '128'", r"model.d_model = '128' \(str\) in .* must be of type int."),
    ("c.train.steps = 10.5", r"train.steps = 10.5 \(float\) .* type int."),
    ("c.train.steps = True", r"train.steps = True \(bool\) .* type int."),
    ("c.model.scan_layers = 1", r"model.scan_layers = 1 \(int\) .* type bool."),
    ("c.data.pack = 'yes'", r"data.pack = 'yes' \(str\) .* type bool."),
    ("c.optimizer.learning_rate = '1e-3'", r"optimizer.learning_rate = '1e-3' \(str\) .* float."),
    ("c.optimizer.learning_rate = False", r"learning_rate = False \(bool\) .* type float."),
    ("c.model.vocab_size = 64.0", r"model.vocab_size = 64.0 \(float\) .* Optional\[int\]."),
    ("c.mesh.axes = 'data'", r"mesh.axes = 'data' \(str\) .* tuple\[str, ...\]."),
    ("c.mesh.shape = (-1, '1')", r"mesh.shape = \(-1, '1'\) \(tuple\) .* tuple\[int, ...\]."),
    ("c.mesh.rules = (('batch',),)", r"mesh.rules = .* tuple\[tuple\[str, Any\], ...\]."),
    ("c.data.eval_metrics = 'bleu'", r"data.eval_metrics = 'bleu' \(str\)"),
    ("c.train = {'steps': 3}", r"train = \{'steps': 3\} \(dict\) .* type TrainConfig."),
])
def test_wrongly_typed_fields_in_experiment_files(tmp_path, line, expected):
  """A wrong type names the field, the file and the type, instead of a TypeError later on."""
  path = _write_experiment(tmp_path, line)
  with pytest.raises(ConfigError, match=expected) as error:
    config_lib.load_experiment(path)
  assert path in str(error.value)


@pytest.mark.usefixtures("experiments_on_path")
def test_harmless_type_differences_are_converted(tmp_path):
  """Lists for tuples and ints for floats mean the same; the config ends up with the declared types."""
  config = config_lib.load_experiment(_write_experiment(
      tmp_path, "c.mesh.shape = [1, -1]", "c.mesh.rules_preset = 'custom'",
      "c.mesh.rules = [['batch', 'data'], ['mlp', ['model']]]",
      "c.optimizer.learning_rate = 1", "c.data.eval_metrics = ['bleu']", "c.model.vocab_size = None"))
  assert config.mesh.shape == (1, -1) and config.mesh.rules == (("batch", "data"), ("mlp", ("model",)))
  assert config.optimizer.learning_rate == 1.0 and isinstance(config.optimizer.learning_rate, float)
  assert config.data.eval_metrics == ("bleu",) and config.model.vocab_size is None
  assert config_lib.from_dict(json.loads(config_lib.to_json(config))) == config


def test_validate_checks_types_of_configs_built_in_code():
  config = config_lib.ExperimentConfig()
  config.train.batch_size = "8"
  with pytest.raises(ConfigError, match=r"^train.batch_size = '8' \(str\) must be of type int.$"):
    config_lib.validate(config)


def test_a_saved_configuration_with_a_wrong_type_is_a_config_error():
  data = config_lib.to_dict(config_lib.ExperimentConfig())
  data["model"]["d_ff"] = "2048"
  with pytest.raises(ConfigError, match="model.d_ff = '2048' .* in the saved configuration"):
    config_lib.from_dict(data)


def test_misspelled_eval_metric_fails_before_training():
  """Caught by validate, not at the first evaluation eval_every steps into the run."""
  with pytest.raises(ConfigError, match=r"unknown metrics \['blue'\]; choose from .*'bleu'"):
    config_lib.load_experiment(_experiment("finetune_addition"), ["data.eval_metrics=exact_match,blue"])



@pytest.mark.parametrize("overrides,expected", [
    (["mesh.rules=[[batch,data]]"], r"mesh.rules is set but mesh.rules_preset='data_parallel' ignores it"),
    (["mesh.axes=data,data"], r"mesh.axes \('data', 'data'\) names an axis twice"),
    (["train.seed=-1"], r"train.seed=-1 must be >= 0"),
    (["model.vocab_size=0"], r"model.vocab_size=0 must be positive, or None"),
    (["model.dropout_rate=1.0"], r"model.dropout_rate=1.0 must be in \[0, 1\)"),
    (["model.relative_attention_num_buckets=2"], r"at least 4 buckets"),
    (["model.relative_attention_max_distance=16"], r"max distance above half"),
])
def test_values_out_of_range(overrides, expected):
  with pytest.raises(ConfigError, match=expected):
    config_lib.load_experiment(_experiment("tiny_python_docs"), overrides)


@pytest.mark.usefixtures("experiments_on_path")
@pytest.mark.parametrize("line,expected", [
    ("c.model.tie_logit = True", r"Unknown configuration key 'model.tie_logit' in .*typed.py. "
                                 r"Did you mean model.tie_logits"),
    ("c.nmae = 'x'", r"Unknown configuration key 'nmae' in .*typed.py. Did you mean name"),
    ("c.model = c.data", r"model = DataConfig\(...\) \(DataConfig\) in .* must be of type ModelConfig."),
])
def test_misspelt_fields_and_sections_in_experiment_files(tmp_path, line, expected):
  """A field the dataclass does not have would otherwise be set and never read."""
  with pytest.raises(ConfigError, match=expected):
    config_lib.load_experiment(_write_experiment(tmp_path, line))


def test_a_runs_config_json_is_an_experiment(tmp_path):
  config = config_lib.load_experiment(_experiment("ablation_relu_ffn"))
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


def test_sequences_in_python_or_json_spelling():
  config = config_lib.load_experiment(_experiment("tiny_python_docs"), [
      "mesh.axes=[data, model]", "mesh.rules_preset=custom",
      'mesh.rules=(("batch", "data"), ("mlp", None))', "data.eval_metrics=[bleu]"])
  assert config.mesh.axes == ("data", "model") and config.data.eval_metrics == ("bleu",)
  assert config.mesh.rules == (("batch", "data"), ("mlp", None))


def test_dropout_is_t5s_choice_for_the_run_unless_set():
  pretrain = config_lib.load_experiment(_experiment("tiny_python_docs"))
  finetune = config_lib.load_experiment(_experiment("tiny_python_docs"), ["checkpoint.init_from=runs/x"])
  chosen = config_lib.load_experiment(_experiment("tiny_python_docs"),
                                      ["checkpoint.init_from=runs/x", "model.dropout_rate=0.2"])
  assert (pretrain.model.dropout_rate, finetune.model.dropout_rate, chosen.model.dropout_rate) == (
      0.0, 0.1, 0.2)
