import pytest

from t5x_lite import cli, xla_flags


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
  """train, eval and infer get the benchmark's flags: cli.main applies them for all."""
  calls = []
  monkeypatch.setattr(xla_flags, "set_gpu_flags", lambda: calls.append("flags"))
  monkeypatch.setattr("t5x_lite.info.run", lambda args: calls.append("run") or 0)
  assert cli.main(["info", "tiny"]) == 0
  assert calls == ["flags", "run"]
