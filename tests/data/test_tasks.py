"""Tasks, mixtures and their registry: rates, nesting and the errors a user can make."""

import pytest

from t5x_lite.config import DataConfig
from t5x_lite.data import (
  TOKENIZE,
  DataError,
  DatasetSource,
  Feature,
  GeneratorSource,
  Mixture,
  RateNumExamples,
  Seq2Seq,
  Task,
  get_task,
  register_mixture,
  register_task,
  registered,
)
from t5x_lite.data import tasks as tasks_lib

SIZES = {"t_small": 100, "t_medium": 400, "t_large": 10_000}


def _records(split):
  return iter(())


def _task(name, **kwargs):
  return Task(name, GeneratorSource(_records), **kwargs)


@pytest.fixture(autouse=True)
def three_tasks():
  for name in SIZES:
    register_task(_task(name))


def shares(root):
  return {task.name: round(share, 6) for task, share in tasks_lib.flatten(root, lambda t: SIZES[t.name])}


def test_fixed_rates_are_normalised():
  register_mixture(Mixture("m_fixed", (("t_small", 1), ("t_medium", 3))))
  assert shares("m_fixed") == {"t_small": 0.25, "t_medium": 0.75}
  register_mixture(Mixture("m_default", ("t_small", "t_medium"), default_rate=2.0))
  assert shares("m_default") == {"t_small": 0.5, "t_medium": 0.5}


def test_rates_proportional_to_examples_with_maximum_and_temperature():
  register_mixture(Mixture("m_examples", tuple(SIZES), default_rate=RateNumExamples()))
  assert shares("m_examples") == {k: round(v / sum(SIZES.values()), 6) for k, v in SIZES.items()}
  register_mixture(Mixture("m_capped", tuple(SIZES), default_rate=RateNumExamples(maximum=400)))
  assert shares("m_capped") == {"t_small": 0.111111, "t_medium": 0.444444, "t_large": 0.444444}
  register_mixture(Mixture("m_hot", ("t_small", "t_medium"), default_rate=RateNumExamples(temperature=2.0)))
  assert shares("m_hot") == {"t_small": round(10 / 30, 6), "t_medium": round(20 / 30, 6)}


def test_mixtures_hold_mixtures():
  register_mixture(Mixture("m_inner", (("t_small", 1), ("t_medium", 1))))
  register_mixture(Mixture("m_outer", (("m_inner", 1), ("t_large", 1))))
  assert shares("m_outer") == {"t_small": 0.25, "t_medium": 0.25, "t_large": 0.5}
  # A task reached twice adds up its shares.
  register_mixture(Mixture("m_twice", (("m_inner", 1), ("t_small", 2))))
  assert shares("m_twice") == {"t_small": round(1 / 6 + 2 / 3, 6), "t_medium": round(1 / 6, 6)}
  # Built inline, without registering the members.
  inline = Mixture("m_inline", ((_task("t_inline"), 1.0), (Mixture("m_sub", ("t_small",), 1.0), 1.0)))
  assert shares(inline) == {"t_inline": 0.5, "t_small": 0.5}


def test_registry_lists_names_and_resolves_data_dataset():
  assert {"t_small", "t_medium"} <= set(registered()["tasks"])
  assert get_task("t_small").name == "t_small"
  assert tasks_lib.resolve(DataConfig(dataset="t_small")).name == "t_small"
  default = tasks_lib.resolve(DataConfig(dataset="c4/en:3.1.0", objective="seq2seq",
                                         inputs_feature="question", targets_feature="answer"))
  assert isinstance(default.source, DatasetSource) and default.is_seq2seq
  assert default.preprocessors[0]({"question": "q", "answer": "a"}) == {"inputs": "q", "targets": "a"}
  with pytest.raises(DataError, match="no feature 'question'.*Set data.inputs_feature"):
    default.preprocessors[0]({"text": "x"})


@pytest.mark.parametrize("build, message", [
    (lambda: get_task("t_nope"), r"No task or mixture named 't_nope'. Registered tasks: .*t_small"),
    (lambda: register_mixture(Mixture("m_neg", (("t_small", -1.0),))), "rate of 't_small' is -1.0"),
    (lambda: register_mixture(Mixture("m_nan", (("t_small", float("nan")),))), "rate of 't_small' is nan"),
    (lambda: shares(Mixture("m_zero", (("t_small", 0), ("t_medium", 0.0)))), "every rate is 0"),
    (lambda: register_mixture(Mixture("m_norate", ("t_small",))), "has no rate and the mixture no default_rate"),
    (lambda: register_mixture(Mixture("m_empty", ())), "has no tasks"),
    (lambda: register_mixture(Mixture("m_unknown", (("t_missing", 1.0),))), "No task or mixture named 't_missing'"),
    (lambda: register_mixture(Mixture("m_bad_member", ((42, 1.0),))), "42 is not a task, a mixture or a name"),
    (lambda: register_mixture(Mixture("m_temp", ("t_small",), RateNumExamples(temperature=0))), "temperature > 0"),
    (lambda: register_task(_task("t_tok", preprocessors=(TOKENIZE, TOKENIZE))), "TOKENIZE more than once"),
    (lambda: register_task(_task("t_fn", preprocessors=("lower",))), "is not a function of a record"),
    (lambda: register_task(_task("t_metric", metrics=("blue",))), "unknown metric 'blue'"),
    (lambda: register_task(_task("t_feat", output_features={"inputs": Feature()})), "exactly 'inputs' and 'targets'"),
    (lambda: register_task(_task("t_vocab", output_features={"inputs": Feature("a.model"),
                                                             "targets": Feature("b.model")})),
     "different vocabularies"),
    (lambda: register_task(_task("t_objective", objective="span_corruption")), "objective must be"),
    (lambda: register_task(Task("t_source", "python_docs")), "source must be a DatasetSource"),
    (lambda: register_task(_task("t_small_doc", max_document_tokens=1)), "max_document_tokens=1"),
    (lambda: register_task(_task("m_clash")) and register_mixture(Mixture("m_clash", ("t_small",), 1.0)),
     "already a registered task"),
])
def test_bad_tasks_and_mixtures_fail_with_one_clear_error(build, message):
  with pytest.raises(DataError, match=message):
    build()


def test_a_mixture_that_contains_itself_or_two_tasks_of_one_name():
  loop = Mixture("m_loop", (("t_small", 1.0),))
  object.__setattr__(loop, "tasks", (("t_small", 1.0), (loop, 1.0)))
  with pytest.raises(DataError, match="contains itself"):
    shares(loop)
  twins = Mixture("m_twins", ((_task("t_twin"), 1.0), (_task("t_twin", objective=Seq2Seq()), 1.0)))
  with pytest.raises(DataError, match="two different tasks named 't_twin'"):
    shares(twins)


def test_keep_best_metric_may_name_a_task_metric_or_a_mean():
  from t5x_lite.config import ConfigError, ExperimentConfig, validate
  register_task(_task("t_pairs", objective=Seq2Seq(), metrics=("exact_match", "rank_classification")))
  register_mixture(Mixture("m_best", (("t_small", 1.0), ("t_pairs", 1.0))))
  config = ExperimentConfig()
  config.data.dataset = "m_best"
  config.train.eval_every = config.checkpoint.every_steps
  for name in ("loss", "exact_match", "t_pairs/rank_classification_accuracy", "t_small/loss"):
    config.checkpoint.keep_best_metric = name
    validate(config)
  config.checkpoint.keep_best_metric = "t_small/exact_match"
  with pytest.raises(ConfigError, match="is not a metric evaluation reports here"):
    validate(config)
