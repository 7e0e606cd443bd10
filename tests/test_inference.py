"""The batched inference engine: batches padded to a bucket. (`t5x-lite infer` end to end is
tested in tests/cli/test_infer.py.)"""

import numpy as np

from t5x_lite import inference


def test_pad_batch_buckets_lengths():
  batch = inference.pad_batch([np.array([5, 6, 1]), np.arange(2, 12)], num_rows=4)
  assert batch.shape == (4, 16)
  assert batch[0, :4].tolist() == [5, 6, 1, 0] and batch[1, 9] == 11
  assert batch[2:, 0].tolist() == [1, 1] and not batch[2:, 1:].any()
