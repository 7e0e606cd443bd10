"""Suite-wide setup: 8 CPU devices for the mesh tests, and a private TFDS data dir.

Both must be set before jax / tensorflow_datasets are imported (helpers imports neither).
"""

import fcntl
import logging
import os
import tempfile

import pytest
from helpers import COLLECTIVE_TIMEOUTS, FAST_COMPILE, train_tiny

os.environ["XLA_FLAGS"] = " ".join(
    (os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8", FAST_COMPILE,
     COLLECTIVE_TIMEOUTS)).strip()
# One per process: pytest-xdist workers would otherwise build the same datasets at once.
os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix="t5x_lite_tfds_")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> str:
  """One 20-step pretraining run per test session, shared by the modules that read runs and
  by pytest-xdist's workers (whose temporary directories share a parent): the first to ask
  trains it while the others wait on the lock."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  with open(root / "tiny_run.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    return train_tiny(str(root / "tiny_run"))


@pytest.fixture(autouse=True)
def _library_logger_as_it_was():
  """The CLI's main() sends the `t5x_lite` logger to the terminal, and stops it propagating,
  for the rest of the process: each test gets the logger back as it was, so that caplog
  sees the library's records whatever ran before."""
  logger = logging.getLogger("t5x_lite")
  handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
  yield
  logger.handlers[:] = handlers
  logger.setLevel(level)
  logger.propagate = propagate
