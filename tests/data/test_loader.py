import itertools
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from data_helpers import batches_equal, stream_examples, unpack

from t5x_lite.config import ExperimentConfig, TrainConfig
from t5x_lite.data import BATCH_KEYS, DataError, Loader, Vocabulary, make_eval_loader, make_train_loader
from t5x_lite.data.loader import ShardedLoader
from t5x_lite.data.packing import packing_efficiency
from t5x_lite.data.vocabulary import vocabulary_cache_path


def take(loader, n):
  return list(itertools.islice(loader, n))


def test_shapes_dtypes_and_determinism(config, vocab):
  a = take(Loader(config, vocab, split="train", batch_size=4, seed=3), 3)
  b = take(Loader(config, vocab, split="train", batch_size=4, seed=3), 3)
  c = take(Loader(config, vocab, split="train", batch_size=4, seed=4), 3)
  for batch in a:
    assert set(batch) == set(BATCH_KEYS)
    for key, value in batch.items():
      length = config.inputs_length if key.startswith("encoder") else config.targets_length
      assert value.shape == (4, length)
      assert value.dtype == (np.float32 if key == "decoder_loss_weights" else np.int32)
  assert all(batches_equal(x, y) for x, y in zip(a, b))
  assert not batches_equal(a[0], c[0])


def test_batches_follow_the_stream_and_reshuffle_per_epoch(config, vocab):
  loader = Loader(config, vocab, split="train", batch_size=8, seed=0, max_documents=6)
  expected = [stream_examples(loader, epoch) for epoch in range(3)]
  batches = []
  while loader.get_state()["epoch"] < 2:
    batches.append(next(loader))
  seen = [e for b in batches for e in unpack(b)]
  assert len(seen) >= len(expected[0]) + len(expected[1])
  assert sorted(seen) == sorted(sum(expected, [])[:len(seen)])
  assert not np.array_equal(loader.documents(0), loader.documents(1))
  assert 0.8 < np.mean([packing_efficiency(b) for b in batches]) <= 1.0


@pytest.mark.parametrize("pack", [True, False])
def test_resume_continues_the_uninterrupted_stream(config, vocab, pack):
  config.pack = pack
  make = lambda: Loader(config, vocab, split="train", batch_size=4, seed=1, max_documents=8)
  uninterrupted = make()
  reference = take(uninterrupted, 30)
  assert uninterrupted.get_state()["epoch"] >= 1  # The stream crosses an epoch boundary.
  for k in (1, 7, 19):
    first = make()
    take(first, k)
    state = json.loads(json.dumps(first.get_state()))
    first.close()
    resumed = make()
    resumed.set_state(state)
    assert all(batches_equal(x, y) for x, y in zip(take(resumed, 30 - k), reference[k:]))


@pytest.mark.parametrize("processes", [2, 4])
def test_training_shards_are_disjoint_and_cover(config, vocab, processes):
  loaders = [Loader(config, vocab, split="train", batch_size=8, seed=2, process_index=i,
                    process_count=processes) for i in range(processes)]
  for epoch in (0, 1):
    shards = [set(l.documents(epoch).tolist()) for l in loaders]
    assert sum(len(s) for s in shards) == loaders[0].num_documents
    assert set().union(*shards) == set(range(loaders[0].num_documents))
  for loader in loaders:
    batch = next(loader)
    assert batch["encoder_input_tokens"].shape[0] == 8 // processes
    examples = unpack(batch)
    assert sorted(examples) == sorted(stream_examples(loader, 0)[:len(examples)])
    loader.close()


@pytest.mark.parametrize("processes", [2, 4])
def test_eval_shards_split_the_global_batches(config, vocab, processes):
  whole = list(Loader(config, vocab, split="validation", batch_size=8, seed=0, shuffle=False, num_epochs=1))
  parts = [list(Loader(config, vocab, split="validation", batch_size=8, seed=0, shuffle=False,
                       num_epochs=1, process_index=i, process_count=processes)) for i in range(processes)]
  assert all(len(p) == len(whole) for p in parts)
  for b, batch in enumerate(whole):
    joined = {k: np.concatenate([p[b][k] for p in parts]) for k in batch}
    assert batches_equal(joined, batch)


def test_eval_yields_every_example_once_with_padded_final_batch(config, vocab):
  loader = Loader(config, vocab, split="validation", batch_size=16, seed=0, shuffle=False, num_epochs=1)
  batches = list(loader)
  assert list(loader) == []  # Exhausted, stays exhausted.
  seen = [e for b in batches for e in unpack(b)]
  assert sorted(seen) == sorted(stream_examples(loader, 0))
  assert len(seen) == loader.examples_seen
  last = batches[-1]
  assert last["encoder_input_tokens"].shape[0] == 16
  empty = last["decoder_segment_ids"].max(axis=1) == 0
  assert empty.any()
  for key in BATCH_KEYS:
    assert not last[key][empty].any()


def test_make_loaders_and_bad_arguments(config, vocab):
  experiment = ExperimentConfig(data=config, train=TrainConfig(batch_size=4, seed=0))
  config.max_eval_examples = 3
  eval_loader = make_eval_loader(experiment, vocab, 1, 2)
  assert eval_loader.num_documents == 3 and next(eval_loader)["decoder_loss_weights"].shape == (2, 32)
  train_loader = make_train_loader(experiment, vocab)
  assert next(train_loader)["encoder_input_tokens"].shape == (4, 128)
  train_loader.close()
  with pytest.raises(DataError, match="multiple of process_count=3"):
    Loader(config, vocab, split="train", batch_size=4, seed=0, process_count=3)
  with pytest.raises(DataError, match="no split 'tset'"):
    Loader(config, vocab, split="tset", batch_size=4, seed=0)
  with pytest.raises(DataError, match="state must have keys"):
    train_loader.set_state({"epoch": 0})
  with pytest.raises(DataError, match="noise spans.*0 extra ids"):
    Loader(config, Vocabulary(vocab.model_proto, extra_ids=0), split="train", batch_size=4, seed=0)


def test_close_when_the_queue_is_full_at_the_end_of_the_stream(config, vocab):
  """The producer waits behind a full queue to put the end marker; close() still stops it."""
  config.prefetch = 1
  make = lambda: Loader(config, vocab, split="validation", batch_size=2, seed=0, shuffle=False,
                        num_epochs=1, max_documents=4)
  count = len(list(make()))
  assert count >= 2
  loader = make()
  take(loader, count - 1)
  deadline = time.monotonic() + 10
  while not loader._queue.full() and time.monotonic() < deadline:  # The last batch is in.
    time.sleep(0.01)
  time.sleep(0.3)  # The producer is now waiting to put the end marker.
  closer = threading.Thread(target=loader.close, daemon=True)
  closer.start()
  closer.join(timeout=5)
  assert not closer.is_alive()


def test_prefix_lm_objective(config, vocab):
  config.objective = "prefix_lm"
  loader = Loader(config, vocab, split="validation", batch_size=8, seed=0, shuffle=False, num_epochs=1)
  seen = [e for b in loader for e in unpack(b)]
  assert sorted(seen) == sorted(stream_examples(loader, 0))
  assert all(i[-1] == 1 and t[-1] == 1 for i, t in seen)


def test_sharded_stream_is_the_same_on_any_number_of_processes(config, vocab):
  """With data.shards fixed, 1, 2 or 4 processes together yield the same global batches,
  each reading only its own shards, and a state gathered from all of them resumes on 1."""
  def global_batches(process_count, count=3, state=None):
    loaders = [ShardedLoader(config, vocab, split="train", batch_size=8, seed=3, shards=4,
                             process_index=i, process_count=process_count) for i in range(process_count)]
    if state is not None:
      for loader in loaders:
        loader.set_state(state)
    batches = []
    for _ in range(count):
      parts = [next(loader) for loader in loaders]
      batches.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    states = [loader.get_state() for loader in loaders]
    for loader in loaders:
      loader.close()
    return batches, {"first_shard": 0, "shards": [s for st in states for s in st["shards"]]}

  single, _ = global_batches(1, count=5)
  for process_count in (2, 4):
    batches, _ = global_batches(process_count, count=5)
    for a, b in zip(batches, single):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
  _, state_after_2 = global_batches(2, count=2)
  resumed, _ = global_batches(1, count=3, state=state_after_2)
  for a, b in zip(resumed, single[2:]):
    np.testing.assert_array_equal(a["encoder_input_tokens"], b["encoder_input_tokens"])
  with pytest.raises(DataError, match="multiple of the process count"):
    ShardedLoader(config, vocab, split="train", batch_size=8, seed=0, shards=3, process_count=2)


def test_more_shards_than_documents_says_so(config, vocab):
  with pytest.raises(DataError, match="has 3 documents, fewer than the 4 training streams .*"
                                      "Lower data.shards, or add data"):
    Loader(config, vocab, split="train", batch_size=8, seed=0, process_index=3, process_count=4,
           max_documents=3)
  # Evaluation builds whole batches on every process, so any count of documents is fine.
  Loader(config, vocab, split="validation", batch_size=8, seed=0, process_index=3, process_count=4,
         num_epochs=1, max_documents=3)


EXIT_SCRIPT = """
import atexit, os, sys, threading

def report_producers():  # Registered first, so it runs after the loader module's own hook.
  producers = [t for t in threading.enumerate() if "_produce" in t.name]
  os._exit(10 + len(producers) if producers else 0)
atexit.register(report_producers)

from t5x_lite.config import DataConfig, ExperimentConfig, TrainConfig
from t5x_lite.data import Vocabulary, make_train_loader

data = DataConfig(data_dir=sys.argv[1], vocabulary=sys.argv[2], inputs_length=128,
                  targets_length=32)
loader = make_train_loader(ExperimentConfig(data=data, train=TrainConfig(batch_size=4)),
                           Vocabulary(sys.argv[2]))
next(loader)  # Exits without close().
"""


def test_loaders_left_open_are_stopped_before_the_interpreter_exits(base_config, vocab, tmp_path):
  """Else a producer thread inside SentencePiece's encoding can abort the exit (rc 134)."""
  del vocab
  script = tmp_path / "one_batch.py"
  script.write_text(EXIT_SCRIPT)
  done = subprocess.run([sys.executable, str(script), base_config.data_dir,
                         vocabulary_cache_path(base_config)], capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
