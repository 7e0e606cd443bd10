import dataclasses
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from data_helpers import batches_equal, unpack

from t5x_lite.config import ExperimentConfig, TrainConfig
from t5x_lite.data import (
  BATCH_KEYS,
  DataError,
  DatasetSource,
  GeneratorSource,
  Loader,
  Mixture,
  PrefixLM,
  SentencePieceVocabulary,
  Seq2Seq,
  SpanCorruption,
  Task,
  make_eval_loader,
  make_train_loader,
  pipeline,
  register_mixture,
  register_task,
)
from t5x_lite.data.objectives import document_examples
from t5x_lite.data.packing import packing_efficiency
from t5x_lite.data.vocabulary import EOS_ID, vocabulary_cache_path


def reconstruct_tokens(inputs, targets, pieces: int) -> np.ndarray:
  """The tokens a span-corrupted example was made from: each sentinel (ids from `pieces` up) in
  the inputs replaced by the tokens after that sentinel in the targets."""
  inputs, targets = list(inputs)[:-1], list(targets)[:-1]
  spans, current = {}, None
  for token in targets:
    if token >= pieces:
      current = spans.setdefault(token, [])
    else:
      current.append(token)
  return np.array([t for token in inputs for t in (spans[token] if token in spans else [token])])


def take(loader, n):
  return list(itertools.islice(loader, n))


def train_loader(config, vocab, **kwargs):
  kwargs = {"split": "train", "batch_size": 4, "seed": 1, **kwargs}
  return Loader(config, vocab, **kwargs)


def eval_loader(config, vocab, **kwargs):
  kwargs = {"split": "validation", "batch_size": 8, "seed": 0, "shuffle": False, "num_epochs": 1, **kwargs}
  return Loader(config, vocab, **kwargs)


def test_shapes_dtypes_and_determinism(config, vocab):
  a = take(train_loader(config, vocab, seed=3), 3)
  b = take(train_loader(config, vocab, seed=3), 3)
  c = take(train_loader(config, vocab, seed=4), 3)
  for batch in a:
    assert set(batch) == set(BATCH_KEYS)
    for key, value in batch.items():
      length = config.inputs_length if key.startswith("encoder") else config.targets_length
      assert value.shape == (4, length)
      assert value.dtype == (np.float32 if key == "decoder_loss_weights" else np.int32)
  assert all(batches_equal(x, y) for x, y in zip(a, b))
  assert not batches_equal(a[0], c[0])


def document_stream(loader, count: int) -> np.ndarray:
  """The tokens of a finite loader's first `count` documents end to end (no preprocessors,
  none longer than max_document_tokens), computed without the loader."""
  prepared = loader.tasks[0]
  texts = [r[prepared.task.text_feature] for r in prepared.source.records(range(count))]
  return np.concatenate(prepared.vocabulary.encode_batch(texts))


def test_t5_stream_examples_are_full_length_and_cross_documents(config, vocab):
  """At 512 / 114 every example but the last has exactly 512 inputs and 114 targets, and the
  examples, uncorrupted, are the documents' tokens end to end."""
  config = dataclasses.replace(config, inputs_length=512, targets_length=114)
  loader = eval_loader(config, vocab, batch_size=4)
  examples = [e for batch in loader for e in unpack(batch)]
  assert len(examples) > 10
  assert all(len(i) == 512 and len(t) == 114 for i, t in examples[:-1])
  assert 0 < len(examples[-1][0]) <= 512 and 0 < len(examples[-1][1]) <= 114
  rebuilt = np.concatenate([reconstruct_tokens(i, t, vocab.pieces) for i, t in examples])
  expected = document_stream(loader, loader.tasks[0].num_documents)
  np.testing.assert_array_equal(rebuilt, expected)
  assert packing_efficiency(next(iter(eval_loader(config, vocab, batch_size=4)))) == 1.0


def test_per_document_mode_cuts_each_document_on_its_own(config, vocab):
  config.concatenate_documents = False
  loader = eval_loader(config, vocab)
  prepared = loader.tasks[0]
  expected = []
  for index, record in enumerate(prepared.source.records(range(prepared.num_documents))):
    tokens = vocab.encode(record["text"])
    seed = (0, pipeline._task_id(prepared.task.name), 0, index)
    expected += [(tuple(i.tolist()), tuple(t.tolist()))
                 for i, t, _, _ in document_examples(prepared.maker, tokens, seed)]
  seen = [e for batch in loader for e in unpack(batch)]
  assert sorted(seen) == sorted(expected)
  assert any(len(i) < 100 for i, _ in seen)  # Short documents' pieces, packed.


def test_documents_longer_than_max_document_tokens_give_a_random_aligned_chunk(config, vocab):
  """As T5's select_random_chunk: one of the document's max_document_tokens-long segments."""
  config = dataclasses.replace(config, max_document_tokens=50, inputs_length=512, targets_length=114)
  loader = eval_loader(config, vocab, max_documents=12)
  rebuilt = np.concatenate([reconstruct_tokens(i, t, vocab.pieces)
                            for batch in loader for i, t in unpack(batch)])
  prepared, starts, pieces = loader.tasks[0], [], []
  for index, record in enumerate(prepared.source.records(range(12))):
    tokens = vocab.encode(record["text"])
    start = pipeline._chunk_start(tokens.size, 50, (0, pipeline._task_id(prepared.task.name), 0, index))
    assert start % 50 == 0 and start < tokens.size
    starts.append(start)
    pieces.append(tokens[start:start + 50])
  np.testing.assert_array_equal(rebuilt, np.concatenate(pieces))
  assert len(set(starts)) > 1


@pytest.mark.parametrize("concatenate, pack", [(True, True), (False, True), (False, False)])
def test_resume_continues_the_uninterrupted_stream(config, vocab, concatenate, pack):
  config.concatenate_documents, config.pack = concatenate, pack
  make = lambda: train_loader(config, vocab, max_documents=8)
  uninterrupted = make()
  reference = take(uninterrupted, 30)
  assert uninterrupted.epoch() >= 1  # The stream crosses an epoch boundary.
  uninterrupted.close()
  for k in (1, 7, 19):
    first = make()
    take(first, k)
    state = json.loads(json.dumps(first.get_state()))
    first.close()
    resumed = make()
    resumed.set_state(state)
    assert all(batches_equal(x, y) for x, y in zip(take(resumed, 30 - k), reference[k:]))
    resumed.close()


def test_the_worker_count_does_not_change_the_batches(config, vocab):
  """Reading threads and grain worker processes only change who tokenizes, so batches (and a
  state saved with one count and resumed with another) are the same."""
  reference = take(train_loader(config, vocab), 6)
  for threads, processes in ((0, 0), (3, 0), (0, 1)):
    changed = dataclasses.replace(config, num_workers=threads, worker_processes=processes)
    loader = train_loader(changed, vocab)
    assert all(batches_equal(x, y) for x, y in zip(take(loader, 3), reference))
    state = loader.get_state()
    loader.close()
    resumed = train_loader(config, vocab)
    resumed.set_state(state)
    assert all(batches_equal(x, y) for x, y in zip(take(resumed, 3), reference[3:]))
    resumed.close()


def test_training_shards_read_disjoint_documents(config, vocab):
  shards = 4
  loaders = [train_loader(config, vocab, batch_size=8, shard=s, shards=shards) for s in range(shards)]
  documents = [set() for _ in loaders]
  for shard, loader in enumerate(loaders):
    stream = pipeline.TaskStream(loader.tasks[0], seed=1, shard=shard, shards=shards, shuffle=True,
                                 num_epochs=None, read_threads=0, worker_processes=0)
    epoch = stream.prepared.num_documents
    documents[shard] = set(stream.documents(np.arange(-(-(epoch - shard) // shards))).tolist())
    # The next epoch is another permutation.
    assert not np.array_equal(stream.documents(np.arange(10)),
                              stream.documents(np.arange(10) + -(-epoch // shards) * 3))
    assert next(loader)["encoder_input_tokens"].shape[0] == 8 // shards
    loader.close()
  assert sum(len(d) for d in documents) == loaders[0].tasks[0].num_documents
  assert set().union(*documents) == set(range(loaders[0].tasks[0].num_documents))


@pytest.mark.parametrize("processes", [2, 4])
def test_eval_processes_split_the_global_batches(config, vocab, processes):
  whole = list(eval_loader(config, vocab))
  parts = []
  for i in range(processes):
    loader = eval_loader(config, vocab)
    loader.keep_rows(i, processes)
    parts.append(list(loader))
  assert all(len(p) == len(whole) for p in parts)
  for b, batch in enumerate(whole):
    joined = {k: np.concatenate([p[b][k] for p in parts]) for k in batch}
    assert batches_equal(joined, batch)


def test_eval_yields_every_example_once_with_padded_final_batch(config, vocab):
  config.concatenate_documents = False
  loader = eval_loader(config, vocab, batch_size=16)
  batches = list(loader)
  assert list(loader) == []  # Exhausted, stays exhausted.
  seen = [e for b in batches for e in unpack(b)]
  assert len(seen) == loader.examples_seen == len(set(seen))
  last = batches[-1]
  assert last["encoder_input_tokens"].shape[0] == 16
  empty = last["decoder_segment_ids"].max(axis=1) == 0
  assert empty.any()
  for key in BATCH_KEYS:
    assert not last[key][empty].any()


def test_make_loaders_and_bad_arguments(config, vocab):
  experiment = ExperimentConfig(data=config, train=TrainConfig(batch_size=4, seed=0))
  config.max_eval_examples = 3
  loader = make_eval_loader(experiment, vocab, 1, 2)
  assert loader.tasks[0].num_documents == 3 and next(loader)["decoder_loss_weights"].shape == (2, 32)
  loader.close()
  training = make_train_loader(experiment, vocab)
  assert next(training)["encoder_input_tokens"].shape == (4, 128)
  training.close()
  with pytest.raises(DataError, match="multiple of the 3 stream"):
    train_loader(config, vocab, shard=0, shards=3)
  with pytest.raises(DataError, match="no split 'tset'"):
    train_loader(config, vocab, split="tset")
  with pytest.raises(DataError, match="Loader state must have keys"):
    training.set_state({"epoch": 0})
  with pytest.raises(DataError, match="saved by a run reading other tasks"):
    training.loaders[0].set_state({"batch": 0})
  with pytest.raises(DataError, match="noise spans.*0 extra ids"):
    train_loader(config, SentencePieceVocabulary(vocab.serialized, extra_ids=0))
  with pytest.raises(DataError, match="no feature 'body'.*Set data.text_feature"):
    train_loader(dataclasses.replace(config, text_feature="body"), vocab)


def test_prefix_lm_objective(config, vocab):
  config.objective = "prefix_lm"
  seen = [e for b in eval_loader(config, vocab) for e in unpack(b)]
  assert seen and all(i[-1] == EOS_ID and t[-1] == EOS_ID for i, t in seen)
  assert all(len(i) + len(t) == config.inputs_length + 2 for i, t in seen[:-1])  # Full chunks.


def test_ul2_objective_tags_each_example_with_its_mode(config, vocab):
  config = dataclasses.replace(config, objective="ul2", inputs_length=256, targets_length=128)
  seen = [e for b in take(train_loader(config, vocab, batch_size=8), 4) for e in unpack(b)]
  modes = {tuple(vocab.encode(m).tolist()) for m in ("[NLU]", "[NLG]", "[S2S]")}
  starts = [next(m for m in modes if i[:len(m)] == m) for i, _ in seen]
  assert len(set(starts)) >= 2


def test_sharded_stream_is_the_same_on_any_number_of_processes(config, vocab):
  """With data.shards fixed, 1, 2 or 4 processes together yield the same global batches,
  each reading only its own shards, and a state gathered from all of them resumes on 1."""
  def global_batches(process_count, count=3, state=None):
    loaders = [pipeline.ShardedLoader(config, vocab, split="train", batch_size=8, seed=3, shards=4,
                                      process_index=i, process_count=process_count)
               for i in range(process_count)]
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
    assert all(batches_equal(a, b) for a, b in zip(batches, single))
  _, state_after_2 = global_batches(2, count=2)
  resumed, _ = global_batches(1, count=3, state=state_after_2)
  assert all(batches_equal(a, b) for a, b in zip(resumed, single[2:]))
  with pytest.raises(DataError, match="multiple of the process count"):
    pipeline.ShardedLoader(config, vocab, split="train", batch_size=8, seed=0, shards=3, process_count=2)


def test_more_shards_than_documents_says_so(config, vocab):
  with pytest.raises(DataError, match="has 3 documents, fewer than the 4 training streams .*"
                                      "Lower data.shards, or add data"):
    train_loader(config, vocab, batch_size=8, shard=3, shards=4, max_documents=3)
  # Evaluation builds whole batches on every process, so any count of documents is fine.
  loader = eval_loader(config, vocab, max_documents=3)
  loader.keep_rows(3, 4)
  assert list(loader)


# ----- tasks and mixtures ------------------------------------------------------------------------

def _number_records(split: str):
  """A generator source: 'count: N' documents, a different range per split."""
  first = 0 if split == "train" else 10_000
  return ({"words": " ".join(["count", str(n)] * 40)} for n in range(first, first + 300))


@pytest.fixture
def two_tasks(config):
  register_task(Task("test_docs", DatasetSource("python_docs")))
  register_task(Task(
      "test_numbers", GeneratorSource(_number_records, "numbers"), PrefixLM(), text_feature="text",
      preprocessors=(lambda r: {"text": r["words"].upper()},)))
  register_mixture(Mixture("test_mix", (("test_docs", 3.0), ("test_numbers", 1.0))))
  return dataclasses.replace(config, dataset="test_mix")


def test_a_mixture_samples_its_tasks_at_their_rates_and_resumes_exactly(two_tasks, vocab):
  config = two_tasks
  loader = train_loader(config, vocab, batch_size=8)
  assert loader.task_names == ["test_docs", "test_numbers"] and loader.rates == [0.75, 0.25]
  reference = take(loader, 24)
  share = loader.task_examples["test_docs"] / loader.examples_seen
  assert 0.65 < share < 0.85
  upper = [e for b in reference for e in unpack(b) if vocab.encode("COUNT").tolist()[0] in e[0]]
  assert upper  # The numbers task's preprocessor ran.
  loader.close()
  for k in (3, 11):
    first = train_loader(config, vocab, batch_size=8)
    take(first, k)
    state = json.loads(json.dumps(first.get_state()))
    first.close()
    resumed = train_loader(config, vocab, batch_size=8)
    resumed.set_state(state)
    assert all(batches_equal(x, y) for x, y in zip(take(resumed, 24 - k), reference[k:]))
    resumed.close()


def test_a_mixture_is_evaluated_task_by_task(two_tasks, vocab):
  config = two_tasks
  experiment = ExperimentConfig(data=config, train=TrainConfig(batch_size=4))
  assert [t.name for t in pipeline.eval_tasks(experiment)] == ["test_docs", "test_numbers"]
  loader = make_eval_loader(experiment, vocab, task="test_numbers")
  assert loader.task_names == ["test_numbers"] and list(loader)
  with pytest.raises(DataError, match="mixes tasks"):
    make_eval_loader(experiment, vocab)


def test_a_task_whose_records_lack_the_feature_fails_before_work(config, vocab):
  register_task(Task("test_no_text", GeneratorSource(_number_records)))
  with pytest.raises(DataError, match="'test_no_text'.*no feature 'text'.*they have: words"):
    train_loader(dataclasses.replace(config, dataset="test_no_text"), vocab)
  with pytest.raises(DataError, match="'test_no_text'.*no feature 'text'"):
    pipeline.check_data(dataclasses.replace(config, dataset="test_no_text"), vocab)


def test_tasks_of_a_mixture_must_share_a_vocabulary(config, vocab, tmp_path):
  from t5x_lite.data import Feature
  for name in ("one", "two"):
    (tmp_path / f"{name}.model").write_bytes(vocab.serialized + name.encode())
    path = str(tmp_path / f"{name}.model")
    register_task(Task(f"test_vocab_{name}", DatasetSource("python_docs"),
                       output_features={"inputs": Feature(path), "targets": Feature(path)}))
  register_mixture(Mixture("test_vocab_mix", ("test_vocab_one", "test_vocab_two"), default_rate=1.0))
  with pytest.raises(DataError, match="disagree on their vocabulary: test_vocab_one: .*one.model; "
                                      "test_vocab_two: .*two.model"):
    train_loader(dataclasses.replace(config, dataset="test_vocab_mix"), vocab)


def test_a_span_corruption_task_with_its_own_settings(config, vocab):
  register_task(Task("test_long_spans", DatasetSource("python_docs"), SpanCorruption(0.3, 8.0)))
  loader = train_loader(dataclasses.replace(config, dataset="test_long_spans"), vocab)
  examples = unpack(next(loader))
  loader.close()
  sentinels = [sum(1 for x in t if x >= vocab.pieces) for _, t in examples]
  assert max(sentinels) <= 128 * 0.3 / 8 + 2


EXIT_SCRIPT = """
import sys
from t5x_lite.config import DataConfig, ExperimentConfig, TrainConfig
from t5x_lite.data import load_vocabulary, make_train_loader

data = DataConfig(data_dir=sys.argv[1], vocabulary=sys.argv[2], inputs_length=128,
                  targets_length=32)
loader = make_train_loader(ExperimentConfig(data=data, train=TrainConfig(batch_size=4)),
                           load_vocabulary(sys.argv[2], data.vocab_extra_ids))
next(loader)  # Exits without close(), the prefetch thread still tokenizing.
"""


def test_loaders_left_open_let_the_interpreter_exit(base_config, vocab, tmp_path):
  """A prefetch thread left running inside SentencePiece must not abort the exit (rc 134)."""
  del vocab
  script = tmp_path / "one_batch.py"
  script.write_text(EXIT_SCRIPT)
  done = subprocess.run([sys.executable, str(script), base_config.data_dir,
                         vocabulary_cache_path(base_config)], capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("permuted_up_to", [1 << 22, 10])
def test_document_order_is_a_new_permutation_each_epoch_split_among_shards(monkeypatch, permuted_up_to):
  """Both ways of ordering (a NumPy permutation for small datasets, grain's index_shuffle for
  large ones): every epoch visits each document once, the shards share it out, epochs differ."""
  monkeypatch.setattr(pipeline.DocumentOrder, "_PERMUTED", permuted_up_to)
  n, shards = 50, 3
  orders = [pipeline.DocumentOrder(n, seed=7, shard=s, shards=shards, shuffle=True) for s in range(shards)]
  positions = np.arange(2 * n)  # Enough positions for every shard to reach past two epochs.
  by_epoch = {0: [], 1: []}
  for shard, order in enumerate(orders):
    epochs = (shard + positions * shards) // n
    documents = order.documents(positions)
    for epoch in (0, 1):
      by_epoch[epoch] += documents[epochs == epoch].tolist()
  assert sorted(by_epoch[0]) == sorted(by_epoch[1]) == list(range(n))
  assert by_epoch[0] != by_epoch[1]
  unshuffled = pipeline.DocumentOrder(n, seed=7, shard=1, shards=shards, shuffle=False)
  assert unshuffled.documents(np.arange(3)).tolist() == [1, 4, 7]


def test_a_copy_of_the_tasks_vocabulary_is_the_same_vocabulary(vocab, tmp_path):
  """A run keeps its vocabulary in the workdir and reads that copy from then on."""
  from t5x_lite.data import Feature
  original, copy, other = tmp_path / "task.model", tmp_path / "copy.model", tmp_path / "other.model"
  original.write_bytes(vocab.serialized)
  copy.write_bytes(vocab.serialized)
  other.write_bytes(vocab.serialized + b"x")
  task = Task("test_own_vocab", DatasetSource("python_docs"),
              output_features={"inputs": Feature(str(original)), "targets": Feature(str(original))})
  pipeline.check_vocabularies([task], str(copy))
  with pytest.raises(DataError, match="The tasks read vocabulary .*task.model, but data.vocabulary is"):
    pipeline.check_vocabularies([task], str(other))


def test_a_misspelt_task_name_lists_the_registered_ones(config):
  register_task(Task("test_docs", DatasetSource("python_docs")))
  with pytest.raises(DataError, match="Dataset 'test_dosc' not found.*Nor is 'test_dosc' a registered "
                                      "task or mixture: those are .*test_docs"):
    pipeline.prepare_data(dataclasses.replace(config, dataset="test_dosc"))


@pytest.mark.parametrize("objective", [SpanCorruption(), Seq2Seq()])
@pytest.mark.parametrize("concatenate", [True, False])
def test_a_task_whose_preprocessors_drop_everything_is_an_error_not_a_hang(config, vocab, objective,
                                                                           concatenate):
  register_task(Task("test_all_dropped", GeneratorSource(_number_records), objective,
                     preprocessors=(lambda record: None,),
                     concatenate_documents=concatenate))
  loader = train_loader(dataclasses.replace(config, dataset="test_all_dropped"), vocab)
  with pytest.raises(DataError, match="a whole epoch of a Python generator train gave no example") as raised:
    next(loader)
  assert not getattr(raised.value, "__notes__", [])
  loader.close()
