"""validate(): field types, choices, numeric ranges, and the checks between fields."""

import json
import typing

import pytest
from config_helpers import experiment, write_experiment

from t5x_lite import config as config_lib
from t5x_lite.config import ConfigError
from t5x_lite.config.overrides import field_types
from t5x_lite.config.validation import RANGES, Range


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
  path = write_experiment(tmp_path, line)
  with pytest.raises(ConfigError, match=expected) as error:
    config_lib.load_experiment(path)
  assert path in str(error.value)


@pytest.mark.usefixtures("experiments_on_path")
def test_harmless_type_differences_are_converted(tmp_path):
  """Lists for tuples and ints for floats mean the same; the config ends up with the declared types."""
  config = config_lib.load_experiment(write_experiment(
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


def test_misspelled_eval_metric_fails_before_training():
  """Caught by validate, not at the first evaluation eval_every steps into the run."""
  with pytest.raises(ConfigError, match=r"unknown metrics \['blue'\]; choose from .*'bleu'"):
    config_lib.load_experiment(experiment("finetune_addition"), ["data.eval_metrics=exact_match,blue"])


@pytest.mark.parametrize("overrides,expected", [
    (["mesh.rules=[[batch,data]]"], r"mesh.rules is set but mesh.rules_preset='data_parallel' ignores it"),
    (["mesh.axes=data,data"], r"mesh.axes \('data', 'data'\) names an axis twice"),
    (["train.seed=-1"], r"train.seed=-1 must be >= 0"),
    (["model.vocab_size=0"], r"model.vocab_size=0 must be positive, or None"),
    (["model.dropout_rate=1.0"], r"model.dropout_rate=1.0 must be in \[0, 1\)"),
    (["model.relative_attention_num_buckets=2"], r"at least 4 buckets"),
    (["model.relative_attention_max_distance=16"], r"max distance above half"),
    (["model.remat_policy=compiler", "model.scan_layers=true"],
     r'model.remat_policy="compiler" needs model.scan_layers=false: a scanned stack keeps'),
    (["model.architecture=decoder_only"],
     r"model.architecture='decoder_only' has no encoder, but model.num_encoder_layers=2: set "
     r"model.num_encoder_layers=0 \(its one stack has model.num_decoder_layers=2 layers\)."),
    (["model.architecture=prefix_lm"], r"model.architecture='prefix_lm' is not a valid choice"),
])
def test_values_out_of_range(overrides, expected):
  with pytest.raises(ConfigError, match=expected):
    config_lib.load_experiment(experiment("tiny_python_docs"), overrides)


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
    config_lib.load_experiment(write_experiment(tmp_path, line))


def test_dropout_is_t5s_choice_for_the_run_unless_set():
  pretrain = config_lib.load_experiment(experiment("tiny_python_docs"))
  finetune = config_lib.load_experiment(experiment("tiny_python_docs"), ["checkpoint.init_from=runs/x"])
  chosen = config_lib.load_experiment(experiment("tiny_python_docs"),
                                      ["checkpoint.init_from=runs/x", "model.dropout_rate=0.2"])
  assert (pretrain.model.dropout_rate, finetune.model.dropout_rate, chosen.model.dropout_rate) == (
      0.0, 0.1, 0.2)


# ----------------------------------------------------------------------------
# Numeric ranges
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("override,expected", [
    ("model.d_model=0", "model.d_model=0 must be positive."),
    ("model.num_encoder_layers=0", "model.num_encoder_layers=0 must be positive."),
    ("model.num_decoder_layers=-1", "model.num_decoder_layers=-1 must be positive."),
    ("model.norm_eps=0", "model.norm_eps=0.0 must be positive."),
    ("model.relative_attention_num_buckets=0",
     "model.relative_attention_num_buckets=0 must be positive."),
    ("model.dropout_rate=-0.1", "model.dropout_rate=-0.1 must be in [0, 1)."),
    ("data.vocab_train_size=0", "data.vocab_train_size=0 must be positive."),
    ("data.vocab_extra_ids=-1", "data.vocab_extra_ids=-1 must be >= 0."),
    ("data.noise_density=0", "data.noise_density=0.0 must be in (0, 1)."),
    ("data.noise_density=1", "data.noise_density=1.0 must be in (0, 1)."),
    ("data.mean_noise_span_length=0", "data.mean_noise_span_length=0.0 must be >= 1."),
    ("data.num_workers=-2", "data.num_workers=-2 must be >= 0, or -1 for one per CPU core."),
    ("data.prefetch=-1", "data.prefetch=-1 must be >= 0."),
    ("data.shards=-1", "data.shards=-1 must be >= 0, where 0 means one per process."),
    ("data.max_eval_examples=0",
     "data.max_eval_examples=0 must be positive, or None for the whole eval split."),
    ("optimizer.learning_rate=0", "optimizer.learning_rate=0.0 must be positive."),
    ("optimizer.learning_rate=nan", "optimizer.learning_rate=nan must be positive."),
    ("optimizer.warmup_steps=-1", "optimizer.warmup_steps=-1 must be >= 0."),
    ("optimizer.final_learning_rate_fraction=1.5",
     "optimizer.final_learning_rate_fraction=1.5 must be in [0, 1]."),
    ("optimizer.grad_clip_norm=-1",
     "optimizer.grad_clip_norm=-1.0 must be >= 0, where 0 turns clipping off."),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1 must be >= 0."),
    ("optimizer.decay_rate=-0.8", "optimizer.decay_rate=-0.8 must be in [0, 1]."),
    ("optimizer.clipping_threshold=-1",
     "optimizer.clipping_threshold=-1.0 must be >= 0, where 0 turns clipping off."),
    ("optimizer.min_dim_size_to_factor=-1", "optimizer.min_dim_size_to_factor=-1 must be >= 0."),
    ("optimizer.epsilon1=0", "optimizer.epsilon1=0.0 must be positive."),
    ("optimizer.epsilon2=-1e-3", "optimizer.epsilon2=-0.001 must be positive."),
    ("optimizer.b1=1", "optimizer.b1=1.0 must be in [0, 1)."),
    ("optimizer.b2=-0.5", "optimizer.b2=-0.5 must be in [0, 1)."),
    ("optimizer.eps=0", "optimizer.eps=0.0 must be positive."),
    ("train.log_every=0", "train.log_every=0 must be positive."),
    ("train.z_loss=-1e-4", "train.z_loss=-0.0001 must be >= 0."),
    ("train.label_smoothing=1", "train.label_smoothing=1.0 must be in [0, 1)."),
    ("train.peak_flops_per_device=-1",
     "train.peak_flops_per_device=-1.0 must be >= 0, where 0 means known devices only."),
    ("mesh.shape=[0,1]",
     "mesh.shape=(0, 1) must hold values >= 1, or -1 for all remaining devices."),
    ("mesh.shape=[-2,1]",
     "mesh.shape=(-2, 1) must hold values >= 1, or -1 for all remaining devices."),
    ("checkpoint.every_steps=0", "checkpoint.every_steps=0 must be positive."),
    ("checkpoint.keep=-1", "checkpoint.keep=-1 must be >= 0, where 0 keeps every checkpoint."),
    ("checkpoint.init_from_step=-1",
     "checkpoint.init_from_step=-1 must be >= 0, or None for the latest step."),
])
def test_numbers_outside_their_range_name_key_value_and_range(override, expected):
  with pytest.raises(ConfigError) as error:
    config_lib.load_experiment(experiment("tiny_python_docs"), [override])
  assert str(error.value) == expected


@pytest.mark.parametrize("override", [
    "data.num_workers=-1", "data.num_workers=0", "data.prefetch=0", "data.shards=0",
    "data.max_eval_examples=None", "data.mean_noise_span_length=1", "data.vocab_extra_ids=0",
    "optimizer.warmup_steps=0", "optimizer.grad_clip_norm=0", "optimizer.clipping_threshold=0",
    "optimizer.final_learning_rate_fraction=1", "optimizer.b1=0", "optimizer.decay_rate=1",
    "optimizer.min_dim_size_to_factor=0", "train.peak_flops_per_device=0", "train.seed=0",
    "train.z_loss=0", "checkpoint.keep=0", "checkpoint.init_from_step=0",
    "checkpoint.init_from_step=None", "model.vocab_size=None", "mesh.shape=[-1,1]",
])
def test_values_that_mean_something_stay_valid(override):
  """0 for off or "all", -1 for "the rest" and None for unset keep their meanings."""
  config_lib.load_experiment(experiment("tiny_python_docs"), [override])


def test_decoder_only_takes_no_encoder_layers():
  """0 encoder layers is the decoder-only model's setting, and only its."""
  config = config_lib.load_experiment(
      experiment("tiny_python_docs"), ["model.architecture=decoder_only", "model.num_encoder_layers=0"])
  assert (config.model.architecture, config.model.num_encoder_layers) == ("decoder_only", 0)


def _numeric(annotation) -> bool:
  """Whether a field of this type holds ints or floats (Optional and tuples included)."""
  if annotation in (int, float):
    return True
  return any(_numeric(a) for a in typing.get_args(annotation) if a is not Ellipsis)


def test_every_numeric_field_has_a_range():
  """A field added without a range would accept any value; loss_chunk_size has its own check."""
  config = config_lib.ExperimentConfig()
  numeric = set()
  for key in config_lib.all_keys(config):
    section, _, name = key.rpartition(".")
    owner = getattr(config, section) if section else config
    if _numeric(field_types(type(owner))[name]):
      numeric.add(key)
  assert numeric - set(RANGES) == {"train.loss_chunk_size"}
  assert set(RANGES) <= numeric


def test_every_default_is_in_range():
  config = config_lib.validate(config_lib.ExperimentConfig())
  for key, allowed in RANGES.items():
    value = config_lib.get_field(config, key)
    assert all(v in allowed for v in (value if isinstance(value, tuple) else (value,))), key


@pytest.mark.parametrize("allowed,text", [
    (Range(0, low_open=True), "positive"),
    (Range(1), ">= 1"),
    (Range(0, 1, high_open=True), "in [0, 1)"),
    (Range(0, 1, low_open=True, high_open=True), "in (0, 1)"),
    (Range(0, also=(None,), note="or None for all"), ">= 0, or None for all"),
])
def test_range_text(allowed, text):
  assert str(allowed) == text
