"""Suite-wide setup: 8 CPU devices for the mesh tests, and a private TFDS data dir.

Both must be set before jax / tensorflow_datasets are imported (helpers imports neither).
"""

import os
import tempfile

import pytest

from helpers import COLLECTIVE_TIMEOUTS, train_tiny

os.environ["XLA_FLAGS"] = " ".join(
    (os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8", COLLECTIVE_TIMEOUTS)).strip()
# One per process: pytest-xdist workers would otherwise build the same datasets at once.
os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix="t5x_lite_tfds_")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> str:
  """One 20-step pretraining run per test session, shared by the modules that read runs."""
  return train_tiny(str(tmp_path_factory.getbasetemp() / "tiny_run"))
