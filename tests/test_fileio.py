import os
import stat

import pytest

from t5x_lite.fileio import write_atomically


def test_written_files_are_whole_and_readable_like_open_makes_them(tmp_path):
  path = tmp_path / "shared" / "config.json"
  write_atomically(str(path), "{}")
  write_atomically(str(path), b"{\"a\": 1}")
  assert path.read_text() == "{\"a\": 1}" and os.listdir(path.parent) == ["config.json"]
  umask = os.umask(0)
  os.umask(umask)
  assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file(tmp_path):
  path = tmp_path / "vocabulary.model"
  write_atomically(str(path), b"old")
  with pytest.raises(TypeError):
    write_atomically(str(path), 42)  # not bytes: fails mid-write
  assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["vocabulary.model"]


def test_directories_that_cannot_be_written_are_named(tmp_path):
  from t5x_lite.errors import ConfigError
  from t5x_lite.fileio import check_writable_directory
  (tmp_path / "file").write_text("x")
  with pytest.raises(ConfigError, match="the workdir .*/file is a file"):
    check_writable_directory(str(tmp_path / "file"), "the workdir")
  with pytest.raises(ConfigError, match=r"is under a file \(.*/file\)"):
    check_writable_directory(str(tmp_path / "file" / "run"), "the workdir")
  check_writable_directory(str(tmp_path / "new" / "run"), "the workdir")  # To be made: fine.
  if os.geteuid() != 0:  # root writes anywhere
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="is not writable"):
      check_writable_directory(str(tmp_path / "ro" / "run"), "the workdir")
