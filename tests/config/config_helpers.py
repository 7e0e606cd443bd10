"""Helpers shared by the config tests: the shipped experiments and experiment files made per test."""

import os

EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments")
SHIPPED = sorted(f[:-3] for f in os.listdir(EXPERIMENTS) if f.endswith(".py"))


def experiment(name: str) -> str:
  """The path of the shipped experiment `name`."""
  return os.path.join(EXPERIMENTS, name + ".py")


def write_experiment(tmp_path, *lines) -> str:
  """An experiment file: the tiny experiment with `lines` applied to its config `c`.

  Tests that use it need the experiments_on_path fixture, so the file can import the tiny
  experiment.
  """
  path = tmp_path / "typed.py"
  path.write_text("\n".join([
      "from tiny_python_docs import get_config as base", "def get_config():", "  c = base()",
      *(f"  {line}" for line in lines), "  return c", ""]))
  return str(path)
