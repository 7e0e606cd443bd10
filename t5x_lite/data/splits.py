"""Deterministic train/validation assignment of documents by a stable hash of their key."""

import hashlib


def assign_split(key: str, validation_fraction: float) -> str:
  """'validation' for a stable pseudo-random `validation_fraction` of keys, else 'train'.

  Uses sha256, so the assignment is the same on every machine, run and Python version.
  """
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  unit = int.from_bytes(digest[:8], "big") / 2.0**64
  return "validation" if unit < validation_fraction else "train"
