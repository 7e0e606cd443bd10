"""Vocabularies with T5's conventions: the interface every user of one reads (Vocabulary), a
SentencePiece model (SentencePieceVocabulary), UTF-8 bytes (ByteVocabulary, ByT5's), how
data.vocabulary or a run's vocabulary file becomes one (load_vocabulary), and SentencePiece
training with a cached automatic step.

Both kinds have pad 0, EOS 1, UNK 2, no BOS, and `extra_ids` sentinels (<extra_id_N>) after their
own ids; the size the model sees is rounded up to a multiple of 128.
- SentencePiece: the model's pieces, then the sentinels counted down from the top as in T5
  (sentinel 0 = pieces + extra_ids - 1); 32000 pieces + 100 extra ids -> 32128.
- Bytes: byte b of the UTF-8 text is id b + 3, then the sentinels counted up (sentinel i =
  259 + i), where transformers' ByT5Tokenizer puts <extra_id_i>; ByT5's 125 extra ids fill its
  384 ids, and any count up to 125 gives the same sentinel ids and size.

Trained vocabularies keep text exactly: identity normalization, no whitespace folding, and byte
fallback for anything not in the pieces (newlines, tabs, rare characters), so decode(encode(x))
== x. One character is not preserved: U+2581 ("▁", SentencePiece's space marker) decodes as " ".
"""

from __future__ import annotations

import abc
import hashlib
import io
import os
import re
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import sentencepiece as spm

from t5x_lite.config import DataConfig
from t5x_lite.data import sources
from t5x_lite.data.errors import DataError
from t5x_lite.fileio import write_atomically

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
PAD_TO_MULTIPLE = 128
# Sentences longer than this many bytes are cut before training (SentencePiece skips them).
_MAX_SENTENCE_BYTES = 4096
# data.vocabulary's name for the byte vocabulary.
BYTES = "bytes"
# The byte vocabulary as a file (what a workdir keeps): JSON, which no SentencePiece model is.
_BYTE_VOCABULARY_FILE = b'{"vocabulary": "bytes"}\n'
# Byte b is id b + 3 (after pad, EOS and UNK); the sentinels follow the 256 bytes.
_FIRST_BYTE_ID = 3
_FIRST_BYTE_SENTINEL = _FIRST_BYTE_ID + 256
# The extra ids of transformers' ByT5Tokenizer: 3 + 256 + 125 = ByT5's 384 ids.
BYT5_EXTRA_IDS = 125
_CHOICES = ('Set data.vocabulary to a SentencePiece .model file (`t5x-lite train-vocab` writes '
            'one), to "bytes" for UTF-8 bytes (ByT5\'s vocabulary), or to "" to train one on the '
            'training split.')


def padded_size(ids: int) -> int:
  """`ids` rounded up to a multiple of 128, the embedding size T5 uses (32100 -> 32128)."""
  return -(-ids // PAD_TO_MULTIPLE) * PAD_TO_MULTIPLE


class Vocabulary(abc.ABC):
  """What the data pipeline, the objectives, evaluation and inference use of a vocabulary, so
  each works with any kind. Instances pickle (grain's worker processes get them that way)."""

  def __init__(self, extra_ids: int):
    self.extra_ids = extra_ids

  @property
  @abc.abstractmethod
  def unpadded_size(self) -> int:
    """Ids in use: the vocabulary's own plus the extra ids."""

  @property
  def vocab_size(self) -> int:
    """Embedding size for the model: unpadded_size rounded up to a multiple of 128."""
    return padded_size(self.unpadded_size)

  @property
  @abc.abstractmethod
  def sentinel_ids(self) -> np.ndarray:
    """Ids of <extra_id_0>, <extra_id_1>, ... (int32, extra_ids of them): span corruption
    gives noise span i sentinel_ids[i]."""

  def sentinel(self, i: int) -> int:
    """Id of <extra_id_i>."""
    if not 0 <= i < self.extra_ids:
      raise ValueError(f"Sentinel {i} out of range: this vocabulary has {self.extra_ids} extra ids.")
    return int(self.sentinel_ids[i])

  @property
  @abc.abstractmethod
  def serialized(self) -> bytes:
    """The vocabulary as a file: what a run keeps in its workdir and load_vocabulary reads."""

  @abc.abstractmethod
  def encode(self, text: str | bytes) -> np.ndarray:
    """Token ids of `text` (int32, no EOS)."""

  def encode_batch(self, texts: Sequence[str | bytes], num_threads: int = 1) -> list[np.ndarray]:
    """encode() of many texts; `num_threads` is a hint a kind may use."""
    del num_threads
    return [self.encode(text) for text in texts]

  @abc.abstractmethod
  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`: stops at EOS, skips padding, renders sentinels as <extra_id_N>."""


class SentencePieceVocabulary(Vocabulary):
  """A SentencePiece model plus T5's sentinel ids; encode/decode never fail on odd bytes."""

  def __init__(self, model: str | bytes, extra_ids: int = 100):
    """`model` is a path to a .model file or the serialized model itself."""
    super().__init__(extra_ids)
    name = "The model bytes given"
    if isinstance(model, str):
      if not os.path.isfile(model):
        raise DataError(f"Vocabulary file {model!r} does not exist. {_CHOICES}")
      name = f"File {model!r}"
      with open(model, "rb") as f:
        model = f.read()
    not_a_model = DataError(f"{name} is not a SentencePiece model. {_CHOICES}")
    if not model:  # SentencePiece takes empty bytes for "no model" and raises nothing.
      raise not_a_model
    self._model_proto = model
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=model)
    except RuntimeError as e:
      raise not_a_model from e
    if (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id()) != (PAD_ID, EOS_ID, UNK_ID):
      raise DataError(
          f"SentencePiece model has pad/eos/unk ids {self._sp.pad_id()}/{self._sp.eos_id()}/"
          f"{self._sp.unk_id()}; T5 needs 0/1/2. Train it with pad_id=0 eos_id=1 unk_id=2 bos_id=-1 "
          "(`t5x-lite train-vocab` does).")

  def __getstate__(self) -> dict:
    """Pickled as its model: the SentencePiece processor itself does not pickle."""
    return {"model": self._model_proto, "extra_ids": self.extra_ids}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state["model"], extra_ids=state["extra_ids"])

  @property
  def serialized(self) -> bytes:
    return self._model_proto

  @property
  def pieces(self) -> int:
    """Number of SentencePiece pieces (ids below this are ordinary tokens)."""
    return self._sp.get_piece_size()

  @property
  def unpadded_size(self) -> int:
    """Pieces plus extra ids: the size sentinels are counted down from."""
    return self.pieces + self.extra_ids

  @property
  def first_sentinel(self) -> int:
    """Id of sentinel 0 (<extra_id_0>), the last of the unpadded ids."""
    return self.unpadded_size - 1

  @property
  def sentinel_ids(self) -> np.ndarray:
    return (self.first_sentinel - np.arange(self.extra_ids)).astype(np.int32)

  def encode(self, text: str | bytes) -> np.ndarray:
    """Token ids of `text` (int32, no EOS). Bytes are read as UTF-8, bad bytes as U+FFFD."""
    return self._sp.encode(_as_text(text), return_type="numpy").astype(np.int32, copy=False)

  def encode_batch(self, texts: Sequence[str | bytes], num_threads: int = 1) -> list[np.ndarray]:
    """encode() of many texts at once, using SentencePiece's own threads."""
    encoded = self._sp.encode([_as_text(t) for t in texts], return_type="numpy",
                              num_threads=num_threads)
    return [ids.astype(np.int32, copy=False) for ids in encoded]

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`: stops at EOS, skips padding, renders sentinels as <extra_id_N>.

    Ids past the vocabulary (the padding up to a multiple of 128) decode as UNK. Byte pieces
    that do not form valid UTF-8 become U+FFFD.
    """
    out: list[str] = []
    segment: list[int] = []
    for i in (int(x) for x in ids):
      if i == EOS_ID:
        break
      if i == PAD_ID:
        continue
      if self.pieces <= i < self.unpadded_size:
        out.append(self._decode_segment(segment, first=not out))
        out.append(f"<extra_id_{self.first_sentinel - i}>")
        segment = []
      else:
        segment.append(i if 0 <= i < self.pieces else UNK_ID)
    out.append(self._decode_segment(segment, first=not out))
    return "".join(out)

  def _decode_segment(self, ids: list[int], first: bool) -> str:
    if not ids:
      return ""
    text = self._sp.decode(ids, return_type=bytes).decode("utf-8", errors="replace")
    # SentencePiece drops the leading space of a sequence as its "dummy prefix"; after a
    # sentinel that space is real text, so put it back.
    if not first and self._sp.id_to_piece(ids[0]).startswith("▁"):
      text = " " + text
    return text


class ByteVocabulary(Vocabulary):
  """UTF-8 bytes as ids, as ByT5 and transformers' ByT5Tokenizer: no model to train, no text it
  cannot encode. Text and ids convert as ByT5Tokenizer does, except that encode reads
  "<extra_id_0>", "</s>" and the like as the characters they are (as SentencePieceVocabulary
  does), and decode stops at EOS and skips padding."""

  def __init__(self, extra_ids: int = BYT5_EXTRA_IDS):
    super().__init__(extra_ids)

  @property
  def unpadded_size(self) -> int:
    return _FIRST_BYTE_SENTINEL + self.extra_ids

  @property
  def sentinel_ids(self) -> np.ndarray:
    return np.arange(_FIRST_BYTE_SENTINEL, self.unpadded_size, dtype=np.int32)

  @property
  def serialized(self) -> bytes:
    return _BYTE_VOCABULARY_FILE

  def encode(self, text: str | bytes) -> np.ndarray:
    """Ids of the bytes of `text`: bytes as they are, a str as UTF-8 (a lone surrogate as "?")."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", errors="replace")
    return np.frombuffer(data, np.uint8).astype(np.int32) + _FIRST_BYTE_ID

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`: stops at EOS, skips padding, renders sentinels as <extra_id_N> and UNK
    (and ids past the sentinels) as <unk>; bytes that are not valid UTF-8 are dropped, as
    ByT5Tokenizer drops them."""
    out = bytearray()
    for i in (int(x) for x in ids):
      if i == EOS_ID:
        break
      if i == PAD_ID:
        continue
      if _FIRST_BYTE_ID <= i < _FIRST_BYTE_SENTINEL:
        out.append(i - _FIRST_BYTE_ID)
      elif _FIRST_BYTE_SENTINEL <= i < self.unpadded_size:
        out += f"<extra_id_{i - _FIRST_BYTE_SENTINEL}>".encode()
      else:
        out += b"<unk>"
    return out.decode("utf-8", errors="ignore")


def holds_byte_vocabulary(path: str) -> bool:
  """Whether `path` is the byte vocabulary's file (ByteVocabulary.serialized)."""
  if not os.path.isfile(path) or os.path.getsize(path) != len(_BYTE_VOCABULARY_FILE):
    return False
  with open(path, "rb") as f:
    return f.read() == _BYTE_VOCABULARY_FILE


def load_vocabulary(path_or_name: str, extra_ids: int) -> Vocabulary:
  """The vocabulary data.vocabulary names: "bytes", or a file holding a vocabulary (the
  byte vocabulary's, or a SentencePiece model), such as the one a run keeps in its workdir."""
  if path_or_name == BYTES or holds_byte_vocabulary(path_or_name):
    return ByteVocabulary(extra_ids)
  return SentencePieceVocabulary(path_or_name, extra_ids)  # Says why a path is neither.


def vocabulary_digest(path_or_name: str) -> Optional[str]:
  """sha256 of the file that holds the vocabulary data.vocabulary names ("bytes": its file as
  a workdir keeps it), so a name and a run's copy compare equal; None if there is no such file."""
  if path_or_name == BYTES:
    content = _BYTE_VOCABULARY_FILE
  elif os.path.isfile(path_or_name):
    with open(path_or_name, "rb") as f:
      content = f.read()
  else:
    return None
  return hashlib.sha256(content).hexdigest()


def _as_text(text: str | bytes) -> str:
  if isinstance(text, bytes):
    return text.decode("utf-8", errors="replace")
  # Lone surrogates cannot go to SentencePiece; they become "?".
  return text.encode("utf-8", errors="replace").decode("utf-8")


def train_vocabulary(
    texts: Iterable[str | bytes],
    model_prefix: str,
    vocab_size_pieces: int,
    *,
    max_characters: int = 20_000_000,
    max_sentences: int = 1_000_000,
    num_threads: int = 2,
    size_name: str = "vocab_size_pieces",
) -> str:
  """Trains a unigram SentencePiece model on `texts` and writes `model_prefix`.model.

  Reads at most `max_characters` of text (so C4 takes minutes, not hours) in lines of at most
  4 KiB. Writes atomically (temporary file, then rename). Returns the path of the .model file.
  Errors call the size `size_name`: how the user sets it (a flag or a config key).
  """
  if vocab_size_pieces < 1:
    raise DataError(f"{size_name}={vocab_size_pieces} must be positive.")
  if not os.path.basename(model_prefix) or os.path.isdir(model_prefix):
    raise DataError(
        f"The model prefix {model_prefix!r} names a directory; give a file prefix such as "
        f"{os.path.join(model_prefix, 'spm')!r} (which writes {os.path.join(model_prefix, 'spm.model')!r}).")
  path = model_prefix + ".model"
  stream = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=_training_lines(texts, max_characters),
        model_writer=stream,
        vocab_size=vocab_size_pieces,
        model_type="unigram",
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        byte_fallback=True,
        split_digits=True,
        input_sentence_size=max_sentences,
        shuffle_input_sentence=True,
        max_sentence_length=_MAX_SENTENCE_BYTES,
        num_threads=num_threads,
        minloglevel=2,
    )
  except RuntimeError as e:
    raise DataError(_training_error(str(e), vocab_size_pieces, size_name)) from e
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  write_atomically(path, stream.getvalue())
  return path


def _training_error(message: str, pieces: int, size_name: str) -> str:
  """SentencePiece's error in t5x-lite's terms, with the valid bound where SentencePiece gives it."""
  too_small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
  if too_small:
    return (f"{size_name}={pieces} is too small for this text: one piece per distinct character, "
            f"plus the byte and special pieces, needs at least {too_small[1]}. Raise {size_name} "
            f"to {too_small[1]} or more.")
  too_large = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", message)
  if too_large:
    return (f"{size_name}={pieces} is too large for this text: it supports at most {too_large[1]} "
            f"pieces. Lower {size_name} to {too_large[1]} or less, or train on more text.")
  return f"Training a {pieces}-piece SentencePiece vocabulary failed: {message}"


def _training_lines(texts: Iterable[str | bytes], max_characters: int):
  """Non-empty lines of the texts, each cut to SentencePiece's sentence limit, up to a budget."""
  budget = max_characters
  for text in texts:
    for line in _as_text(text).split("\n"):
      if not line.strip():
        continue
      line = line.encode("utf-8")[:_MAX_SENTENCE_BYTES].decode("utf-8", errors="ignore")
      yield line
      budget -= len(line)
      if budget <= 0:
        return


def vocabulary_cache_path(data_config: DataConfig) -> str:
  """Where the vocabulary trained for this dataset lives: next to its data.

  The name holds the pieces and the features trained on (vocab_800_text.model,
  vocab_800_inputs+targets.model), so one trained on other text is never reused.
  """
  features = "+".join(re.sub(r"[^A-Za-z0-9_.-]", "_", f) for f in sources.text_features(data_config))
  filename = f"vocab_{data_config.vocab_train_size}_{features}.model"
  return os.path.join(sources.dataset_path(data_config.dataset, data_config.data_dir), filename)


def shuffled_texts(source: sources.TextSource, block: int = 256) -> Iterator[str]:
  """The features of every record in a fixed random order (a fair sample when capped)."""
  order = np.random.default_rng(0).permutation(len(source))
  for start in range(0, len(order), block):
    for record in source.get(order[start:start + block]):
      yield from record


def get_vocabulary(data_config: DataConfig) -> Vocabulary:
  """The configured vocabulary: data.vocabulary if set (load_vocabulary), else a SentencePiece
  model trained once and cached.

  The trained model (data.vocab_train_size pieces, on data.train_split's text, or inputs and
  targets for seq2seq) is cached at vocabulary_cache_path(data_config) and reused.
  In a multi-process run, call this on process 0 first (then synchronise) so all share one file.
  """
  if data_config.vocabulary:
    return load_vocabulary(data_config.vocabulary, data_config.vocab_extra_ids)
  path = vocabulary_cache_path(data_config)
  if not os.path.isfile(path):
    source = sources.open_source(
        data_config.dataset, data_config.train_split, data_config.data_dir,
        sources.text_features(data_config))
    train_vocabulary(shuffled_texts(source), path[:-len(".model")], data_config.vocab_train_size,
                     size_name="data.vocab_train_size")
  return SentencePieceVocabulary(path, extra_ids=data_config.vocab_extra_ids)


