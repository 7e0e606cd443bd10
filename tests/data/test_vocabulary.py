import dataclasses
import hashlib
import os
import pickle
import re

import numpy as np
import pytest
from data_helpers import VOCAB_PIECES, unpack

from t5x_lite.cli.main import main
from t5x_lite.config import ExperimentConfig
from t5x_lite.data import (
  ByteVocabulary,
  DataError,
  DatasetSource,
  Feature,
  Loader,
  SentencePieceVocabulary,
  Task,
  get_vocabulary,
  load_vocabulary,
  pipeline,
  train_vocabulary,
)
from t5x_lite.data.vocabulary import vocabulary_cache_path, vocabulary_digest

TEXTS = [
    "Hello  world,\tspaced   out.\n\nNew paragraph\n",
    "  leading spaces and CamelCase and UPPER and 12345",
    "Ünïcödé, 漢字 and emoji 😀 stay intact.",
    "def f(x):\n    return x  # indented code\n",
]


def test_conventions_and_sizes(vocab):
  assert vocab.pieces == VOCAB_PIECES
  assert vocab.unpadded_size == VOCAB_PIECES + 100
  assert vocab.vocab_size == 1024 and vocab.vocab_size % 128 == 0
  assert vocab.first_sentinel == vocab.sentinel(0) == VOCAB_PIECES + 99
  assert vocab.sentinel(99) == VOCAB_PIECES
  assert vocab.sentinel_ids.tolist() == list(range(VOCAB_PIECES + 99, VOCAB_PIECES - 1, -1))
  ids = vocab.encode("abc def")
  assert ids.dtype == np.int32 and 1 not in ids.tolist() and 0 not in ids.tolist()


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(vocab, text):
  assert vocab.decode(vocab.encode(text)) == text


def test_decode_stops_at_eos_skips_pad_and_renders_sentinels(vocab):
  text = "The quick brown fox jumps"
  ids = vocab.encode(text).tolist()
  for k in range(1, len(ids)):
    marked = ids[:k] + [vocab.sentinel(0), 0, 0] + ids[k:] + [vocab.sentinel(3), 1] + ids
    decoded = vocab.decode(marked)
    assert decoded.endswith("<extra_id_3>") and decoded.count("<extra_id_0>") == 1
    assert decoded.replace("<extra_id_0>", "").replace("<extra_id_3>", "") == text
  assert vocab.decode([vocab.vocab_size - 1]) == vocab.decode([2])  # Padding ids read as UNK.


def test_invalid_utf8_is_replaced_not_fatal(vocab):
  assert vocab.decode(vocab.encode(b"ok \xff\xfe bytes")) == "ok \ufffd\ufffd bytes"
  byte_ff = vocab.encode("\u00ff")  # A character stored as two byte pieces (0xC3 0xBF).
  assert "\ufffd" in vocab.decode(byte_ff[-1:])  # Half a character.
  assert vocab.decode(vocab.encode("lone \ud800 surrogate")) == "lone ? surrogate"


def test_cached_and_reused(base_config, vocab):
  path = vocabulary_cache_path(base_config)
  assert os.path.isfile(path) and path.endswith(f"python_docs/vocab_{VOCAB_PIECES}_text.model")
  mtime = os.path.getmtime(path)
  again = get_vocabulary(base_config)
  assert os.path.getmtime(path) == mtime and again.serialized == vocab.serialized
  assert not [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]


def test_cache_name_holds_the_features_trained_on(base_config):
  other_feature = dataclasses.replace(base_config, text_feature="content")
  assert vocabulary_cache_path(other_feature) != vocabulary_cache_path(base_config)
  pairs = dataclasses.replace(base_config, objective="seq2seq", inputs_feature="question",
                              targets_feature="answer/text v2")
  assert os.path.basename(vocabulary_cache_path(pairs)) == (
      f"vocab_{VOCAB_PIECES}_question+answer_text_v2.model")


def test_explicit_path_and_missing_path(base_config, vocab, tmp_path):
  base_config = dataclasses.replace(base_config, vocabulary=vocabulary_cache_path(base_config))
  assert get_vocabulary(base_config).pieces == vocab.pieces
  with pytest.raises(DataError, match=r"'.*missing.model' does not exist\. Set data.vocabulary to a "
                                      r'SentencePiece .model file .*, to "bytes" for UTF-8 bytes'):
    load_vocabulary(str(tmp_path / "missing.model"), 100)


@pytest.mark.parametrize("texts, pieces, message", [
    (["a tiny corpus of a few words"] * 5, 5000,
     r"--vocab-size=5000 is too large for this text: it supports at most (\d+) pieces. Lower "
     r"--vocab-size to \1 or less"),
    (["".join(map(chr, range(0x4E00, 0x4E00 + 300)))] * 3, 200,
     r"--vocab-size=200 is too small for this text: .* needs at least (\d+). Raise --vocab-size to "
     r"\1 or more"),
    (["text"], 0, "--vocab-size=0 must be positive"),
])
def test_vocabulary_size_errors_give_the_valid_range(tmp_path, texts, pieces, message):
  with pytest.raises(DataError, match=message):
    train_vocabulary(texts, str(tmp_path / "v"), pieces, size_name="--vocab-size")


def test_too_small_vocabulary_for_training_names_the_config_key(base_config):
  with pytest.raises(DataError, match="data.vocab_train_size=100 is too small"):
    get_vocabulary(dataclasses.replace(base_config, vocab_train_size=100))


def test_a_file_that_is_not_a_model(tmp_path):
  path = tmp_path / "script.py"
  path.write_text("print('not a model')\n")
  with pytest.raises(DataError, match=r"File '.*script.py' is not a SentencePiece model\. Set "
                                      r'data.vocabulary to a SentencePiece .model file .*, to "bytes" '
                                      r'for UTF-8 bytes .*, or to "" to train one'):
    load_vocabulary(str(path), 100)
  for content in (b"", b'{"vocabulary": "words"}\n'):
    path.write_bytes(content)
    with pytest.raises(DataError, match="is not a SentencePiece model"):
      load_vocabulary(str(path), 100)
  with pytest.raises(DataError, match="The model bytes given is not a SentencePiece model"):
    SentencePieceVocabulary(b"garbage")


@pytest.mark.parametrize("flags, message", [
    (["--text-feature", "body"], "has no feature 'body'; its features are: text. Set --text-feature "
                                 "to one of them."),
    (["--split", "tset"], "has no split 'tset'; its splits are: train, validation. Set --split "
                          "accordingly."),
    (["--dataset", "nothere"], "Check --dataset and --data-dir"),
])
def test_train_vocab_errors_name_its_flags(corpus_dir, vocab, tmp_path, capsys, flags, message):
  del vocab  # python_docs is built in corpus_dir.
  argv = ["train-vocab", "--data-dir", corpus_dir, "--output", str(tmp_path / "v"), *flags]
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert message in err
  assert not re.search(r"\bdata\.(dataset|data_dir|train_split|eval_split|text_feature)\b", err)


def test_an_output_prefix_naming_a_directory_is_refused(tmp_path):
  for prefix in (str(tmp_path) + os.sep, str(tmp_path)):
    with pytest.raises(DataError, match="names a directory; give a file prefix"):
      train_vocabulary(["some text"] * 10, prefix, 50)
  assert os.listdir(tmp_path) == []


# ----- the byte vocabulary (ByT5's) ---------------------------------------------------------------

BYTE_TEXTS = ["plain ASCII, with  spaces,\ttabs and\nnewlines", "Ünïcödé, 漢字 and Ελληνικά",
              "emoji 😀👍🏽 and a flag 🇫🇷", "", "\x00 control \x7f characters"]


@pytest.fixture(name="byt5", scope="module")
def _byt5():
  """transformers' ByT5Tokenizer, which the byte vocabulary matches id for id."""
  return pytest.importorskip("transformers").ByT5Tokenizer()


def test_byte_vocabulary_encodes_and_decodes_as_byt5_tokenizer(byt5):
  vocab = ByteVocabulary()
  for text in BYTE_TEXTS:
    ids = vocab.encode(text)
    assert ids.dtype == np.int32 and ids.tolist() == byt5(text, add_special_tokens=False).input_ids
    assert vocab.decode(ids) == byt5.decode(ids) == text
  assert vocab.encode_batch(BYTE_TEXTS)[2].tolist() == vocab.encode(BYTE_TEXTS[2]).tolist()
  # Invalid UTF-8 (bytes as they are, half a character) is dropped; sentinels and UNK render as
  # ByT5Tokenizer renders them, also inside a character or between its bytes.
  broken = vocab.encode(b"ok \xff\xfe bytes \xf0\x9f\x98")
  assert vocab.decode(broken) == byt5.decode(broken) == "ok  bytes "
  e_acute = vocab.encode("é").tolist()
  for ids in ([vocab.sentinel(0), *vocab.encode(" a"), vocab.sentinel(124), 2, *vocab.encode("b")],
              [e_acute[0], vocab.sentinel(7), e_acute[1]], [vocab.sentinel(i) for i in range(125)]):
    assert vocab.decode(ids) == byt5.decode(ids)
  assert vocab.decode([vocab.sentinel(3)]) == "<extra_id_3>"


def test_byte_vocabulary_sizes_and_sentinels(byt5):
  vocab = ByteVocabulary()
  assert vocab.extra_ids == 125 and vocab.unpadded_size == len(byt5) == vocab.vocab_size == 384
  assert [vocab.sentinel(i) for i in range(125)] == byt5.convert_tokens_to_ids(
      [f"<extra_id_{i}>" for i in range(125)])
  # Counted up, so fewer extra ids keep each one's id and ByT5's size.
  fewer = ByteVocabulary(100)
  assert fewer.sentinel_ids.tolist() == vocab.sentinel_ids.tolist()[:100]
  assert fewer.unpadded_size == 359 and fewer.vocab_size == 384
  assert ByteVocabulary(126).vocab_size == 512
  with pytest.raises(ValueError, match="Sentinel 100 out of range: this vocabulary has 100 extra ids"):
    fewer.sentinel(100)


def test_byte_vocabulary_decode_stops_at_eos_skips_padding_and_reads_ids_past_the_sentinels_as_unk():
  vocab = ByteVocabulary(100)
  ids = [0, *vocab.encode("ab"), 0, vocab.sentinel(99), 359, 383, 384, 5000, -1, 1, *vocab.encode("cd")]
  assert vocab.decode(ids) == "ab<extra_id_99>" + "<unk>" * 5
  assert vocab.decode(np.array([1, 100])) == "" and vocab.decode([]) == ""
  assert vocab.encode("lone \ud800 surrogate").tolist() == vocab.encode("lone ? surrogate").tolist()


def test_vocabularies_pickle(vocab):
  """grain's worker processes get the vocabulary pickled."""
  for original in (vocab, ByteVocabulary(100)):
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is type(original) and copy.extra_ids == original.extra_ids
    assert copy.serialized == original.serialized
    assert copy.encode(TEXTS[2]).tolist() == original.encode(TEXTS[2]).tolist()


def test_load_vocabulary_of_each_kind(base_config, vocab, tmp_path):
  spiece = load_vocabulary(vocabulary_cache_path(base_config), 7)
  assert isinstance(spiece, SentencePieceVocabulary) and spiece.serialized == vocab.serialized
  assert spiece.extra_ids == 7
  named = load_vocabulary("bytes", 125)
  assert isinstance(named, ByteVocabulary) and named.extra_ids == 125
  # The byte vocabulary as a file, as a run keeps it: a short JSON document.
  path = tmp_path / "vocabulary.model"
  path.write_bytes(named.serialized)
  assert path.read_text() == '{"vocabulary": "bytes"}\n'
  from_file = load_vocabulary(str(path), 10)
  assert isinstance(from_file, ByteVocabulary) and from_file.extra_ids == 10
  # A name and a run's copy of it are the same vocabulary.
  assert vocabulary_digest("bytes") == vocabulary_digest(str(path)) == hashlib.sha256(
      path.read_bytes()).hexdigest()
  assert vocabulary_digest(str(tmp_path / "missing")) is None
  task = Task("test_bytes_task", DatasetSource("python_docs"),
              output_features={"inputs": Feature("bytes"), "targets": Feature("bytes")})
  pipeline.check_vocabularies([task], str(path))
  with pytest.raises(DataError, match="The tasks read vocabulary bytes, but data.vocabulary is"):
    pipeline.check_vocabularies([task], vocabulary_cache_path(base_config))


@pytest.mark.parametrize("objective", ["span_corruption", "prefix_lm", "ul2"])
def test_pipeline_batches_of_bytes(config, objective):
  """data.vocabulary="bytes" on the built-in corpus: sentinels 259, 260, ... in each example,
  UL2's mode tokens as bytes, no id outside the vocabulary."""
  config = dataclasses.replace(config, vocabulary="bytes", objective=objective, inputs_length=64,
                               targets_length=64)
  vocab = get_vocabulary(config)
  assert isinstance(vocab, ByteVocabulary) and vocab.vocab_size == 384
  loader = Loader(config, vocab, split="train", batch_size=2, seed=0)
  batch = next(loader)
  loader.close()
  assert batch["encoder_input_tokens"].max() < 384
  for inputs, targets in unpack(batch):
    sentinels = [t for t in inputs if t >= 259]
    assert sentinels == list(range(259, 259 + len(sentinels)))
    assert [t for t in targets if t >= 259] == sentinels
    assert "<unk>" not in vocab.decode(inputs) + vocab.decode(targets)
    if objective == "prefix_lm":
      assert not sentinels
    if objective == "ul2":
      assert re.match(r"\[(NLU|NLG|S2S)\]", vocab.decode(inputs))


def test_a_run_keeps_the_byte_vocabulary_and_resumes_with_it(corpus_dir, tmp_path):
  from t5x_lite.config import ConfigError  # pylint: disable=import-outside-toplevel
  from t5x_lite.training.loop import resolve_vocabulary  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "run")

  def resolve(vocabulary: str):
    config = ExperimentConfig()
    config.model.vocab_size = None
    config.data = dataclasses.replace(config.data, data_dir=corpus_dir, vocabulary=vocabulary)
    return resolve_vocabulary(config, workdir), config

  for _ in range(2):  # A new run, then its resumption with the same setting.
    vocab, config = resolve("bytes")
    assert isinstance(vocab, ByteVocabulary) and config.model.vocab_size == 384
    assert config.data.vocabulary == os.path.join(workdir, "vocabulary.model")
    assert isinstance(load_vocabulary(config.data.vocabulary, 100), ByteVocabulary)
  (tmp_path / "other.model").write_bytes(b"another vocabulary")
  with pytest.raises(ConfigError, match="was trained with its own vocabulary.model"):
    resolve(str(tmp_path / "other.model"))
