"""Tasks and mixtures, seqio's ideas in plain Python: what a run reads, by name.

A Task is a source of text records, preprocessors over them, an objective that turns them into
(inputs, targets) examples, the features' vocabulary, and the metrics its evaluation reports. A
Mixture samples tasks (or other mixtures) at rates. Both are registered by name, so an
experiment's data.dataset, and `--set data.dataset=NAME`, can name them; a data.dataset that is
no registered name is a TFDS dataset read with the experiment's data settings (default_task).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import os
import sys
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from t5x_lite.config import EVAL_METRICS, ROUGE_TYPES, TEXT_METRICS, DataConfig
from t5x_lite.data import objectives
from t5x_lite.data.errors import DataError

Record = dict[str, Any]
# A preprocessor sees one record and returns it changed, or None to drop it. Those listed before
# TOKENIZE see text; those after it see the features as int32 token arrays.
Preprocessor = Callable[[Record], Optional[Record]]
Objective = Union[objectives.SpanCorruption, objectives.PrefixLM, objectives.UL2, objectives.Seq2Seq]
# A metric is a name from TASK_METRICS or fn(predictions, targets) -> {name: value}.
Metric = Union[str, Callable[[Sequence[str], Sequence[str]], Mapping[str, float]]]
# T5's rank classification: each record's "choices" scored as targets, the likeliest compared
# with its "targets" (evaluation.rank_classification).
RANK_CLASSIFICATION = "rank_classification"
TASK_METRICS = (*TEXT_METRICS, RANK_CLASSIFICATION)


class _Tokenize:
  """Where in a task's preprocessors the features become token arrays (once, at most)."""

  def __repr__(self) -> str:
    return "TOKENIZE"


TOKENIZE = _Tokenize()


@dataclasses.dataclass(frozen=True)
class DatasetSource:
  """A TFDS dataset stored as array_record under data_dir: the built-in corpora, what
  `t5x-lite import-text` wrote, or `tfds build ... --file_format=array_record`."""
  name: str
  data_dir: Optional[str] = None  # None: the experiment's data.data_dir

  def open(self, split: str, data_dir: Optional[str]):
    from t5x_lite.data import sources  # pylint: disable=import-outside-toplevel  (TFDS on first use)
    return sources.open_source(self.name, split, self.data_dir or data_dir)

  def prepare(self, data_dir: Optional[str]) -> None:
    from t5x_lite.data import sources  # pylint: disable=import-outside-toplevel
    sources.prepare_dataset(self.name, self.data_dir or data_dir)


@dataclasses.dataclass(frozen=True)
class GeneratorSource:
  """Records from a Python function: records(split) yields dicts of text. Read once into memory
  per split (the pipeline needs random access), so keep it to what fits."""
  records: Callable[[str], Iterable[Record]]
  description: str = "a Python generator"

  def open(self, split: str, data_dir: Optional[str]):
    del data_dir
    from t5x_lite.data.sources import RecordSource  # pylint: disable=import-outside-toplevel
    return RecordSource([dict(r) for r in self.records(split)], f"{self.description} {split}")

  def prepare(self, data_dir: Optional[str]) -> None:
    del data_dir


Source = Union[DatasetSource, GeneratorSource]


@dataclasses.dataclass(frozen=True)
class Feature:
  """An output feature: its vocabulary (a SentencePiece .model path or "bytes"; None: the
  experiment's data.vocabulary) and whether its examples end with EOS."""
  vocabulary: Optional[str] = None
  add_eos: bool = True


@dataclasses.dataclass(frozen=True)
class Task:
  """A named source, its preprocessors, an objective, output features and metrics.

  Pretraining objectives (SpanCorruption, PrefixLM, UL2) read the feature `text_feature`;
  Seq2Seq reads "inputs" and "targets" (rename fields with a preprocessor).
  """
  name: str
  source: Source
  objective: Objective = dataclasses.field(default_factory=objectives.SpanCorruption)
  preprocessors: tuple = ()  # of Preprocessor, with TOKENIZE at most once
  output_features: Mapping[str, Feature] = dataclasses.field(
      default_factory=lambda: {"inputs": Feature(), "targets": Feature()})
  metrics: tuple = ("exact_match",)  # of Metric; seq2seq tasks decode and score them
  text_feature: str = "text"
  # T5's stream for pretraining objectives: a random chunk of at most max_document_tokens of each
  # document, documents concatenated, the stream cut into full-length examples. False: each
  # document is cut on its own and its short last piece packed with others.
  concatenate_documents: bool = True
  max_document_tokens: int = 65536

  @property
  def is_seq2seq(self) -> bool:
    return isinstance(self.objective, objectives.Seq2Seq)

  @property
  def text_preprocessors(self) -> tuple:
    """The preprocessors before TOKENIZE (all of them without one): they see text."""
    steps = tuple(self.preprocessors)
    return steps[:steps.index(TOKENIZE)] if TOKENIZE in steps else steps

  @property
  def token_preprocessors(self) -> tuple:
    """The preprocessors after TOKENIZE: they see token arrays."""
    steps = tuple(self.preprocessors)
    return steps[steps.index(TOKENIZE) + 1:] if TOKENIZE in steps else ()

  @property
  def features(self) -> tuple[str, ...]:
    """The features the objective reads, once the preprocessors have run."""
    return ("inputs", "targets") if self.is_seq2seq else (self.text_feature,)

  @property
  def vocabulary(self) -> Optional[str]:
    """The one vocabulary of the output features (None: the experiment's)."""
    return self.output_features["inputs"].vocabulary


@dataclasses.dataclass(frozen=True)
class RateNumExamples:
  """T5's rate_num_examples: a task's rate is scale * min(examples, maximum) ** (1 / temperature),
  from the size of its training split."""
  maximum: Optional[int] = None
  temperature: float = 1.0
  scale: float = 1.0


Rate = Union[float, RateNumExamples]


@dataclasses.dataclass(frozen=True)
class Mixture:
  """Tasks and mixtures sampled at rates: `tasks` holds names, Tasks or Mixtures, each alone
  (it gets default_rate) or as (member, rate). A member mixture's own members share its rate
  in their proportions."""
  name: str
  tasks: tuple
  default_rate: Optional[Rate] = None


_TASKS: dict[str, Task] = {}
_MIXTURES: dict[str, Mixture] = {}


def register_task(task: Task) -> Task:
  """Makes `task` known by its name (replacing a task of that name); returns it."""
  _check_task(task)
  if task.name in _MIXTURES:
    raise DataError(f"{task.name!r} is already a registered mixture; give the task another name.")
  _TASKS[task.name] = task
  return task


def register_mixture(mixture: Mixture) -> Mixture:
  """Makes `mixture` known by its name (replacing one of that name); returns it."""
  if mixture.name in _TASKS:
    raise DataError(f"{mixture.name!r} is already a registered task; give the mixture another name.")
  _members(mixture)  # Bad members and rates fail here, where the user wrote them.
  _MIXTURES[mixture.name] = mixture
  return mixture


def registered() -> dict[str, list[str]]:
  """The registered names: {"tasks": [...], "mixtures": [...]}."""
  return {"tasks": sorted(_TASKS), "mixtures": sorted(_MIXTURES)}


def is_registered(name: str) -> bool:
  return name in _TASKS or name in _MIXTURES


def get(name: str) -> Union[Task, Mixture]:
  """The registered task or mixture `name`; a DataError listing the registered names if none."""
  found = _TASKS.get(name) or _MIXTURES.get(name)
  if found is None:
    names = registered()
    raise DataError(
        f"No task or mixture named {name!r}. Registered tasks: {', '.join(names['tasks']) or 'none'}; "
        f"mixtures: {', '.join(names['mixtures']) or 'none'}. Register it (t5x_lite.data."
        "register_task / register_mixture) in the experiment file, or check the name.")
  return found


def _check_task(task: Task) -> None:
  if not isinstance(task.source, (DatasetSource, GeneratorSource)):
    raise DataError(f"Task {task.name!r}: source must be a DatasetSource or GeneratorSource, "
                    f"not {type(task.source).__name__}.")
  if not isinstance(task.objective, (objectives.SpanCorruption, objectives.PrefixLM,
                                     objectives.UL2, objectives.Seq2Seq)):
    raise DataError(f"Task {task.name!r}: objective must be SpanCorruption, PrefixLM, UL2 or "
                    f"Seq2Seq (t5x_lite.data.objectives), not {task.objective!r}.")
  if sum(p is TOKENIZE for p in task.preprocessors) > 1:
    raise DataError(f"Task {task.name!r} lists TOKENIZE more than once among its preprocessors.")
  for step in task.preprocessors:
    if step is not TOKENIZE and not callable(step):
      raise DataError(f"Task {task.name!r}: preprocessor {step!r} is not a function of a record.")
  if set(task.output_features) != {"inputs", "targets"}:
    raise DataError(f"Task {task.name!r}: output_features must name exactly 'inputs' and "
                    f"'targets', got {sorted(task.output_features)}.")
  vocabularies = {f.vocabulary for f in task.output_features.values()}
  if len(vocabularies) > 1:
    raise DataError(f"Task {task.name!r}: inputs and targets have different vocabularies "
                    f"{sorted(map(str, vocabularies))}; the model shares one embedding.")
  for metric in task.metrics:
    if isinstance(metric, str) and metric not in TASK_METRICS:
      raise DataError(f"Task {task.name!r}: unknown metric {metric!r}; name one of "
                      f"{list(TASK_METRICS)} or pass a function(predictions, targets) -> dict.")
  if RANK_CLASSIFICATION in task.metrics and not task.is_seq2seq:
    raise DataError(f"Task {task.name!r}: rank_classification scores choices of targets, so the "
                    "task needs the Seq2Seq objective.")
  if not 2 <= task.max_document_tokens:
    raise DataError(f"Task {task.name!r}: max_document_tokens={task.max_document_tokens} must be >= 2.")


def _member_rate(member: Any, rate: Optional[Rate], mixture: Mixture) -> Rate:
  rate = mixture.default_rate if rate is None else rate
  if rate is None:
    raise DataError(f"Mixture {mixture.name!r}: {_name(member)!r} has no rate and the mixture no "
                    "default_rate; give (member, rate) or default_rate.")
  if isinstance(rate, RateNumExamples):
    if rate.temperature <= 0 or rate.scale <= 0 or (rate.maximum is not None and rate.maximum < 1):
      raise DataError(f"Mixture {mixture.name!r}: {rate} needs temperature > 0, scale > 0 and "
                      "maximum >= 1 (or None).")
    return rate
  if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate < 0:
    raise DataError(f"Mixture {mixture.name!r}: the rate of {_name(member)!r} is {rate!r}; rates "
                    "are numbers >= 0 or RateNumExamples(...).")
  return float(rate)


def _name(member: Any) -> str:
  return member if isinstance(member, str) else getattr(member, "name", repr(member))


def _members(mixture: Mixture) -> list[tuple[Union[Task, Mixture], Rate]]:
  out = []
  if not mixture.tasks:
    raise DataError(f"Mixture {mixture.name!r} has no tasks.")
  for entry in mixture.tasks:
    member, rate = entry if isinstance(entry, tuple) else (entry, None)
    if isinstance(member, str):
      member = get(member)
    elif isinstance(member, Task):
      _check_task(member)
    elif not isinstance(member, Mixture):
      raise DataError(f"Mixture {mixture.name!r}: {member!r} is not a task, a mixture or a name.")
    out.append((member, _member_rate(member, rate, mixture)))
  return out


def flatten(root: Union[str, Task, Mixture], num_examples: Callable[[Task], int],
            _seen: tuple[str, ...] = ()) -> list[tuple[Task, float]]:
  """The tasks under `root` with their shares of the examples (summing to 1).

  num_examples(task) gives the size of a task's training split, for RateNumExamples rates.
  """
  node = get(root) if isinstance(root, str) else root
  if isinstance(node, Task):
    _check_task(node)
    return [(node, 1.0)]
  if node.name in _seen:
    raise DataError(f"Mixture {node.name!r} contains itself (through {' -> '.join(_seen)}).")
  weighted = []
  for member, rate in _members(node):
    if isinstance(rate, RateNumExamples):
      size = num_examples(member) if isinstance(member, Task) else sum(
          num_examples(task) for task, _ in flatten(member, num_examples, (*_seen, node.name)))
      if rate.maximum is not None:
        size = min(size, rate.maximum)
      rate = rate.scale * float(size) ** (1.0 / rate.temperature)
    weighted.append((member, rate))
  total = sum(rate for _, rate in weighted)
  if total <= 0:
    raise DataError(f"Mixture {node.name!r}: every rate is 0 ({', '.join(_name(m) for m, _ in weighted)}); "
                    "give at least one member a positive rate.")
  shares: dict[str, tuple[Task, float]] = {}
  for member, rate in weighted:
    for task, share in flatten(member, num_examples, (*_seen, node.name)):
      previous = shares.get(task.name, (task, 0.0))[1]
      if task.name in shares and shares[task.name][0] != task:
        raise DataError(f"Mixture {node.name!r} holds two different tasks named {task.name!r}.")
      shares[task.name] = (task, previous + share * rate / total)
  return [entry for entry in shares.values() if entry[1] > 0]


def member_tasks(root: Union[str, Task, Mixture], _seen: tuple[str, ...] = ()) -> list[Task]:
  """The tasks under `root`, each once, in order (no rates computed)."""
  node = get(root) if isinstance(root, str) else root
  if isinstance(node, Task):
    return [node]
  if node.name in _seen:
    raise DataError(f"Mixture {node.name!r} contains itself (through {' -> '.join(_seen)}).")
  found: dict[str, Task] = {}
  for member, _ in _members(node):
    for task in member_tasks(member, (*_seen, node.name)):
      found.setdefault(task.name, task)
  return list(found.values())


def _task_metric_names(task: Task) -> Optional[list[str]]:
  names = list(EVAL_METRICS)
  if task.is_seq2seq:
    names.append("exact_match")
    names += ["bleu"] if "bleu" in task.metrics else []
    names += list(ROUGE_TYPES) if "rouge" in task.metrics else []
    names += ["rank_classification_accuracy"] if RANK_CLASSIFICATION in task.metrics else []
    if any(callable(metric) for metric in task.metrics):
      return None  # Its own functions name their metrics when they run.
  return names


def metric_names(data_config: DataConfig) -> Optional[list[str]]:
  """What an evaluation of data.dataset reports (checkpoint.keep_best_metric may name one):
  a task's metrics, or for a mixture every task's as TASK/METRIC and their means; None where a
  task's metric functions make them unknown until they run."""
  per_task = {task.name: _task_metric_names(task) for task in member_tasks(resolve(data_config))}
  if any(names is None for names in per_task.values()):
    return None
  if len(per_task) == 1:
    return next(iter(per_task.values()))
  means = dict.fromkeys(name for names in per_task.values() for name in names)
  return list(means) + [f"{task}/{name}" for task, names in per_task.items() for name in names]


def default_task(data_config: DataConfig) -> Task:
  """The task an experiment reads when data.dataset is no registered name: that TFDS dataset,
  data.objective with data's noise settings, data.text_feature (or inputs/targets features for
  seq2seq) and data.eval_metrics."""
  if data_config.objective == "seq2seq":
    names = (data_config.inputs_feature, data_config.targets_feature)
    preprocessors: tuple = ()
    if names != ("inputs", "targets"):
      preprocessors = (_RenameFeatures(names),)
    return Task(data_config.dataset, DatasetSource(data_config.dataset), objectives.Seq2Seq(),
                preprocessors=preprocessors, metrics=tuple(data_config.eval_metrics),
                text_feature=data_config.text_feature)
  if data_config.objective == "span_corruption":
    objective: Objective = objectives.SpanCorruption(
        data_config.noise_density, data_config.mean_noise_span_length)
  else:
    objective = objectives.PRETRAINING_OBJECTIVES[data_config.objective]()
  return Task(data_config.dataset, DatasetSource(data_config.dataset), objective,
              metrics=tuple(data_config.eval_metrics), text_feature=data_config.text_feature,
              concatenate_documents=data_config.concatenate_documents,
              max_document_tokens=data_config.max_document_tokens)


@dataclasses.dataclass(frozen=True)
class _RenameFeatures:
  """Reads a dataset's (inputs, targets) features under the names the seq2seq objective reads."""
  names: tuple[str, str]

  def __call__(self, record: Record) -> Record:
    for name, setting in zip(self.names, ("data.inputs_feature", "data.targets_feature")):
      if name not in record:
        raise DataError(f"The dataset has no feature {name!r}; its features are: "
                        f"{', '.join(sorted(record))}. Set {setting} to one of them.")
    return {"inputs": record[self.names[0]], "targets": record[self.names[1]]}


_IMPORTED: dict[str, Any] = {}


def import_tasks_module(name_or_path: str) -> None:
  """Imports (once) the file or module data.tasks_module names, which registers tasks."""
  if name_or_path in _IMPORTED:
    return
  try:
    if name_or_path.endswith(".py"):
      if not os.path.isfile(name_or_path):
        raise DataError(f"data.tasks_module={name_or_path!r} does not exist; it names the file that "
                        "registers data.dataset's task or mixture (the experiment file).")
      module_name = "_t5x_lite_tasks_" + os.path.splitext(os.path.basename(name_or_path))[0]
      spec = importlib.util.spec_from_file_location(module_name, name_or_path)
      module = importlib.util.module_from_spec(spec)
      sys.path.insert(0, os.path.dirname(name_or_path))
      try:
        spec.loader.exec_module(module)
      finally:
        sys.path.remove(os.path.dirname(name_or_path))
    else:
      module = importlib.import_module(name_or_path)
  except DataError:
    raise
  except Exception as e:  # The user's file: say so, with its error.
    raise DataError(f"data.tasks_module={name_or_path!r} failed to import: {type(e).__name__}: {e}") from e
  _IMPORTED[name_or_path] = module


def resolve(data_config: DataConfig) -> Union[Task, Mixture]:
  """What data.dataset names: a registered task or mixture (registered by data.tasks_module if
  it is not yet), else the default task, which reads the TFDS dataset of that name."""
  if not is_registered(data_config.dataset) and data_config.tasks_module:
    import_tasks_module(data_config.tasks_module)
  if is_registered(data_config.dataset):
    return get(data_config.dataset)
  return default_task(data_config)
