"""`t5x-lite info`: arguments and the FLOP figure."""

import os

import pytest

from t5x_lite import info
from t5x_lite.cli.main import main

TINY = os.path.join(os.path.dirname(__file__), "..", "experiments", "tiny_python_docs.py")


@pytest.mark.parametrize("devices", ["0", "-2"])
def test_devices_must_be_positive(capsys, devices):
  assert main(["info", TINY, "--devices", devices]) == 2
  err = capsys.readouterr().err
  assert err == f"t5x-lite info: error: --devices {devices}: plan for a positive number of devices.\n"


def test_tiny_model_flops_keep_four_significant_digits(capsys):
  """A fixed TFLOP scale printed 0.0005 TFLOP for the tiny model."""
  assert main(["info", TINY, "--devices", "2"]) == 0
  out = capsys.readouterr().out
  assert "model FLOPs per training sequence: 0.4719 GFLOP" in out and "mesh: data=2" in out


@pytest.mark.parametrize("count,text", [
    (4.259e11, "0.4259 TFLOP"), (1.4683e12, "1.468 TFLOP"), (9.99e10, "99.9 GFLOP"),
    (4.7194e8, "0.4719 GFLOP"), (3.2e7, "32 MFLOP"),
])
def test_flop_units(count, text):
  assert info._flop(count) == text  # pylint: disable=protected-access
