"""Suite-wide setup: 8 CPU devices for the mesh tests, and a private TFDS data dir.

Both must be set before jax / tensorflow_datasets are imported.
"""

import os
import tempfile

# On a loaded 2-core machine the 8 device threads of a CPU collective can arrive far
# apart; XLA's default rendezvous timeout would then abort the process.
COLLECTIVE_TIMEOUTS = ("--xla_cpu_collective_call_terminate_timeout_seconds=3600 "
                       "--xla_cpu_collective_timeout_seconds=3600")
os.environ["XLA_FLAGS"] = " ".join(
    (os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8", COLLECTIVE_TIMEOUTS)).strip()
os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="t5x_lite_tfds_"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402  (after the environment above)

from helpers import train_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> str:
  """One 20-step pretraining run per test session, shared by the modules that read runs."""
  return train_tiny(str(tmp_path_factory.getbasetemp() / "tiny_run"))
