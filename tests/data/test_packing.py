import numpy as np
import pytest
from data_helpers import unpack

from t5x_lite.data.packing import KEYS, Packer, packing_efficiency


def example(n_in, n_tgt, start):
  return np.arange(start, start + n_in, dtype=np.int32), np.arange(start + 500, start + 500 + n_tgt, dtype=np.int32)


def test_segments_positions_and_shifted_decoder_inputs():
  packer = Packer(rows=2, inputs_length=10, targets_length=6)
  examples = [example(4, 3, 10), example(5, 2, 20), example(7, 4, 30), example(3, 2, 40)]
  for inputs, targets in examples:
    assert packer.add(inputs, targets)
  b = packer.batch
  assert set(b) == set(KEYS) and b["decoder_loss_weights"].dtype == np.float32
  assert all(b[k].dtype == np.int32 for k in KEYS if k != "decoder_loss_weights")
  # Row 0: examples 0 and 1; row 1: examples 2 and 3 (first fit).
  assert b["encoder_segment_ids"][0].tolist() == [1] * 4 + [2] * 5 + [0]
  assert b["decoder_segment_ids"][1].tolist() == [1] * 4 + [2] * 2
  assert b["decoder_target_tokens"][0].tolist() == [510, 511, 512, 520, 521, 0]
  assert b["decoder_input_tokens"][0].tolist() == [0, 510, 511, 0, 520, 0]
  assert b["decoder_loss_weights"][0].tolist() == [1, 1, 1, 1, 1, 0]
  assert sorted(unpack(b)) == sorted((tuple(i), tuple(t)) for i, t in examples)
  assert packing_efficiency(b) == pytest.approx((9 + 10 + 5 + 6) / 32)


def test_full_batch_refuses_and_stays_unchanged():
  packer = Packer(rows=1, inputs_length=8, targets_length=4)
  assert packer.add(*example(6, 2, 3))
  before = {k: v.copy() for k, v in packer.batch.items()}
  assert not packer.add(*example(3, 1, 9))  # Encoder side full.
  assert not packer.add(*example(1, 3, 9))  # Decoder side full.
  assert all(np.array_equal(before[k], packer.batch[k]) for k in KEYS)
  with pytest.raises(ValueError, match="does not fit"):
    packer.add(*example(9, 1, 3))


def test_no_packing_puts_one_example_per_row():
  packer = Packer(rows=3, inputs_length=8, targets_length=4, pack=False)
  assert packer.add(*example(2, 1, 3)) and packer.add(*example(2, 1, 9))
  assert packer.batch["encoder_segment_ids"][:, :2].tolist() == [[1, 1], [1, 1], [0, 0]]
  assert packer.add(*example(2, 1, 20)) and not packer.add(*example(1, 1, 30))
