"""Packing (inputs, targets) examples into fixed-shape encoder-decoder rows, as T5X feeds them.

Each row holds one or more examples (segments). Segment ids start at 1 (0 = padding), and
decoder_input_tokens are the targets shifted right by one within each segment (so every
segment's first decoder input is 0 and no segment sees another's tokens). No positions are
carried: the model's relative positions are index distances, which equal position distances
wherever the segment mask lets attention through. Without packing every row holds exactly
one example, with the same keys.
"""

from __future__ import annotations

import numpy as np

KEYS = (
    "encoder_input_tokens", "encoder_segment_ids", "decoder_target_tokens",
    "decoder_input_tokens", "decoder_segment_ids", "decoder_loss_weights",
)


def empty_batch(rows: int, inputs_length: int, targets_length: int) -> dict[str, np.ndarray]:
  """All-padding arrays: int32 everywhere except float32 decoder_loss_weights."""
  batch = {}
  for key in KEYS:
    length = inputs_length if key.startswith("encoder") else targets_length
    dtype = np.float32 if key == "decoder_loss_weights" else np.int32
    batch[key] = np.zeros((rows, length), dtype=dtype)
  return batch


class Packer:
  """Fills `rows` rows first-fit with examples until one no longer fits anywhere."""

  def __init__(self, rows: int, inputs_length: int, targets_length: int, pack: bool = True):
    self.rows, self.inputs_length, self.targets_length, self.pack = (
        rows, inputs_length, targets_length, pack)
    self.batch = empty_batch(rows, inputs_length, targets_length)
    self._encoder_used = np.zeros(rows, dtype=np.int64)
    self._decoder_used = np.zeros(rows, dtype=np.int64)
    self._segments = np.zeros(rows, dtype=np.int64)
    self.num_examples = 0

  @property
  def is_empty(self) -> bool:
    return self.num_examples == 0

  def add(self, inputs: np.ndarray, targets: np.ndarray) -> bool:
    """Places the example in the first row with room; False (and no change) if none has room."""
    n_in, n_tgt = inputs.size, targets.size
    if n_in > self.inputs_length or n_tgt > self.targets_length or n_tgt == 0:
      raise ValueError(
          f"Example of {n_in} inputs / {n_tgt} targets does not fit rows of "
          f"{self.inputs_length} / {self.targets_length} (targets need at least one token).")
    if self.pack:
      room = ((self._encoder_used + n_in <= self.inputs_length)
              & (self._decoder_used + n_tgt <= self.targets_length))
    else:
      room = self._segments == 0
    candidates = np.flatnonzero(room)
    if candidates.size == 0:
      return False
    row = int(candidates[0])
    self._segments[row] += 1
    segment = self._segments[row]
    b = self.batch
    e0, d0 = self._encoder_used[row], self._decoder_used[row]
    b["encoder_input_tokens"][row, e0:e0 + n_in] = inputs
    b["encoder_segment_ids"][row, e0:e0 + n_in] = segment
    b["decoder_target_tokens"][row, d0:d0 + n_tgt] = targets
    b["decoder_input_tokens"][row, d0 + 1:d0 + n_tgt] = targets[:-1]
    b["decoder_segment_ids"][row, d0:d0 + n_tgt] = segment
    b["decoder_loss_weights"][row, d0:d0 + n_tgt] = 1.0
    self._encoder_used[row] += n_in
    self._decoder_used[row] += n_tgt
    self.num_examples += 1
    return True


def packing_efficiency(batch: dict[str, np.ndarray]) -> float:
  """Fraction of encoder plus decoder slots that hold real tokens (not padding)."""
  real = np.count_nonzero(batch["encoder_segment_ids"]) + np.count_nonzero(batch["decoder_segment_ids"])
  return real / (batch["encoder_segment_ids"].size + batch["decoder_segment_ids"].size)
