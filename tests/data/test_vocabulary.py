import dataclasses
import os
import re

import numpy as np
import pytest
from data_helpers import VOCAB_PIECES

from t5x_lite.cli.main import main
from t5x_lite.data import DataError, Vocabulary, get_vocabulary, train_vocabulary
from t5x_lite.data.vocabulary import vocabulary_cache_path

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
  assert os.path.getmtime(path) == mtime and again.model_proto == vocab.model_proto
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
  with pytest.raises(DataError, match="does not exist"):
    Vocabulary(str(tmp_path / "missing.model"))


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
                                      "data.vocabulary to a .model file"):
    Vocabulary(str(path))
  path.write_bytes(b"")
  with pytest.raises(DataError, match="is not a SentencePiece model"):
    Vocabulary(str(path))
  with pytest.raises(DataError, match="The model bytes given is not a SentencePiece model"):
    Vocabulary(b"garbage")


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
