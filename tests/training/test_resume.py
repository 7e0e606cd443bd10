"""End to end: a run of a two-task mixture killed at random steps and restarted equals an
uninterrupted run; SIGTERM saves a checkpoint at the current step and exits cleanly."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from helpers import FAST_COMPILE, REPO
from helpers import TINY_EXPERIMENT as EXPERIMENT

from t5x_lite import checkpoints
from t5x_lite.training.loop import PREEMPTED_EXIT_STATUS

STEPS = 12
SETTINGS = [
    f"train.steps={STEPS}", "train.log_every=1", "train.batch_size=8", "train.eval_every=1000",
    "checkpoint.every_steps=3", "data.max_eval_examples=16",
]
# Per-step values that do not describe the step's computation: wall-time rates.
NOT_COMPARED = {"seq_per_s", "tokens_per_s", "mfu"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """One device per run, and a compilation cache shared by all runs (restarts are fast)."""
  cache = str(tmp_path_factory.mktemp("jax_cache"))
  return {**os.environ, "XLA_FLAGS": FAST_COMPILE, "JAX_PLATFORMS": "cpu",
          "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


# The tiny experiment on a mixture: span corruption and prefix LM tasks over python_docs.
MIXTURE_EXPERIMENT = f"""
import sys
sys.path.insert(0, {os.path.join(REPO, "experiments")!r})
from tiny_python_docs import get_config as tiny_config
from t5x_lite.data import DatasetSource, Mixture, PrefixLM, Task, register_mixture, register_task

register_task(Task("docs_span", DatasetSource("python_docs")))
register_task(Task("docs_prefix", DatasetSource("python_docs"), PrefixLM()))
register_mixture(Mixture("docs_mix", (("docs_span", 2.0), ("docs_prefix", 1.0))))

def get_config():
  config = tiny_config()
  config.data.dataset = "docs_mix"
  return config
"""


@pytest.fixture(scope="module")
def mixture_experiment(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("experiments") / "tiny_mixture.py"
  path.write_text(MIXTURE_EXPERIMENT)
  return str(path)


def launch(workdir: str, env: dict, steps: int = STEPS, experiment: str = EXPERIMENT) -> subprocess.Popen:
  settings = [s for s in SETTINGS if not s.startswith("train.steps=")] + [f"train.steps={steps}"]
  command = [sys.executable, "-m", "t5x_lite", "train", experiment, "--workdir", workdir]
  for setting in settings:
    command += ["--set", setting]
  return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def train_records(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [line for line in f.read().splitlines() if line.strip()]
  records = []
  for line in lines:
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:  # a line being written right now
      continue
  return [r for r in records if r["split"] == "train"]


def wait_for_step(process: subprocess.Popen, workdir: str, step: int, timeout: float = 300) -> None:
  deadline = time.time() + timeout
  while max((r["step"] for r in train_records(workdir)), default=0) < step:
    assert process.poll() is None, f"the run exited early:\n{process.communicate()[0][-3000:]}"
    assert time.time() < deadline, f"no train step {step} after {timeout}s"
    time.sleep(0.05)


def finish(process: subprocess.Popen, timeout: float = 300, returncode: int = 0) -> str:
  output, _ = process.communicate(timeout=timeout)
  assert process.returncode == returncode, output[-3000:]
  return output


def comparable(records: list[dict]) -> dict[int, dict]:
  steps = [r["step"] for r in records]
  assert steps == sorted(set(steps)), f"steps logged twice or out of order: {steps}"
  return {r["step"]: {k: v for k, v in r.items() if k not in NOT_COMPARED} for r in records}


def test_killed_and_restarted_run_equals_an_uninterrupted_run(tmp_path, env, mixture_experiment):
  reference = str(tmp_path / "reference")
  finish(launch(reference, env, experiment=mixture_experiment))

  workdir = str(tmp_path / "interrupted")
  first, second = sorted(random.Random(0).sample(range(2, STEPS - 1), 2))
  second = max(second, first + 2)  # logged by the restarted process, not left over
  for kill_at in (first, second):
    process = launch(workdir, env, experiment=mixture_experiment)
    wait_for_step(process, workdir, kill_at)
    process.send_signal(signal.SIGKILL)
    process.wait()
  finish(launch(workdir, env, experiment=mixture_experiment))

  expected, got = comparable(train_records(reference)), comparable(train_records(workdir))
  assert sorted(got) == list(range(1, STEPS + 1))
  assert got == expected  # losses and per-batch statistics (target tokens, packing) equal
  state = checkpoints.read_meta(workdir, STEPS)["loader_state"]
  assert state == checkpoints.read_meta(reference, STEPS)["loader_state"]
  assert all(shard["docs_span:example"] > 0 and shard["docs_prefix:example"] > 0 for shard in state["shards"])
  # Evaluated task by task, with the mean.
  validation = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))
                if '"validation"' in line][-1]
  assert {"docs_span/loss", "docs_prefix/loss", "loss"} <= set(validation)


def test_sigterm_saves_the_current_step_and_exits_cleanly(tmp_path, env):
  workdir = str(tmp_path / "preempted")
  process = launch(workdir, env, steps=1000)
  wait_for_step(process, workdir, 4)
  process.send_signal(signal.SIGTERM)
  # Saved but not finished: 143, as for a process SIGTERM ended, so a scheduler requeues it.
  output = finish(process, timeout=120, returncode=PREEMPTED_EXIT_STATUS)
  last = max(r["step"] for r in train_records(workdir))
  # The loop's warning, as the CLI prints it (on stderr).
  assert f"t5x-lite: SIGTERM received: saved a checkpoint at step {last} in " in output
  assert "already at step" not in output
  assert checkpoints.latest_step(workdir) == last
  assert checkpoints.read_meta(workdir)["step"] == last
  assert not [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n]
