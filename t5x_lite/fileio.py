"""Writing files so that a crash never leaves a half-written one: temporary file, then rename."""

from __future__ import annotations

import os
import tempfile


def write_atomically(path: str, data: bytes | str) -> None:
  """Readers see the old file or the new one, never a mix."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
