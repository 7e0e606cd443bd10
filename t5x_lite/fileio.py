"""Writing files so that a crash never leaves a half-written one (temporary file, then
rename), and checking before any work that a directory can be written."""

from __future__ import annotations

import os
import tempfile

from t5x_lite.errors import ConfigError


def _umask() -> int:
  umask = os.umask(0)  # Reading it means setting it: done once, at import, before any thread.
  os.umask(umask)
  return umask


# The modes open() and os.makedirs give new files and folders; mkstemp's and mkdtemp's are
# private (0600, 0700), which would hide runs from collaborators in a shared directory.
_FILE_MODE = 0o666 & ~_umask()
DIRECTORY_MODE = 0o777 & ~_umask()


def write_atomically(path: str, data: bytes | str) -> None:
  """Readers see the old file or the new one, never a mix."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
  try:
    os.chmod(fd, _FILE_MODE)
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def check_writable_directory(path: str, what: str) -> None:
  """Fails with one clear message, before any work, where `path` cannot be a directory this
  process writes into: a file, a directory under a file, or one without write permission."""
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    where = "is a file" if existing == os.path.abspath(path) else f"is under a file ({existing})"
    raise ConfigError(f"{what} {path} {where}; give a directory path.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"{what} {path} is not writable ({existing} is read-only for this user); "
                      "give a directory you can write to, or make it writable.")
