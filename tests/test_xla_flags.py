import os
import subprocess
import sys

import pytest

from t5x_lite import xla_flags
from t5x_lite.cli.main import main


@pytest.mark.parametrize("environ,expected", [
    ({"JAX_PLATFORMS": "cpu"}, None),
    ({"JAX_PLATFORMS": "cuda"}, " ".join(xla_flags.GPU_FLAGS)),
    ({"JAX_PLATFORMS": "cpu,cuda"}, " ".join(xla_flags.GPU_FLAGS)),
    ({"JAX_PLATFORMS": "cuda", "XLA_FLAGS": ""}, None),  # the user's choice, even empty, wins
])
def test_gpu_flags_only_on_gpu_and_never_over_the_users(environ, expected):
  before = dict(environ)
  assert xla_flags.set_gpu_flags(environ) == expected
  assert environ.get("XLA_FLAGS") == (expected if expected is not None else before.get("XLA_FLAGS"))


def test_every_command_sets_them_before_it_runs(monkeypatch, capsys):
  """train, eval and infer get the benchmark's flags: the CLI's main applies them for all."""
  calls = []
  monkeypatch.setattr(xla_flags, "set_gpu_flags", lambda: calls.append("flags"))
  monkeypatch.setattr("t5x_lite.cli.info.run", lambda args: calls.append("run") or 0)
  assert main(["info", "tiny"]) == 0
  assert calls == ["flags", "run"]


def test_this_jaxlib_knows_every_flag():
  """XLA aborts the process on an unknown flag, and parses the GPU ones on every backend:
  a jax upgrade that drops one fails here, not on someone's GPU."""
  environ = {**os.environ, "XLA_FLAGS": " ".join(xla_flags.GPU_FLAGS), "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"],
                          env=environ, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
