"""`info --suggest`: the search for the cheapest remat policy and the largest batch, on a
stand-in for the compiler whose memory grows with the batch and shrinks with remat."""

import pytest
from helpers import TINY_EXPERIMENT

from t5x_lite import aot, suggest
from t5x_lite.cli.main import main
from t5x_lite.config import ConfigError, load_experiment

# Bytes per example each policy needs in the stand-in; the device offers 1000.
PER_EXAMPLE = {"compiler": 35, "none": 40, "minimal": 30, "dots": 20, "dots_no_batch": 15, "full": 10}


@pytest.fixture
def compiled(monkeypatch):
  calls = []

  def compile_report(config, target, devices):
    batch, policy = config.train.batch_size, config.model.remat_policy
    calls.append((batch, policy))
    if batch % len(devices):
      raise ConfigError(f"batch {batch} does not divide over {len(devices)} devices")
    total = batch * PER_EXAMPLE[policy]
    return {"target": target, "memory_per_device_bytes": {"total": total}, "fits": total <= 1000}

  monkeypatch.setattr(aot, "compile_report", compile_report)
  return calls


@pytest.mark.parametrize("batch, cheapest, largest", [
    (16, "none", {"none": 16, "full": 64}),  # 16 x 40 = 640 fits; 32 x 40 does not
    (32, "minimal", {"minimal": 32, "full": 64}),
    (8, "none", {"none": 16, "full": 64}),  # 8 -> 16 -> 32 x 40 > 1000
    (64, "dots_no_batch", {"dots_no_batch": 64, "full": 64}),
    (256, None, {"full": 64}),
])
def test_cheapest_policy_and_largest_batch(compiled, batch, cheapest, largest):
  config = load_experiment(TINY_EXPERIMENT, [f"train.batch_size={batch}", "model.scan_layers=true"])
  result = suggest.suggest(config, "h100", ["device"])
  assert result["cheapest_policy"] == cheapest and result["largest_batch"] == largest
  assert len(compiled) == len(set(compiled)) == len(result["candidates"])  # nothing compiled twice
  text = suggest.format_suggestion(result)
  if cheapest:
    assert f"--set model.remat_policy={cheapest}" in text
  else:
    assert f"at batch {batch} nothing fits, even model.remat_policy=full" in text
  assert f"largest batch with remat full: --set train.batch_size={largest['full']}" in text


def test_unrolled_layers_may_be_left_to_the_compiler(compiled):
  """With unrolled layers, leaving remat to the compiler (which a TPU's does itself) is tried
  first; a scanned stack cannot be left to it."""
  config = load_experiment(TINY_EXPERIMENT, ["train.batch_size=16", "model.scan_layers=false"])
  result = suggest.suggest(config, "v5e:2x2", ["device"])
  assert compiled[0] == (16, "compiler") and result["cheapest_policy"] == "compiler"
  assert result["largest_batch"] == {"compiler": 16, "full": 64}


def test_halving_stops_where_the_batch_no_longer_divides(compiled):
  config = load_experiment(TINY_EXPERIMENT, ["train.batch_size=384", "model.scan_layers=true"])
  result = suggest.suggest(config, "h100", ["device"] * 3)  # 384 -> 192 -> 96 (fits: 960)
  assert result["largest_batch"] == {"full": 96}
  config = load_experiment(TINY_EXPERIMENT, ["train.batch_size=2000", "model.scan_layers=true"])
  assert suggest.suggest(config, "h100", ["device"] * 2000)["largest_batch"] == {"full": None}


@pytest.mark.parametrize("args, message", [
    (["--suggest"], "--suggest compiles for a device: add --target"),
    (["--suggest", "--target", "cpu"], "--suggest needs a device with known memory"),
])
def test_suggest_needs_a_device_target(capsys, args, message):
  assert main(["info", TINY_EXPERIMENT, *args]) == 2
  assert message in capsys.readouterr().err
