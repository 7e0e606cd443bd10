"""The `t5x-lite` command: subcommand wiring, output, and one-line user errors."""

import importlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import REPO

from t5x_lite import checkpoints
from t5x_lite import config as config_lib
from t5x_lite import model as model_lib
from t5x_lite.cli.main import SUBCOMMANDS, main

BASE = os.path.join(REPO, "experiments", "t5_1_1_base.py")


def test_info_prints_parameters_and_flops(capsys):
  assert main(["info", BASE]) == 0
  out = capsys.readouterr().out
  assert "247,577,856" in out and "0.4259 TFLOP" in out
  assert main(["info", BASE, "--set", "model.d_ff=4096"]) == 0
  # T5.1.1 base: 24 gated FFNs of three 768 x d_ff matrices.
  assert f"{247_577_856 + 24 * 3 * 768 * 2048:,}" in capsys.readouterr().out


def test_an_unknown_override_is_one_line_naming_the_key(capsys):
  assert main(["info", BASE, "--set", "model.d_fff=4096"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("t5x-lite info: error: ") and "model.d_fff" in err
  assert err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture(name="workdir")
def _workdir(tmp_path):
  """A params-only checkpoint of a tiny model at step 3."""
  cfg = config_lib.ExperimentConfig(model=config_lib.tiny(vocab_size=64))
  shapes, _ = model_lib.abstract_params(cfg.model)
  params = jax.tree.map(lambda x: np.ones(x.shape, x.dtype), shapes)
  checkpoints.save_params(str(tmp_path), params, cfg, step=3)
  return str(tmp_path)


def test_inspect_prints_text_json_and_errors(workdir, tmp_path, capsys):
  assert main(["inspect", workdir]) == 0
  assert "Parameters at step 3" in capsys.readouterr().out
  assert main(["inspect", os.path.join(workdir, "checkpoints"), "--step", "3", "--json"]) == 0
  info = json.loads(capsys.readouterr().out)
  assert info["step"] == 3 and info["params"]["decoder/decoder_norm/scale"]["shape"] == [128]
  assert main(["inspect", workdir, "--step", "4"]) == 2
  assert "steps present: 3" in capsys.readouterr().err
  assert main(["inspect", str(tmp_path / "nowhere")]) == 2
  assert capsys.readouterr().err.startswith("t5x-lite inspect: error: Checkpoint directory")


def test_python_m_lists_the_subcommands():
  result = subprocess.run([sys.executable, "-m", "t5x_lite", "--help"], capture_output=True,
                          text=True, check=True, timeout=120)
  for name in SUBCOMMANDS:
    assert name in result.stdout


def test_every_subcommand_module_has_its_flags_and_run():
  """SUBCOMMANDS names modules of t5x_lite.cli, each with add_arguments(parser) and run(args)."""
  for module, _ in SUBCOMMANDS.values():
    command = importlib.import_module(f"t5x_lite.cli.{module}")
    assert callable(command.add_arguments) and callable(command.run), module


def test_multi_process_settings(tmp_path, capsys, monkeypatch):
  """Inside a 2-task SLURM job step, --num-processes 1 is a single-process run (no join);
  a malformed variable is one line naming it."""
  def no_join(**kwargs):
    raise AssertionError(f"joined a cluster: {kwargs}")

  monkeypatch.setattr(jax.distributed, "initialize", no_join)
  for name, value in {"SLURM_JOB_ID": "123", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
                      "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
    monkeypatch.setenv(name, value)
  assert main(["eval", "--workdir", str(tmp_path), "--num-processes", "1", "--process-id", "0"]) == 2
  assert capsys.readouterr().err == (f"t5x-lite eval: error: {tmp_path} has no config.json; pass the "
                                     "--workdir of a `t5x-lite train` run.\n")
  monkeypatch.setenv("T5X_LITE_NUM_PROCESSES", "two")
  assert main(["eval", "--workdir", str(tmp_path)]) == 2
  assert capsys.readouterr().err == ("t5x-lite eval: error: T5X_LITE_NUM_PROCESSES='two' is not a "
                                     "whole number; set it to one, or unset it.\n")


def test_user_errors_show_their_traceback_on_request(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("T5X_LITE_TRACEBACK", "1")
  assert main(["eval", "--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "Traceback (most recent call last)" in err and err.rstrip().endswith(
      "t5x-lite eval: error: " + f"{tmp_path} has no config.json; pass the --workdir of a "
      "`t5x-lite train` run.")
