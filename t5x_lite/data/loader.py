"""The batch loader: documents -> tokens -> objective examples -> packed rows -> batches.

Determinism and resumption. Each epoch visits the documents in a permutation drawn from
(seed, epoch); example k of a document is a pure function of (seed, epoch, document, k).
Batches are filled in stream order, so the position of the first example not yet in a batch,
(epoch, document, example), is the whole state: get_state() after k batches and set_state()
later continue with exactly batch k + 1, packing included.

Processes. A training loader (num_epochs=None) gives process i of n the documents at positions
i, i+n, ... of every epoch's permutation, so the shares are disjoint, cover the data, and no work
is repeated; its batches have batch_size // n rows and the global batch is the concatenation.
A finite loader (evaluation) builds the whole global batch on every process and keeps rows
[i * batch_size // n, (i + 1) * batch_size // n), so every process yields the same number of
batches. Its last batch is padded with all-zero rows: padding has segment id 0 and loss weight
0, so decoder_loss_weights is the mask.

Speed. A background thread reads blocks of documents, tokenizes them with SentencePiece's own
threads (data.num_workers), builds examples and packs them; data.prefetch batches wait ready.
Loaders still running when the interpreter exits are closed first: a daemon thread killed
inside SentencePiece's threaded encoding aborts the process.
"""

from __future__ import annotations

import atexit
import dataclasses
import queue
import threading
import weakref
from typing import Iterator, Optional

import numpy as np

from t5x_lite.config import DataConfig, ExperimentConfig
from t5x_lite.data import sources
from t5x_lite.data.errors import DataError
from t5x_lite.data.objectives import Objective
from t5x_lite.data.packing import Packer
from t5x_lite.data.vocabulary import Vocabulary

Batch = dict[str, np.ndarray]
_BLOCK = 64  # Documents read and tokenized together.
STATE_KEYS = ("epoch", "document", "example", "batch")


# Loaders whose thread may be running; weak, so a dropped loader whose thread ended is freed.
_running: "weakref.WeakSet[Loader]" = weakref.WeakSet()


@atexit.register
def _close_running_loaders() -> None:
  """Stops every producer thread before the interpreter exits (see the module docstring)."""
  for loader in list(_running):
    loader.close()


class _End:
  """Marks the end of the producer's stream (with the error that ended it, if any)."""

  def __init__(self, error: Optional[BaseException] = None):
    self.error = error


class Loader:
  """Iterable of batches: dict of (batch_size // process_count, length) arrays.

  Keys are those of packing.KEYS; int32 except decoder_loss_weights (float32).
  """

  def __init__(self, data_config: DataConfig, vocabulary: Vocabulary, *, split: str, batch_size: int,
               seed: int, process_index: int = 0, process_count: int = 1, shuffle: bool = True,
               num_epochs: Optional[int] = None, data_dir: Optional[str] = None,
               max_documents: Optional[int] = None):
    if process_count < 1 or not 0 <= process_index < process_count:
      raise DataError(f"process_index={process_index} must be in [0, process_count={process_count}).")
    if batch_size < 1 or batch_size % process_count:
      raise DataError(
          f"The global batch_size={batch_size} must be a positive multiple of process_count="
          f"{process_count} so each process gets an equal share; change train.batch_size.")
    if num_epochs is not None and num_epochs < 1:
      raise DataError(f"num_epochs={num_epochs} must be None (repeat forever) or at least 1.")
    self.config = data_config
    self.vocabulary = vocabulary
    self.seed, self.shuffle, self.num_epochs = seed, shuffle, num_epochs
    self.process_index, self.process_count = process_index, process_count
    self.source = sources.open_source(
        data_config.dataset, split, data_dir or data_config.data_dir,
        sources.text_features(data_config))
    self.num_documents = len(self.source) if max_documents is None else min(
        max_documents, len(self.source))
    if self.num_documents == 0:
      raise DataError(f"{self.source.description} has no documents; check the split name.")
    if num_epochs is None and self.num_documents < process_count:
      raise DataError(
          f"{self.source.description} has {self.num_documents} documents, fewer than the "
          f"{process_count} training streams reading it (data.shards, or one per process when "
          "it is 0), so some stream would get none. Lower data.shards, or add data.")
    self.objective = Objective(
        data_config.objective, inputs_length=data_config.inputs_length,
        targets_length=data_config.targets_length, sentinel_vocab_size=vocabulary.unpadded_size,
        extra_ids=vocabulary.extra_ids, noise_density=data_config.noise_density,
        mean_noise_span_length=data_config.mean_noise_span_length)
    self._global = num_epochs is not None
    self.rows = batch_size // process_count
    self._produced_rows = batch_size if self._global else self.rows
    self._state = dict.fromkeys(STATE_KEYS, 0)
    # Examples in the batches returned so far (whole global batches for finite loaders).
    self.examples_seen = 0
    self._thread: Optional[threading.Thread] = None
    self._queue: queue.Queue = queue.Queue()
    self._stop = threading.Event()

  # ----- order and stream ---------------------------------------------------

  def documents(self, epoch: int) -> np.ndarray:
    """Indices of the documents this loader reads in `epoch`, in order."""
    if self.shuffle:
      order = np.random.default_rng((self.seed, epoch)).permutation(self.num_documents)
    else:
      order = np.arange(self.num_documents)
    return order if self._global else order[self.process_index::self.process_count]

  def _examples(self, epoch: int, position: int, skip: int):
    """Yields (inputs, targets, its (epoch, position, example)) from a stream position on."""
    while self.num_epochs is None or epoch < self.num_epochs:
      order = self.documents(epoch)
      produced = False
      for start in range(position, len(order), _BLOCK):
        block = order[start:start + _BLOCK]
        columns = zip(*self.source.get(block))
        tokens = list(zip(*(self.vocabulary.encode_batch(c, self.config.num_workers) for c in columns)))
        for offset, (doc, doc_tokens) in enumerate(zip(block, tokens)):
          first = skip if start + offset == position else 0
          examples = self.objective.examples(doc_tokens, (self.seed, epoch, int(doc)), skip=first)
          for k, (inputs, targets) in enumerate(examples):
            produced = True
            yield inputs, targets, (epoch, start + offset, first + k)
      if not produced and position == 0:
        raise DataError(f"{self.source.description}: no document gives an example (all empty?).")
      epoch, position, skip = epoch + 1, 0, 0

  def _batches(self, state: dict) -> Iterator[tuple[Batch, int, dict]]:
    """Yields (batch, examples in it, state after it)."""
    cfg = self.config
    new_packer = lambda: Packer(self._produced_rows, cfg.inputs_length, cfg.targets_length, cfg.pack)
    packer = new_packer()
    batch_index = state["batch"]
    for inputs, targets, (epoch, document, example) in self._examples(
        state["epoch"], state["document"], state["example"]):
      if packer.add(inputs, targets):
        continue
      batch_index += 1
      yield packer.batch, packer.num_examples, {
          "epoch": epoch, "document": document, "example": example, "batch": batch_index}
      packer = new_packer()
      packer.add(inputs, targets)
    if not packer.is_empty:
      yield packer.batch, packer.num_examples, {
          "epoch": self.num_epochs, "document": 0, "example": 0, "batch": batch_index + 1}

  def _produce(self, state: dict, out: queue.Queue, stop: threading.Event) -> None:
    def put(item) -> bool:
      """Waits for room in `out`, giving up (False) once stop is set, so close() never hangs."""
      while not stop.is_set():
        try:
          out.put(item, timeout=0.1)
          return True
        except queue.Full:
          pass
      return False

    end = _End()
    try:
      for item in self._batches(state):
        if not put(item):
          return
    except BaseException as e:  # Re-raised in the consumer's thread.
      end = _End(e)
    put(end)

  # ----- iteration and state --------------------------------------------------

  def __iter__(self) -> "Loader":
    return self

  def __next__(self) -> Batch:
    if self._thread is None:
      self._stop = threading.Event()
      self._queue = queue.Queue(maxsize=max(1, self.config.prefetch))
      self._thread = threading.Thread(
          target=self._produce, args=(dict(self._state), self._queue, self._stop), daemon=True)
      self._thread.start()
      _running.add(self)
    item = self._queue.get()
    if isinstance(item, _End):
      self._queue.put(item)  # Later calls end the same way.
      if item.error is not None:
        raise item.error
      raise StopIteration
    batch, num_examples, self._state = item
    self.examples_seen += num_examples
    if self._global:
      rows = slice(self.process_index * self.rows, (self.process_index + 1) * self.rows)
      batch = {k: v[rows] for k, v in batch.items()}
    return batch

  def get_state(self) -> dict:
    """Where the next batch starts: {"epoch", "document", "example", "batch"} (JSON-ready)."""
    return dict(self._state)

  def set_state(self, state: dict) -> None:
    """Continues with the batch after the one get_state() was taken after."""
    if set(state) != set(STATE_KEYS):
      raise DataError(f"Loader state must have keys {list(STATE_KEYS)}, got {sorted(state)}.")
    self.close()
    self._state = {k: int(state[k]) for k in STATE_KEYS}

  def close(self) -> None:
    """Stops the background thread; iteration restarts from the current state."""
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None
      _running.discard(self)


class ShardedLoader:
  """The training stream as `shards` independent Loaders, of which this process reads its own.

  Shard s reads documents s, s+S, ... of each epoch and fills batch_size // S rows of
  every global batch, so the global batch depends on S alone, not on how many
  processes share the shards. Process i of n reads shards [i*S/n, (i+1)*S/n).
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
               process_index=shard, process_count=shards)
        for shard in range(self.first_shard, self.first_shard + per_process)]

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


def make_eval_loader(config: ExperimentConfig, vocabulary: Vocabulary, process_index: int = 0,
                     process_count: int = 1, batch_size: Optional[int] = None) -> Loader:
  """One pass over the evaluation split (data.max_eval_examples documents at most), in order.

  Seq2seq rows are not packed: evaluation decodes each row's inputs as one example.
  """
  data_config = config.data
  if data_config.objective == "seq2seq":
    data_config = dataclasses.replace(data_config, pack=False)
  return Loader(data_config, vocabulary, split=config.data.eval_split,
                batch_size=batch_size or config.train.batch_size, seed=config.train.seed,
                process_index=process_index, process_count=process_count, shuffle=False,
                num_epochs=1, max_documents=config.data.max_eval_examples)
