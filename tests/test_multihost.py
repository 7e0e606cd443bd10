"""Two processes x 2 CPU devices (jax.distributed on localhost, gloo collectives) train
exactly like one process x 4 devices, and a two-process checkpoint resumes in one; an error on
one process, or a handshake that cannot complete, stops every process within seconds."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import COLLECTIVE_TIMEOUTS, FAST_COMPILE, REPO
from helpers import TINY_EXPERIMENT as EXPERIMENT

from t5x_lite import checkpoints
from t5x_lite.metrics import read_metrics
from t5x_lite.training.loop import PREEMPTED_EXIT_STATUS

STEPS, SAVED = 8, 4  # A checkpoint halfway, which the crossing runs resume from.
SETTINGS = [f"train.steps={STEPS}", "train.log_every=1", "train.batch_size=16", "train.eval_every=1000",
            f"checkpoint.every_steps={SAVED}", "data.shards=2", "data.inputs_length=64",
            "data.targets_length=16", "data.max_eval_examples=8", "mesh.shape=[-1,1]"]
TIMEOUT_S = 400


@pytest.fixture(scope="module")
def env():
  # No persistent compilation cache: on JAX 0.12.1 (CPU, gloo) two processes that load
  # executables another two-process run cached hang in their first step.
  return {**os.environ, "JAX_PLATFORMS": "cpu"}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(workdir, env, processes: int, devices_per_process: int, settings=SETTINGS) -> list:
  """Starts `t5x-lite train` as `processes` processes."""
  base = [sys.executable, "-m", "t5x_lite", "train", EXPERIMENT, "--workdir", str(workdir)]
  for setting in settings:
    base += ["--set", setting]
  env = {**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process} "
                            f"{FAST_COMPILE} {COLLECTIVE_TIMEOUTS}"}
  if processes > 1:
    env["T5X_LITE_COORDINATOR"] = f"localhost:{_free_port()}"
    env["T5X_LITE_NUM_PROCESSES"] = str(processes)
  return [subprocess.Popen(base, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**env, "T5X_LITE_PROCESS_ID": str(process_id)})
          for process_id in range(processes)]


def _wait(running: list, returncode: int = 0) -> list[str]:
  """Waits for every process; each must end with `returncode`. Their outputs."""
  try:
    outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in running]
    for p, output in zip(running, outputs):
      assert p.returncode == returncode, output[-4000:]
    return outputs
  finally:
    for p in running:
      if p.poll() is None:
        p.kill()
        p.wait()


def _train(workdir, env, processes: int, devices_per_process: int) -> None:
  """Runs `t5x-lite train` as `processes` processes and waits for all of them."""
  _wait(_launch(workdir, env, processes, devices_per_process))


def _losses(workdir) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in read_metrics(str(workdir)) if r["split"] == "train"}


def _assert_close(got: dict, want: dict, steps) -> None:
  for step in steps:
    assert abs(got[step] - want[step]) <= 1e-5 * abs(want[step]), (step, got[step], want[step])


def _resume_from_halfway(source, target) -> None:
  """A copy of a finished run that only has its halfway checkpoint."""
  shutil.copytree(source, target)
  shutil.rmtree(os.path.join(target, "checkpoints", str(STEPS)))


def test_two_processes_match_one_and_checkpoints_cross(tmp_path, env):
  _train(tmp_path / "one", env, processes=1, devices_per_process=4)
  _train(tmp_path / "two", env, processes=2, devices_per_process=2)
  one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
  assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
  _assert_close(two, one, range(1, STEPS + 1))
  # Only process 0 wrote logs: one record per step.
  assert len([r for r in read_metrics(str(tmp_path / "two")) if r["split"] == "train"]) == STEPS

  # The 2-process checkpoint resumes in 1 process, continuing the same run. (Not run here: the
  # reverse, one process's checkpoint in two; a second two-process run cost a minute of the
  # suite's 20.)
  _resume_from_halfway(tmp_path / "two", tmp_path / "two_then_one")
  _train(tmp_path / "two_then_one", env, processes=1, devices_per_process=4)
  _assert_close(_losses(tmp_path / "two_then_one"), one, range(SAVED + 1, STEPS + 1))
  assert checkpoints.latest_step(str(tmp_path / "two_then_one")) == STEPS


def test_sigterm_on_one_process_saves_on_all_at_one_step(tmp_path, env):
  """JAX's preemption service: SIGTERM to process 1 alone, and both processes save the same
  step and exit as preempted (143), without a collective per step to agree on it."""
  settings = [s for s in SETTINGS if not s.startswith(("train.steps=", "checkpoint.every_steps="))]
  running = _launch(tmp_path, env, 2, 2, settings + ["train.steps=1000", "checkpoint.every_steps=1000"])
  deadline = time.monotonic() + TIMEOUT_S
  while not [r for r in read_metrics(str(tmp_path)) if r["split"] == "train" and r["step"] >= 3]:
    assert all(p.poll() is None for p in running) and time.monotonic() < deadline
    time.sleep(0.2)
  running[1].send_signal(signal.SIGTERM)
  outputs = _wait(running, returncode=PREEMPTED_EXIT_STATUS)
  saved = checkpoints.latest_step(str(tmp_path))
  assert saved is not None and 3 <= saved < 1000
  assert checkpoints.read_meta(str(tmp_path))["step"] == saved
  assert f"SIGTERM received: saved a checkpoint at step {saved}" in outputs[0]


# A subcommand whose processes meet in a collective, after which the --failing ones raise
# a UserError while the others wait for them in a second collective.
FAIL_ON_MODULE = """
import jax
from jax.experimental import multihost_utils
from t5x_lite.cli.common import add_distributed_arguments, initialize_distributed
from t5x_lite.config import ConfigError

def add_arguments(parser):
  parser.add_argument("--failing", type=int, nargs="*", default=[])
  add_distributed_arguments(parser)

def run(args):
  initialize_distributed(args)
  multihost_utils.sync_global_devices("joined")
  if jax.process_index() in args.failing:
    raise ConfigError(f"bad setting on process {jax.process_index()}")
  multihost_utils.sync_global_devices("finished")
"""
# Subcommands are modules of t5x_lite.cli: fail_on.py (on PYTHONPATH) is registered as one.
FAIL_ON_MAIN = ("import importlib, sys; from t5x_lite.cli import main; "
                "sys.modules['t5x_lite.cli.fail_on'] = importlib.import_module('fail_on'); "
                "main.SUBCOMMANDS['fail-on'] = ('fail_on', ''); sys.exit(main.main(sys.argv[1:]))")
# Before the stop mechanism, a process left waiting sat out JAX's 300 s shutdown barrier
# (or its 100 s heartbeat timeout), then aborted with a C++ stack trace.
PROMPT_S = 60


def _run_fail_on(tmp_path, argvs: list[list[str]]) -> tuple[list[int], list[str], float]:
  """Runs `t5x-lite fail-on` once per argv, together; (statuses, outputs, seconds)."""
  (tmp_path / "fail_on.py").write_text(FAIL_ON_MODULE)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
  start = time.monotonic()
  running = [subprocess.Popen([sys.executable, "-c", FAIL_ON_MAIN, "fail-on", *argv], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for argv in argvs]
  try:
    outputs = [p.communicate(timeout=2 * PROMPT_S)[0] for p in running]
  finally:
    for p in running:
      if p.poll() is None:
        p.kill()
        p.wait()
  return [p.returncode for p in running], outputs, time.monotonic() - start


@pytest.mark.parametrize("failing", [[], [1], [0], [0, 1]])
def test_an_error_on_any_process_stops_every_process_at_once(tmp_path, failing):
  coordinator = f"localhost:{_free_port()}"
  argvs = [["--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i),
            "--failing", *map(str, failing)] for i in range(2)]
  statuses, outputs, seconds = _run_fail_on(tmp_path, argvs)
  assert statuses == [2 if failing else 0] * 2, outputs
  assert seconds < PROMPT_S, outputs
  for i, output in enumerate(outputs):
    assert "Check failure" not in output and "DEADLINE_EXCEEDED" not in output, output
    if not failing:
      continue
    # Its own error, or the error of the process that stopped the run (a failing process
    # may be stopped by another before it fails itself).
    own = f"t5x-lite fail-on (process {i} of 2): error: bad setting on process {i}\n"
    others = [f"t5x-lite fail-on (process {i} of 2): error: process {other} stopped the run: "
              f"bad setting on process {other}\n" for other in failing if other != i]
    assert (i in failing and own in output) or any(line in output for line in others), output


def test_handshake_timeouts_name_the_address(tmp_path):
  with socket.socket() as closed:  # Bound, not listening: nothing accepts connections.
    closed.bind(("localhost", 0))
    coordinator = f"localhost:{closed.getsockname()[1]}"
    # Process 0 alone: the others never join. Process 1 alone: no coordinator to reach.
    statuses, outputs, seconds = _run_fail_on(tmp_path, [
        ["--coordinator", f"localhost:{_free_port()}", "--num-processes", "2", "--process-id", "0",
         "--handshake-timeout", "3"],
        ["--coordinator", coordinator, "--num-processes", "2", "--process-id", "1",
         "--handshake-timeout", "3"]])
  assert statuses == [2, 2] and seconds < PROMPT_S, outputs
  assert "t5x-lite fail-on: error: Process 0 waited 3 s at the coordinator at localhost:" in outputs[0]
  assert "for all 2 processes to join" in outputs[0]
  assert (f"t5x-lite fail-on: error: Process 1 found no coordinator at {coordinator} within 3 s"
          in outputs[1])
  assert all("Check failure" not in output for output in outputs), outputs
