"""The input pipeline: documents -> preprocessed tokens -> examples -> mixed -> packed batches.

grain runs the reading: blocks of documents read and tokenized (in worker processes with
data.worker_processes) and the prefetch thread that makes batches ahead. Written here, in one
stateful iterator per shard, is what grain has no form for: the order of each task's documents
(DocumentOrder says why), T5's stream (documents concatenated and cut into full-length
examples), sampling tasks at rates, and packing. Its state is a stream position, not grain's
iterator state: grain's depends on the worker count, and a run must resume on another machine.

Determinism and resumption. A task's documents come in a new permutation each epoch (seeded by
the run's seed and the task), shard s of S taking positions s, s+S, ... of the epochs in turn. Example
k of a shard's task stream uses the seed (seed, task, shard, k) in T5's stream, or (seed, epoch,
document, k) per document; the mixture's choice for draw i is a pure function of (seed, shard, i).
So the position of the first example not yet in a batch, per task (document position, token
offset, example number), with the draw count, is the whole state: get_state() after k batches
and set_state() later continue with exactly batch k + 1, packing included.

Processes. A training loader (num_epochs=None) is one shard: its batches have batch_size // S rows
and the global batch is the concatenation of the S shards (ShardedLoader). A finite loader
(evaluation, one task) builds the whole global batch on every process and keeps its own rows, so
every process yields the same number of batches; its last batch is padded with all-zero rows
(segment id 0, loss weight 0: decoder_loss_weights is the mask).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import sys
import zlib
from typing import Any, Iterator, Optional, Sequence, Union

import grain
import numpy as np
from grain.experimental import index_shuffle

from t5x_lite.config import DataConfig, ExperimentConfig
from t5x_lite.data import sources
from t5x_lite.data import tasks as tasks_lib
from t5x_lite.data.errors import DataError
from t5x_lite.data.objectives import ExampleMaker, document_examples, seq2seq
from t5x_lite.data.packing import Packer
from t5x_lite.data.vocabulary import (
  BYTES,
  EOS_ID,
  Vocabulary,
  get_vocabulary,
  vocabulary_cache_path,
  vocabulary_digest,
)
from t5x_lite.errors import UserError

Batch = dict[str, np.ndarray]
Tokens = tuple[np.ndarray, ...]
_BLOCK = 64  # Documents read and tokenized together.
_STREAM_KEYS = ("position", "offset", "example")


def _threads(num_workers: int) -> int:
  """data.num_workers as a thread count: -1 is one per CPU core."""
  return os.cpu_count() or 1 if num_workers < 0 else num_workers


def _task_id(name: str) -> int:
  return zlib.crc32(name.encode("utf-8"))


def _absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; a library user's program may not have parsed any."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def text_records(task: tasks_lib.Task, records: list[dict]) -> list[Optional[dict]]:
  """The records after the task's text preprocessors (those before TOKENIZE); None: dropped."""
  for fn in task.text_preprocessors:
    records = [None if r is None else fn(r) for r in records]
  return records


@dataclasses.dataclass
class _ReadBlock:
  """grain map: block b of a shard's stream -> its documents' indices and each one's features as
  token arrays (None for a document a preprocessor dropped). Runs where the loader makes its
  batches, or in grain's worker processes."""
  task: tasks_lib.Task
  source: Any
  vocabulary: Vocabulary
  order: "DocumentOrder"
  positions: int  # Of the shard's stream (sys.maxsize: endless).
  encode_threads: int = 1  # SentencePiece's own threads, which run without the GIL.

  def __call__(self, block: int) -> tuple[np.ndarray, list[Optional[Tokens]]]:
    """Block `block` of the shard's stream: (its documents' indices, their tokens)."""
    indices = self.order.documents(np.arange(block * _BLOCK, min((block + 1) * _BLOCK, self.positions)))
    return indices, self._tokens(indices)

  def _tokens(self, indices: np.ndarray) -> list[Optional[Tokens]]:
    records = text_records(self.task, self.source.records(indices.tolist()))
    kept = [r for r in records if r is not None]
    for record in kept:
      self._check_features(record)
    columns = [self.vocabulary.encode_batch([r[f] for r in kept], self.encode_threads)
               for f in self.task.features]
    for record, tokens in zip(kept, zip(*columns)):
      record.update(zip(self.task.features, tokens))
    out: list[Optional[Tokens]] = []
    for record in records:
      for fn in self.task.token_preprocessors:
        record = None if record is None else fn(record)
      out.append(None if record is None else tuple(
          np.asarray(record[f], np.int32) for f in self.task.features))
    return out

  def _check_features(self, record: dict) -> None:
    missing = [f for f in self.task.features if f not in record]
    if missing:
      raise DataError(
          f"Task {self.task.name!r}: its records have no feature {missing[0]!r} for its "
          f"{type(self.task.objective).__name__} objective (they have: {', '.join(sorted(record))}). "
          + ("Set data.text_feature (a Task's text_feature) to one of them, or add a preprocessor "
             "that makes it." if not self.task.is_seq2seq else
             "Add a preprocessor that makes 'inputs' and 'targets' from them."))


@dataclasses.dataclass(frozen=True)
class DocumentOrder:
  """Which document is at each position of a shard's stream: shard s of S takes positions
  s, s+S, ... of the epochs end to end, each epoch a permutation of the documents.

  Written here rather than grain's MapDataset.shuffle: grain's index_shuffle costs ~180 us an
  index on datasets of a few hundred documents (~6 us on large ones), so small datasets get a
  NumPy permutation per epoch (one at a time, cached), and large ones grain's index_shuffle,
  which needs no memory per document.
  """
  num_documents: int
  seed: int
  shard: int
  shards: int
  shuffle: bool
  _PERMUTED = 1 << 22  # Up to this many documents, a permutation array (32 MiB) per epoch.

  def documents(self, positions: np.ndarray) -> np.ndarray:
    epochs, within = np.divmod(self.shard + positions * self.shards, self.num_documents)
    if not self.shuffle:
      return within
    out = np.empty_like(within)
    for epoch in np.unique(epochs).tolist():
      rows = epochs == epoch
      if self.num_documents <= self._PERMUTED:
        out[rows] = _epoch_permutation(self.num_documents, self.seed, epoch)[within[rows]]
      else:
        out[rows] = [index_shuffle(int(i), max_index=self.num_documents - 1,
                                   seed=(self.seed + epoch) % 2**32, rounds=4) for i in within[rows]]
    return out


@functools.lru_cache(maxsize=8)  # The epochs being read by a few shards and tasks.
def _epoch_permutation(num_documents: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng((seed, epoch)).permutation(num_documents)


@dataclasses.dataclass
class PreparedTask:
  """A task opened for one split: its source, its example maker and how to read it."""
  task: tasks_lib.Task
  source: Any
  vocabulary: Vocabulary
  maker: Optional[ExampleMaker]  # None for seq2seq
  inputs_length: int
  targets_length: int

  @property
  def num_documents(self) -> int:
    return len(self.source)

  def check_first_record(self) -> None:
    """Runs the task's preprocessors on its first records, so a missing feature fails before work."""
    first = DocumentOrder(len(self.source), seed=0, shard=0, shards=1, shuffle=False)
    _ReadBlock(self.task, self.source, self.vocabulary, first, len(self.source))(0)


@contextlib.contextmanager
def _naming_registered(task: tasks_lib.Task, data_config: DataConfig):
  """A data.dataset that is no dataset may be a misspelt task or mixture: its error says which
  names are registered."""
  try:
    yield
  except DataError as e:
    names = tasks_lib.registered()
    if task.name != data_config.dataset or tasks_lib.is_registered(task.name) or not any(names.values()):
      raise
    raise DataError(f"{e} Nor is {task.name!r} a registered task or mixture: those are "
                    f"{', '.join(names['tasks'] + names['mixtures'])}.") from None


def prepare_task(task: tasks_lib.Task, data_config: DataConfig, vocabulary: Vocabulary,
                 split: str) -> PreparedTask:
  """Opens `split` of the task's source and builds its objective for the configured lengths."""
  with _naming_registered(task, data_config):
    source = task.source.open(split, data_config.data_dir)
  if len(source) == 0:
    raise DataError(f"Task {task.name!r}: {source.description} has no records; check the split name.")
  maker = None if task.is_seq2seq else task.objective.build(
      data_config.inputs_length, data_config.targets_length, vocabulary)
  return PreparedTask(task, source, vocabulary, maker, data_config.inputs_length,
                      data_config.targets_length)


def _chunk_start(length: int, max_tokens: int, seed: Sequence[int]) -> int:
  """T5's select_random_chunk: one of the document's max_tokens-long segments, at random."""
  segments = -(-length // max_tokens)
  if segments <= 1:
    return 0
  return int(np.random.default_rng(seed).integers(segments)) * max_tokens


class TaskStream:
  """One shard of one task as examples, from a position: yields (inputs, targets, state after it),
  the state a stream restarted from continues with the example after this one.

  State: "position" (the document, counted in this shard's stream over all epochs), "offset"
  (tokens of it already used; of its chosen chunk in T5's stream) and "example" (examples made:
  of the stream in T5's mode, of the document per document).
  """

  def __init__(self, prepared: PreparedTask, *, seed: int, shard: int, shards: int, shuffle: bool,
               num_epochs: Optional[int], read_threads: int, worker_processes: int,
               state: Optional[dict] = None):
    self.prepared = prepared
    self.seed, self.shard, self.shards = seed, shard, shards
    self.num_epochs = num_epochs
    self.state = dict(state or dict.fromkeys(_STREAM_KEYS, 0))
    n = prepared.num_documents
    self._order = DocumentOrder(n, (seed * 1_000_003 + _task_id(prepared.task.name)) % 2**32,
                                shard, shards, shuffle)
    # This shard's positions, in blocks; a finite stream ends with the epochs' last document.
    positions = sys.maxsize if num_epochs is None else -(-(n * num_epochs - shard) // shards)
    read = _ReadBlock(prepared.task, prepared.source, prepared.vocabulary, self._order, positions,
                      max(1, read_threads))
    start = self.state["position"] // _BLOCK
    blocks = grain.MapDataset.range(start, -(-positions // _BLOCK)).map(read)
    # Blocks are read where they are needed (num_threads=0): grain's reading threads contend for
    # the GIL with the example making here; SentencePiece's own threads tokenize without it.
    iterable = blocks.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=2))
    if worker_processes:
      _absl_flags_parsed()
      iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_processes))
    self._blocks = iterable
    self._first_block = start
    self._per_epoch = -(-n // shards)

  def epoch(self, position: int) -> int:
    """The epoch the document at stream `position` belongs to."""
    return (self.shard + position * self.shards) // self.prepared.num_documents

  def documents(self, positions: np.ndarray) -> np.ndarray:
    """The documents at these positions of the shard's stream."""
    return self._order.documents(np.asarray(positions, np.int64))

  def _documents_from(self) -> Iterator[tuple[int, int, Optional[Tokens]]]:
    """(position, document index, its tokens) from the state's position on."""
    iterator = iter(self._blocks)
    try:
      position = self._first_block * _BLOCK
      for indices, block in iterator:
        for document, tokens in zip(indices.tolist(), block):
          if position >= self.state["position"]:
            yield position, document, tokens
          position += 1
    finally:
      close = getattr(iterator, "close", None)
      if close is not None:
        close()

  def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    if self.prepared.maker is None:
      return self._pairs()
    if self.prepared.task.concatenate_documents:
      return self._concatenated()
    return self._per_document()

  def _pairs(self):
    inputs_length, targets_length = self.prepared.inputs_length, self.prepared.targets_length
    last_example = self.state["position"]
    for position, _, tokens in self._documents_from():
      if tokens is not None and tokens[1].size:
        inputs, targets = seq2seq(*tokens, inputs_length=inputs_length, targets_length=targets_length)
        last_example = position
        yield (*self._with_eos(inputs, targets), {"position": position + 1, "offset": 0, "example": 0})
      self._check_progress(position, last_example)

  def _with_eos(self, inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drops the objective's EOS from a feature whose Feature(add_eos=False) asks for none."""
    features = self.prepared.task.output_features
    if not features["inputs"].add_eos and inputs.size > 1 and inputs[-1] == EOS_ID:
      inputs = inputs[:-1]
    if not features["targets"].add_eos and targets.size > 1 and targets[-1] == EOS_ID:
      targets = targets[:-1]
    return inputs, targets

  def _check_progress(self, position: int, last_progress: int) -> None:
    """An epoch of documents without an example (or, in T5's stream, without a token) would
    loop for ever: an error instead."""
    if position - last_progress > self._per_epoch:
      raise DataError(
          f"Task {self.prepared.task.name!r}: a whole epoch of {self.prepared.source.description} "
          "gave no example (every document empty, or dropped by a preprocessor?).")

  def _document_tokens(self, position: int, document: int, tokens: Tokens) -> np.ndarray:
    """The document's text tokens; in T5's stream its random chunk of max_document_tokens."""
    (text,) = tokens
    task = self.prepared.task
    if not task.concatenate_documents or text.size <= task.max_document_tokens:
      return text
    start = _chunk_start(text.size, task.max_document_tokens,
                         (self.seed, _task_id(task.name), self.epoch(position), document))
    return text[start:start + task.max_document_tokens]

  def _concatenated(self):
    """T5's stream: chunks of successive documents end to end, cut into raw-length pieces."""
    maker, task_id = self.prepared.maker, _task_id(self.prepared.task.name)
    example, skip = self.state["example"], self.state["offset"]
    # Tokens not yet in an example; they start at document start_position, token start_offset.
    buffer: list[np.ndarray] = []
    buffered = 0
    start_position, start_offset = self.state["position"], skip
    last_tokens = start_position  # Short documents may take many to fill an example.
    for position, document, tokens in self._documents_from():
      if tokens is None:
        self._check_progress(position, last_tokens)
        continue
      text = self._document_tokens(position, document, tokens)[skip:]
      if text.size:
        last_tokens = position
      if buffered == 0:
        start_position, start_offset = position, skip
      buffer.append(text)
      buffered += text.size
      while True:
        seed = (self.seed, task_id, self.shard, example)
        length = maker.raw_length(seed)
        if buffered < length:
          break
        stream = np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
        # Less than `length` was buffered before this document, so the rest is its tail.
        rest = stream[length:]
        buffer, buffered = [rest], rest.size
        start_position, start_offset = position, skip + text.size - rest.size
        example += 1
        state = {"position": start_position, "offset": start_offset, "example": example}
        yield (*self._with_eos(*maker.example(stream[:length], seed)), state)
      skip = 0
      self._check_progress(position, last_tokens)
    if buffered >= 2:  # The end of a finite stream: one shorter example.
      seed = (self.seed, task_id, self.shard, example)
      yield (*self._with_eos(*maker.example(np.concatenate(buffer), seed)),
             {"position": start_position, "offset": start_offset + buffered, "example": example + 1})

  def _per_document(self):
    """Each document cut on its own (objectives.document_examples); the last piece may be short."""
    task_id = _task_id(self.prepared.task.name)
    first_offset, first_example = self.state["offset"], self.state["example"]
    last_example = self.state["position"]
    for position, document, tokens in self._documents_from():
      if tokens is not None:
        text = self._document_tokens(position, document, tokens)
        for inputs, targets, offset, example in document_examples(
            self.prepared.maker, text, (self.seed, task_id, self.epoch(position), document),
            offset=first_offset, example=first_example):
          last_example = position
          yield (*self._with_eos(inputs, targets), {"position": position, "offset": offset, "example": example})
      first_offset = first_example = 0
      self._check_progress(position, last_example)


class _MixtureSampler:
  """The task of each draw of a shard's stream: rates in, a pure function of (seed, shard, draw)."""

  _BLOCK = 4096

  def __init__(self, rates: Sequence[float], seed: int, shard: int):
    self.probabilities = np.asarray(rates, np.float64) / np.sum(rates)
    self.seed, self.shard = seed, shard
    self._block, self._choices = -1, np.zeros(0, np.int64)

  def choice(self, draw: int) -> int:
    if len(self.probabilities) == 1:
      return 0
    block, index = divmod(draw, self._BLOCK)
    if block != self._block:
      rng = np.random.default_rng((self.seed, 7_919, self.shard, block))
      self._choices = rng.choice(len(self.probabilities), size=self._BLOCK, p=self.probabilities)
      self._block = block
    return int(self._choices[index])


def state_keys(task_names: Sequence[str]) -> list[str]:
  """The keys of a shard's state, in a fixed order: batch, draw, then each task's stream."""
  return ["batch", "draw"] + [f"{name}:{key}" for name in task_names for key in _STREAM_KEYS]


class _BatchIterator(grain.DatasetIterator):
  """Mixes the task streams of one shard and packs their examples into batches (grain iterator,
  so grain's prefetch thread can run it and keep its state in step with what was handed out)."""

  def __init__(self, loader: "Loader", state: dict):
    super().__init__()
    self._loader = loader
    self._state = dict(state)
    self._batches = self._make(self._state)

  def _make(self, state: dict) -> Iterator[tuple[Batch, dict, dict]]:
    """Yields (batch, examples per task in it, the state after it)."""
    loader = self._loader
    names = [prepared.task.name for prepared in loader.tasks]
    # Per task: where its stream continues after the last example placed in a batch.
    task_states = [{key: state[f"{name}:{key}"] for key in _STREAM_KEYS} for name in names]
    streams = [iter(TaskStream(
        prepared, seed=loader.seed, shard=loader.shard, shards=loader.shards, shuffle=loader.shuffle,
        num_epochs=loader.num_epochs, read_threads=_threads(loader.config.num_workers),
        worker_processes=loader.config.worker_processes, state=task_state))
        for prepared, task_state in zip(loader.tasks, task_states)]
    sampler = _MixtureSampler(loader.rates, loader.seed, loader.shard)

    def snapshot(draw: int, batch: int) -> dict:
      flat = {"batch": batch, "draw": draw}
      for name, task_state in zip(names, task_states):
        flat.update({f"{name}:{key}": int(value) for key, value in task_state.items()})
      return flat

    cfg = loader.config
    new_packer = lambda: Packer(loader.produced_rows, cfg.inputs_length, cfg.targets_length, loader.pack)
    packer, counts = new_packer(), [0] * len(names)
    draw, batch_index = state["draw"], state["batch"]
    try:
      while True:
        task = sampler.choice(draw)
        item = next(streams[task], None)
        if item is None:
          break  # A finite stream ended.
        inputs, targets, after = item
        if not packer.add(inputs, targets):
          # This example starts the next batch: the state is the one from before it.
          batch_index += 1
          yield packer.batch, dict(zip(names, counts)), snapshot(draw, batch_index)
          packer, counts = new_packer(), [0] * len(names)
          packer.add(inputs, targets)
        counts[task] += 1
        task_states[task] = after
        draw += 1
      if not packer.is_empty:
        yield packer.batch, dict(zip(names, counts)), snapshot(draw, batch_index + 1)
    finally:
      for stream in streams:
        stream.close()

  def __next__(self):
    item = next(self._batches)
    self._state = item[2]
    return item

  def get_state(self) -> dict:
    return dict(self._state)

  def set_state(self, state: dict) -> None:
    self._batches.close()
    self._state = dict(state)
    self._batches = self._make(self._state)

  def close(self) -> None:
    self._batches.close()


def check_vocabularies(task_list: Sequence[tasks_lib.Task], vocabulary_path: str) -> None:
  """The tasks of a run agree on one vocabulary, and it is the run's (data.vocabulary). Files
  are compared by content: a run's copy in its workdir is the same vocabulary ("bytes" too)."""
  named = {t.name: t.vocabulary for t in task_list if t.vocabulary}
  if len({_identity(path) for path in named.values()}) > 1:
    raise DataError(
        "The tasks of this mixture disagree on their vocabulary: "
        + "; ".join(f"{name}: {path}" for name, path in sorted(named.items()))
        + ". One model has one embedding: give every task the same vocabulary.")
  if named and vocabulary_path:
    path = next(iter(named.values()))
    if _identity(path) != _identity(vocabulary_path):
      raise DataError(
          f"The tasks read vocabulary {path}, but data.vocabulary is {vocabulary_path}; set "
          f"data.vocabulary={path} (or leave it empty to take the tasks').")


def _identity(path: str) -> str:
  """A vocabulary's content digest (its path if it cannot be read: loading it says why)."""
  return vocabulary_digest(path) or os.path.abspath(path)


def num_train_examples(task: tasks_lib.Task, data_config: DataConfig) -> int:
  """The size of a task's training split, for RateNumExamples rates."""
  return len(task.source.open(data_config.train_split, data_config.data_dir))


def resolve_tasks(data_config: DataConfig) -> list[tuple[tasks_lib.Task, float]]:
  """The tasks data.dataset names, with their shares of the examples."""
  return tasks_lib.flatten(tasks_lib.resolve(data_config),
                           lambda task: num_train_examples(task, data_config))


class Loader:
  """One stream of batches: a dict of (rows, length) arrays, keys packing.KEYS, int32 except
  decoder_loss_weights (float32). A training loader is shard `shard` of `shards`; a finite one
  (num_epochs set) builds the global batch and keeps process_index's rows."""

  def __init__(self, data_config: DataConfig, vocabulary: Vocabulary, *, split: str, batch_size: int,
               seed: int, shard: int = 0, shards: int = 1, shuffle: bool = True,
               num_epochs: Optional[int] = None, task: Optional[Union[str, tasks_lib.Task]] = None,
               max_documents: Optional[int] = None):
    """`task` (a name or Task) reads that task alone; None reads what data.dataset names.
    max_documents caps a finite loader's documents (data.max_eval_examples)."""
    if shards < 1 or not 0 <= shard < shards:
      raise DataError(f"shard={shard} must be in [0, shards={shards}).")
    if batch_size < 1 or batch_size % shards:
      raise DataError(
          f"The global batch_size={batch_size} must be a positive multiple of the {shards} "
          "stream(s) it is split into (data.shards, or one per process); change train.batch_size.")
    if num_epochs is not None and num_epochs < 1:
      raise DataError(f"num_epochs={num_epochs} must be None (repeat forever) or at least 1.")
    self.config = data_config
    self.vocabulary = vocabulary
    self.seed, self.shuffle, self.num_epochs = seed, shuffle, num_epochs
    self.shard, self.shards = shard, shards
    if task is None:
      weighted = resolve_tasks(data_config)
    else:
      resolved = tasks_lib.get(task) if isinstance(task, str) and tasks_lib.is_registered(task) else task
      if isinstance(resolved, str):
        resolved = tasks_lib.default_task(dataclasses.replace(data_config, dataset=resolved))
      weighted = [(resolved, 1.0)]
    if num_epochs is not None and len(weighted) > 1:
      raise DataError("A finite loader reads one task; evaluate a mixture task by task.")
    check_vocabularies([t for t, _ in weighted], data_config.vocabulary)
    self.tasks = [prepare_task(t, data_config, vocabulary, split) for t, _ in weighted]
    if max_documents is not None:
      for prepared in self.tasks:
        prepared.source = _Capped(prepared.source, max_documents)
    for prepared in self.tasks:
      prepared.check_first_record()
      if num_epochs is None and prepared.num_documents < shards:
        raise DataError(
            f"{prepared.source.description} has {prepared.num_documents} documents, fewer than "
            f"the {shards} training streams reading it (data.shards, or one per process when it "
            "is 0), so some stream would get none. Lower data.shards, or add data.")
    self.rates = [rate for _, rate in weighted]
    # Seq2seq evaluation decodes each row's inputs as one example: no packing there.
    self.pack = data_config.pack and not (num_epochs is not None and self.tasks[0].maker is None)
    self._global = num_epochs is not None
    self.rows = batch_size // shards
    self.produced_rows = batch_size if self._global else self.rows
    self._process_rows = slice(0, self.rows)
    self._state = dict.fromkeys(state_keys([p.task.name for p in self.tasks]), 0)
    self.examples_seen = 0  # Examples in the batches returned so far (whole global batches).
    self.task_examples = dict.fromkeys((p.task.name for p in self.tasks), 0)
    self._iterator: Optional[grain.DatasetIterator] = None

  @property
  def task_names(self) -> list[str]:
    return [p.task.name for p in self.tasks]

  def keep_rows(self, process_index: int, process_count: int) -> None:
    """A finite loader hands out only this process's rows of each global batch."""
    if batch_rows := self.produced_rows % process_count:
      raise DataError(f"batch_size={self.produced_rows} leaves {batch_rows} rows over {process_count} processes.")
    rows = self.produced_rows // process_count
    self.rows = rows
    self._process_rows = slice(process_index * rows, (process_index + 1) * rows)

  def epoch(self) -> int:
    """The epoch (from 0) the first task's stream is in."""
    stream = self._state[f"{self.task_names[0]}:position"]
    return (self.shard + stream * self.shards) // self.tasks[0].num_documents

  def __iter__(self) -> "Loader":
    return self

  def __next__(self) -> Batch:
    if self._iterator is None:
      batches = _Batches(self, dict(self._state))
      self._iterator = iter(grain.experimental.ThreadPrefetchIterDataset(
          batches, prefetch_buffer_size=max(1, self.config.prefetch)))
    try:
      batch, counts, self._state = next(self._iterator)
    except UserError as e:  # The user's to fix: without grain's note on its own frames.
      e.__notes__ = [n for n in getattr(e, "__notes__", []) if "Grain has removed" not in n]
      raise
    self.examples_seen += sum(counts.values())
    for name, count in counts.items():
      self.task_examples[name] += count
    if self._global:
      batch = {k: v[self._process_rows] for k, v in batch.items()}
    return batch

  def get_state(self) -> dict:
    """Where the next batch starts (JSON-ready ints): see state_keys."""
    return dict(self._state)

  def set_state(self, state: dict) -> None:
    """Continues with the batch after the one get_state() was taken after."""
    expected = state_keys(self.task_names)
    if sorted(state) != sorted(expected):
      raise DataError(
          f"Loader state has keys {sorted(state)}, but this data ({', '.join(self.task_names)}) "
          f"needs {sorted(expected)}: it was saved by a run reading other tasks, or an older "
          "t5x-lite. Resume with the data the checkpoint was trained on.")
    self.close()
    self._state = {k: int(state[k]) for k in expected}

  def close(self) -> None:
    """Stops the prefetch thread; iteration restarts from the current state."""
    if self._iterator is not None:
      self._iterator.close()
      self._iterator = None


class _Batches(grain.IterDataset):
  """The batches of a Loader from a state, as a grain dataset (for ThreadPrefetchIterDataset)."""

  def __init__(self, loader: Loader, state: dict):
    super().__init__()
    self._loader, self._state = loader, state

  def __iter__(self) -> _BatchIterator:
    return _BatchIterator(self._loader, self._state)


class _Capped:
  """The first `count` records of a source (data.max_eval_examples)."""

  def __init__(self, source, count: int):
    self._source, self._count = source, min(count, len(source))
    self.description = source.description

  def __len__(self) -> int:
    return self._count

  def records(self, indices: Sequence[int]) -> list[dict]:
    return self._source.records(indices)


class ShardedLoader:
  """The training stream as `shards` independent Loaders, of which this process reads its own.

  Shard s fills batch_size // S rows of every global batch, so the global batch depends on S
  alone, not on how many processes share the shards. Process i of n reads shards
  [i*S/n, (i+1)*S/n).
  """

  def __init__(self, data_config: DataConfig, vocabulary: Vocabulary, *, split: str, batch_size: int,
               seed: int, shards: int, process_index: int = 0, process_count: int = 1):
    if shards < 1 or shards % process_count or batch_size % shards:
      raise DataError(
          f"data.shards={shards} must be a multiple of the process count ({process_count}) and "
          f"divide train.batch_size={batch_size}; change data.shards (0 = one per process).")
    self.shards = shards
    per_process = shards // process_count
    self.first_shard = process_index * per_process
    self.loaders = [
        Loader(data_config, vocabulary, split=split, batch_size=batch_size, seed=seed,
               shard=shard, shards=shards)
        for shard in range(self.first_shard, self.first_shard + per_process)]

  @property
  def examples_seen(self) -> int:
    return sum(loader.examples_seen for loader in self.loaders)

  @property
  def task_examples(self) -> dict[str, int]:
    totals: dict[str, int] = {}
    for loader in self.loaders:
      for name, count in loader.task_examples.items():
        totals[name] = totals.get(name, 0) + count
    return totals

  @property
  def state_keys(self) -> list[str]:
    return state_keys(self.loaders[0].task_names)

  def __iter__(self) -> "ShardedLoader":
    return self

  def __next__(self) -> Batch:
    batches = [next(loader) for loader in self.loaders]
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}

  def get_state(self) -> dict:
    """This process's shards: {"first_shard": s, "shards": [state of s, s+1, ...]}."""
    return {"first_shard": self.first_shard, "shards": [loader.get_state() for loader in self.loaders]}

  def set_state(self, state: dict) -> None:
    """Accepts this process's state or one covering all shards (first_shard 0)."""
    if set(state) != {"first_shard", "shards"}:
      raise DataError(f"Loader state must have keys ['first_shard', 'shards'], got {sorted(state)}.")
    offset = self.first_shard - state["first_shard"]
    if offset < 0 or offset + len(self.loaders) > len(state["shards"]):
      raise DataError(
          f"Saved loader state covers shards {state['first_shard']}.."
          f"{state['first_shard'] + len(state['shards']) - 1}, "
          f"but this process reads shards {self.first_shard}..{self.first_shard + len(self.loaders) - 1}; "
          "restore with the same data.shards.")
    for loader, shard_state in zip(self.loaders, state["shards"][offset:]):
      loader.set_state(shard_state)

  def close(self) -> None:
    for loader in self.loaders:
      loader.close()


def make_train_loader(config: ExperimentConfig, vocabulary: Vocabulary, process_index: int = 0,
                      process_count: int = 1) -> ShardedLoader:
  """The endless, shuffled training stream of an experiment."""
  return ShardedLoader(config.data, vocabulary, split=config.data.train_split,
                       batch_size=config.train.batch_size, seed=config.train.seed,
                       shards=config.data.shards or process_count,
                       process_index=process_index, process_count=process_count)


def eval_tasks(config: ExperimentConfig) -> list[tasks_lib.Task]:
  """The tasks an evaluation reports one by one: those data.dataset names."""
  return [task for task, _ in resolve_tasks(config.data)]


def make_eval_loader(config: ExperimentConfig, vocabulary: Vocabulary, process_index: int = 0,
                     process_count: int = 1, batch_size: Optional[int] = None,
                     task: Optional[str] = None) -> Loader:
  """One pass over a task's evaluation split (data.max_eval_examples documents at most), in order.

  `task` names one task of the run's mixture (see eval_task_names); None: its only task.
  Seq2seq rows are not packed: evaluation decodes each row's inputs as one example.
  """
  by_name = {t.name: t for t in eval_tasks(config)}
  if task is None and len(by_name) > 1:
    raise DataError(f"{config.data.dataset!r} mixes tasks {sorted(by_name)}; name the one to evaluate.")
  chosen = by_name[task] if task is not None else next(iter(by_name.values()))
  loader = Loader(config.data, vocabulary, split=config.data.eval_split,
                  batch_size=batch_size or config.train.batch_size, seed=config.train.seed,
                  shuffle=False, num_epochs=1, task=chosen, max_documents=config.data.max_eval_examples)
  loader.keep_rows(process_index, process_count)
  return loader


def prepare_data(data_config: DataConfig) -> None:
  """Builds the built-in datasets the run's tasks read, and takes their vocabulary.

  A run of registered tasks uses, when data.vocabulary is empty, the vocabulary their features
  name, else one trained on the first task's dataset; data_config is changed to say which.
  Call on one process first in a multi-process run (see sources.prepare).
  """
  task_list = [task for task, _ in resolve_tasks(data_config)]
  for task in task_list:
    with _naming_registered(task, data_config):
      task.source.prepare(data_config.data_dir)
      task.source.open(data_config.train_split, data_config.data_dir)
  check_vocabularies(task_list, data_config.vocabulary)
  named = [task.vocabulary for task in task_list if task.vocabulary]
  if not data_config.vocabulary and named:
    data_config.vocabulary = named[0] if named[0] == BYTES else os.path.abspath(named[0])
  if not data_config.vocabulary and tasks_lib.is_registered(data_config.dataset):
    # As for a dataset: one trained (data.vocab_train_size pieces) on the first task that reads one.
    readable = [t for t in task_list if isinstance(t.source, tasks_lib.DatasetSource) and not t.is_seq2seq]
    if not readable:
      raise DataError(
          f"data.dataset={data_config.dataset!r} names tasks whose features name no vocabulary, and "
          "none reads a dataset to train one on. Set data.vocabulary to a SentencePiece .model "
          '(`t5x-lite train-vocab` trains one) or "bytes", or give the tasks\' '
          "Feature(vocabulary=...).")
    first = readable[0]
    dataset_config = dataclasses.replace(
        data_config, dataset=first.source.name, data_dir=first.source.data_dir or data_config.data_dir,
        text_feature=first.text_feature, objective="span_corruption")
    get_vocabulary(dataset_config)
    data_config.vocabulary = vocabulary_cache_path(dataset_config)


def check_data(data_config: DataConfig, vocabulary: Vocabulary) -> None:
  """Opens the train and eval split of every task and runs its preprocessors on a few records:
  a missing split or feature, or lengths the objective cannot fill, fail before any work."""
  for task, _ in resolve_tasks(data_config):
    for split in dict.fromkeys((data_config.train_split, data_config.eval_split)):
      prepare_task(task, data_config, vocabulary, split).check_first_record()


def fingerprint(data_config: DataConfig) -> dict:
  """What identifies the data a run reads (sources.fingerprint's form), for its checkpoints: a
  dataset's own, or for registered tasks the tasks' merged (a generator's records digested)."""
  task_list = [task for task, _ in resolve_tasks(data_config)]
  if not tasks_lib.is_registered(data_config.dataset):
    return sources.fingerprint(data_config)
  parts = {}
  for task in task_list:
    if isinstance(task.source, tasks_lib.DatasetSource):
      parts[task.name] = sources.fingerprint(dataclasses.replace(
          data_config, dataset=task.source.name, data_dir=task.source.data_dir or data_config.data_dir))
    else:
      parts[task.name] = {role: _generator_fingerprint(task, getattr(data_config, role))
                          for role in ("train_split", "eval_split")}

  def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()

  def merged(role: str) -> dict:
    splits = [part[role] for part in parts.values()]
    return {"split": getattr(data_config, role), "examples": sum(s["examples"] for s in splits),
            "shards": sum(s["shards"] for s in splits), "num_bytes": sum(s["num_bytes"] for s in splits),
            "shard_bytes": [b for s in splits for b in s["shard_bytes"]], "records_digest": digest(splits)}

  return {"dataset": data_config.dataset, "path": "tasks " + ", ".join(parts),
          "dataset_info_sha256": digest({name: part.get("dataset_info_sha256") for name, part in parts.items()}),
          "train_split": merged("train_split"), "eval_split": merged("eval_split")}


def _generator_fingerprint(task: tasks_lib.Task, split: str) -> dict:
  records = task.source.open(split, None)
  text = json.dumps(records.records(range(len(records))), sort_keys=True, default=str).encode()
  return {"split": split, "examples": len(records), "shards": 1, "num_bytes": len(text),
          "shard_bytes": [len(text)], "records_digest": hashlib.sha256(text).hexdigest()}
