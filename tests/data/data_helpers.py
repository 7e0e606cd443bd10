"""Helpers shared by the data tests: unpacking batches and the stream a loader should read."""

import numpy as np

VOCAB_PIECES = 800  # Pieces of the test vocabulary trained on python_docs.


def unpack(batch: dict) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
  """The (inputs, targets) examples of a packed batch, row by row, segment by segment."""
  out = []
  for row in range(batch["encoder_segment_ids"].shape[0]):
    enc_seg, dec_seg = batch["encoder_segment_ids"][row], batch["decoder_segment_ids"][row]
    for s in range(1, int(enc_seg.max(initial=0)) + 1):
      out.append((tuple(batch["encoder_input_tokens"][row][enc_seg == s].tolist()),
                  tuple(batch["decoder_target_tokens"][row][dec_seg == s].tolist())))
  return out


def stream_examples(loader, epoch: int = 0) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
  """The examples a loader should read in `epoch`, in order, computed without the loader."""
  out = []
  for doc in loader.documents(epoch):
    texts = loader.source.get([int(doc)])[0]
    tokens = [loader.vocabulary.encode(t) for t in texts]
    for inputs, targets in loader.objective.examples(tokens, (loader.seed, epoch, int(doc))):
      out.append((tuple(inputs.tolist()), tuple(targets.tolist())))
  return out


def batches_equal(a: dict, b: dict) -> bool:
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
