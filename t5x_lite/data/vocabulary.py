"""SentencePiece vocabulary with T5's conventions, its training, and a cached automatic step.

Ids: pad 0, EOS 1, UNK 2, no BOS; then the model's pieces; then `extra_ids` sentinels counted
down from the top (sentinel 0 = pieces + extra_ids - 1); the size the model sees is padded to a
multiple of 128 (32000 pieces + 100 extra ids -> 32128).

Trained vocabularies keep text exactly: identity normalization, no whitespace folding, and byte
fallback for anything not in the pieces (newlines, tabs, rare characters), so decode(encode(x))
== x. One character is not preserved: U+2581 ("▁", SentencePiece's space marker) decodes as " ".
"""

from __future__ import annotations

import io
import os
import re
from typing import Iterable, Iterator, Sequence

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


def padded_size(ids: int) -> int:
  """`ids` rounded up to a multiple of 128, the embedding size T5 uses (32100 -> 32128)."""
  return -(-ids // PAD_TO_MULTIPLE) * PAD_TO_MULTIPLE


class Vocabulary:
  """A SentencePiece model plus T5's sentinel ids; encode/decode never fail on odd bytes."""

  def __init__(self, model: str | bytes, extra_ids: int = 100):
    """`model` is a path to a .model file or the serialized model itself."""
    name = "The model bytes given"
    if isinstance(model, str):
      if not os.path.isfile(model):
        raise DataError(
            f"SentencePiece model {model!r} does not exist. Set data.vocabulary to an existing "
            '.model file, or to "" to train one on the training split.')
      name = f"File {model!r}"
      with open(model, "rb") as f:
        model = f.read()
    not_a_model = DataError(
        f"{name} is not a SentencePiece model. Set data.vocabulary to a .model file that "
        'SentencePiece wrote (`t5x-lite train-vocab` writes one), or to "" to train one on the '
        "training split.")
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
    self.extra_ids = extra_ids

  def __getstate__(self) -> dict:
    """Pickled as its model (grain's worker processes get the vocabulary this way)."""
    return {"model": self._model_proto, "extra_ids": self.extra_ids}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state["model"], extra_ids=state["extra_ids"])

  @property
  def model_proto(self) -> bytes:
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
  def vocab_size(self) -> int:
    """Embedding size for the model: pieces + extra ids, rounded up to a multiple of 128."""
    return padded_size(self.unpadded_size)

  @property
  def first_sentinel(self) -> int:
    """Id of sentinel 0 (<extra_id_0>); pass `vocab_size=unpadded_size` to span_corruption."""
    return self.unpadded_size - 1

  def sentinel(self, i: int) -> int:
    """Id of <extra_id_i>."""
    if not 0 <= i < self.extra_ids:
      raise ValueError(f"Sentinel {i} out of range: this vocabulary has {self.extra_ids} extra ids.")
    return self.first_sentinel - i

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
  """The configured vocabulary: data.vocabulary if set, else one trained once and cached.

  The trained model (data.vocab_train_size pieces, on data.train_split's text, or inputs and
  targets for seq2seq) is cached at vocabulary_cache_path(data_config) and reused.
  In a multi-process run, call this on process 0 first (then synchronise) so all share one file.
  """
  if data_config.vocabulary:
    return Vocabulary(data_config.vocabulary, extra_ids=data_config.vocab_extra_ids)
  path = vocabulary_cache_path(data_config)
  if not os.path.isfile(path):
    source = sources.open_source(
        data_config.dataset, data_config.train_split, data_config.data_dir,
        sources.text_features(data_config))
    train_vocabulary(shuffled_texts(source), path[:-len(".model")], data_config.vocab_train_size,
                     size_name="data.vocab_train_size")
  return Vocabulary(path, extra_ids=data_config.vocab_extra_ids)


