"""The `t5x-lite` command: subcommand wiring, output, and one-line user errors."""

import hashlib
import importlib
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import REPO
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from t5x_lite import checkpoints
from t5x_lite import config as config_lib
from t5x_lite import model as model_lib
from t5x_lite.checkpoints import Checkpointer
from t5x_lite.cli.main import SUBCOMMANDS, main
from t5x_lite.partitioning import make_mesh
from t5x_lite.train_state import TrainState

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


def _digests(path) -> dict[str, str]:
  """Every file under path with the sha256 of its bytes: what inspect may not change."""
  return {os.path.relpath(os.path.join(root, name), path):
          hashlib.sha256(open(os.path.join(root, name), "rb").read()).hexdigest()
          for root, _, names in os.walk(path) for name in names}


def _array_file(workdir, step: int) -> str:
  """The params file that holds the array data of `step` (the largest: b-tree nodes are small)."""
  folder = os.path.join(workdir, "checkpoints", str(step), "params", "ocdbt.process_0", "d")
  return max((os.path.join(folder, name) for name in os.listdir(folder)), key=os.path.getsize)


def _truncate(path: str) -> None:
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage", ["array data removed", "array data truncated", "meta removed",
                                    "params metadata truncated"])
def test_inspect_flags_a_damaged_step_and_changes_nothing(tmp_path, capsys, damage):
  """Steps 10 and 20 of random arrays (too large to be inlined in the OCDBT index); files of
  step 20 are then damaged as by a full disk or a careless copy."""
  workdir = str(tmp_path)
  rng = np.random.default_rng(0)
  params = {"w": rng.standard_normal((64, 64), np.float32), "b": rng.standard_normal((64,), np.float32)}
  state = TrainState(step=np.int32(0), params=params, opt_state=(np.float32(0),))
  with Checkpointer(workdir, config_lib.CheckpointConfig()) as ckpt:
    for step in (10, 20):
      ckpt.save(step, state, loader_state={"seed": 1}, experiment_config=config_lib.ExperimentConfig(),
                vocabulary_path=None)
  step_20 = os.path.join(workdir, "checkpoints", "20")
  if damage == "array data removed":
    data = _array_file(workdir, 20)
    os.remove(data)
    problem = f"checkpoints/20/params/ocdbt.process_0/d/{os.path.basename(data)}: missing"
  elif damage == "array data truncated":
    data = _array_file(workdir, 20)
    _truncate(data)
    problem = (f"checkpoints/20/params/ocdbt.process_0/d/{os.path.basename(data)}: truncated to "
               f"{os.path.getsize(data)} bytes, its data end at byte ")
  elif damage == "meta removed":
    os.remove(os.path.join(step_20, "meta", "metadata"))
    problem = "checkpoints/20/meta/metadata: missing"
  else:
    metadata = os.path.join(step_20, "params", "_METADATA")
    _truncate(metadata)
    with pytest.raises(json.JSONDecodeError) as error:
      json.loads(open(metadata).read())
    problem = f"checkpoints/20/params: JSONDecodeError: {error.value}"
  before = _digests(workdir)
  directory = os.path.join(workdir, "checkpoints")
  move = f"mv {directory}/20 {workdir}/damaged_step_20"

  assert main(["inspect", workdir]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[2].startswith("  10: ") and "DAMAGED" not in lines[2]
  damaged = re.fullmatch(r"  20: \S+ \S+  DAMAGED \((.*)\); move it aside with: (.*)", lines[3])
  assert damaged, lines[3]
  if damage == "array data truncated":
    assert re.fullmatch(re.escape(problem) + r"\d+", damaged[1]), damaged[1]
    problem = damaged[1]
  else:
    assert damaged[1] == problem
  assert damaged[2] == move
  assert lines[4].startswith("Parameters at step 10: 4,160 ")  # The latest step that is intact.
  assert main(["inspect", workdir, "--json"]) == 0
  info = json.loads(capsys.readouterr().out)
  assert info["step"] == 10 and info["damaged"] == {"20": problem}
  assert main(["inspect", workdir, "--step", "20"]) == 2
  assert capsys.readouterr().err == (
      f"t5x-lite inspect: error: Checkpoint step 20 in {directory} cannot be read, its files are "
      f"damaged or incomplete ({problem}); to go on from step 10, move this one out of the way: "
      f"{move}.\n")

  # The flag is right: step 20 does not restore, step 10 does; inspect changed no file.
  sharding = NamedSharding(make_mesh(config_lib.MeshConfig(shape=(1, 1)), jax.devices()[:1]), P())
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                                         sharding=sharding), state)
  with Checkpointer(workdir, config_lib.CheckpointConfig()) as ckpt:
    with pytest.raises(checkpoints.CheckpointError, match="cannot be read, its files are damaged"):
      ckpt.restore(abstract, 20)
    restored, meta = ckpt.restore(abstract, 10)
  assert meta["step"] == 10
  np.testing.assert_array_equal(np.asarray(restored.params["w"]), params["w"])
  assert _digests(workdir) == before


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
