"""Multi-process start-up arguments and the single/multi-process helpers, without a cluster:
jax.distributed.initialize and the collectives are replaced by recorders."""

import argparse
import inspect
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from jax.experimental import multihost_utils

from t5x_lite import distributed
from t5x_lite.config import ConfigError

REAL_INITIALIZE = jax.distributed.initialize  # Replaced by a recorder in the tests.

ENV = ("T5X_LITE_COORDINATOR", "T5X_LITE_NUM_PROCESSES", "T5X_LITE_PROCESS_ID",
       "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS")


@pytest.fixture
def env(monkeypatch):
  """A clean environment, and jax.distributed.initialize / jax.config.update recorded."""
  for name in ENV:
    monkeypatch.delenv(name, raising=False)
  calls = Recorder()
  monkeypatch.setattr(jax.distributed, "initialize", calls.initialize)
  monkeypatch.setattr(jax.config, "update", calls.update)
  return calls


class Recorder:
  def __init__(self):
    self.initialize_kwargs, self.updates, self.error = [], [], None

  def initialize(self, **kwargs):
    self.initialize_kwargs.append(kwargs)
    if self.error:
      raise self.error

  def update(self, name, value):
    self.updates.append((name, value))


def _args(*argv: str) -> argparse.Namespace:
  parser = argparse.ArgumentParser()
  distributed.add_arguments(parser)
  return parser.parse_args(list(argv))


def test_single_process_is_a_no_op(env):
  distributed.initialize(_args())
  distributed.initialize(_args("--num-processes", "1"))
  distributed.initialize(_args("--process-id", "0"))  # what a launcher may set for one process
  assert env.initialize_kwargs == [] and env.updates == []


def test_flags_reach_jax(env):
  distributed.initialize(_args("--coordinator", "host:1234", "--num-processes", "4", "--process-id", "3"))
  assert env.initialize_kwargs == [{
      "coordinator_address": "host:1234", "num_processes": 4, "process_id": 3,
      "initialization_timeout": distributed.HANDSHAKE_TIMEOUT_S}]
  assert env.updates == [("jax_cpu_collectives_implementation", "gloo")]
  inspect.signature(REAL_INITIALIZE).bind(**env.initialize_kwargs[0])  # keywords this JAX takes


def test_environment_variables_are_the_defaults(env, monkeypatch):
  monkeypatch.setenv("T5X_LITE_COORDINATOR", "10.0.0.1:8476")
  monkeypatch.setenv("T5X_LITE_NUM_PROCESSES", "2")
  monkeypatch.setenv("T5X_LITE_PROCESS_ID", "1")
  args = _args()
  assert (args.coordinator, args.num_processes, args.process_id) == ("10.0.0.1:8476", 2, 1)
  assert _args("--process-id", "0").process_id == 0  # a flag wins over the environment
  distributed.initialize(args)
  assert env.initialize_kwargs[0]["coordinator_address"] == "10.0.0.1:8476"
  assert (env.initialize_kwargs[0]["num_processes"], env.initialize_kwargs[0]["process_id"]) == (2, 1)


def test_empty_variables_count_as_unset(env, monkeypatch):
  for name in ("T5X_LITE_COORDINATOR", "T5X_LITE_NUM_PROCESSES", "T5X_LITE_PROCESS_ID"):
    monkeypatch.setenv(name, "")
  args = _args()
  assert args.coordinator is None and args.num_processes is None and args.process_id is None
  distributed.initialize(args)
  assert env.initialize_kwargs == []


@pytest.mark.parametrize("argv", [
    ("--coordinator", "host:1234"),
    ("--num-processes", "2", "--process-id", "0"),
    ("--coordinator", "host:1234", "--num-processes", "2"),
])
def test_explicit_runs_need_all_three(env, argv):
  with pytest.raises(ConfigError, match="needs --coordinator HOST:PORT, --num-processes N and --process-id I"):
    distributed.initialize(_args(*argv))
  assert env.initialize_kwargs == []


@pytest.mark.parametrize("process_id", ["2", "-1"])
def test_process_id_must_be_in_range(env, process_id):
  with pytest.raises(ConfigError, match=rf"--process-id {process_id} must be in 0\.\.1"):
    distributed.initialize(_args("--coordinator", "h:1", "--num-processes", "2", "--process-id", process_id))
  assert env.initialize_kwargs == []


@pytest.mark.parametrize("name,value,detected", [
    ("TPU_WORKER_HOSTNAMES", "w0,w1", True), ("TPU_WORKER_HOSTNAMES", "w0", False),
    ("SLURM_NTASKS", "4", True), ("SLURM_NTASKS", "1", False),
])
def test_clusters_jax_detects_itself(env, monkeypatch, name, value, detected):
  monkeypatch.setenv(name, value)
  assert distributed._cluster_detected() is detected  # pylint: disable=protected-access
  distributed.initialize(_args())
  want = [{"coordinator_address": None, "num_processes": None, "process_id": None,
           "initialization_timeout": distributed.HANDSHAKE_TIMEOUT_S}] if detected else []
  assert env.initialize_kwargs == want


def test_a_failed_handshake_says_where_it_looked(env, monkeypatch):
  env.error = RuntimeError("DEADLINE_EXCEEDED")
  with pytest.raises(ConfigError, match=r"Process 1 could not join the run through the coordinator at "
                                        r"h:1 within 300 s: DEADLINE_EXCEEDED") as info:
    distributed.initialize(_args("--coordinator", "h:1", "--num-processes", "2", "--process-id", "1"))
  assert info.value.__cause__ is env.error
  monkeypatch.setenv("SLURM_NTASKS", "2")
  with pytest.raises(ConfigError, match=r"This process could not join .* the address JAX detected"):
    distributed.initialize(_args())


def test_single_process_helpers_return_their_input():
  table = np.arange(6, dtype=np.int32).reshape(3, 2)
  assert distributed.allgather_rows(table) is table
  assert distributed.any_process(True) is True and distributed.any_process(False) is False
  calls = []
  assert distributed.on_main_process_first(lambda: calls.append(1) or "built", "dataset") == "built"
  assert calls == [1]


@pytest.fixture
def two_processes(monkeypatch):
  """Process `index` of 2, with collectives that see what the other process would send."""
  state = SimpleNamespace(index=0, other_failed=False, other_row=None)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: state.index)

  def broadcast_one_to_all(value):
    return np.int32(state.other_failed) if state.index else value

  def process_allgather(table):
    rows = [table, state.other_row if state.other_row is not None else table + 10]
    return np.stack(rows if state.index == 0 else rows[::-1])

  monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", broadcast_one_to_all)
  monkeypatch.setattr(multihost_utils, "process_allgather", process_allgather)
  return state


def test_allgather_rows_in_process_order(two_processes):
  table = np.array([[1, 2, 3], [4, 5, 6]], np.int64)
  gathered = distributed.allgather_rows(table)
  assert gathered.dtype == np.int32 and gathered.shape == (4, 3)
  np.testing.assert_array_equal(gathered, [[1, 2, 3], [4, 5, 6], [11, 12, 13], [14, 15, 16]])


@pytest.mark.parametrize("mine,theirs,want", [(False, 0, False), (True, 0, True), (False, 1, True)])
def test_any_process(two_processes, mine, theirs, want):
  two_processes.other_row = np.array([[theirs]], np.int32)
  assert distributed.any_process(mine) is want


@pytest.mark.parametrize("index", [0, 1])
def test_on_main_process_first_runs_fn_once_per_process(two_processes, index):
  two_processes.index = index
  calls = []
  assert distributed.on_main_process_first(lambda: calls.append(index) or "built", "dataset") == "built"
  assert calls == [index]


def test_on_main_process_first_failure_stops_every_process(two_processes):
  def fails():
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):  # process 0: its own error
    distributed.on_main_process_first(fails, "vocabulary")
  two_processes.index, two_processes.other_failed = 1, True
  calls = []
  with pytest.raises(ConfigError, match="Process 0 failed while preparing the vocabulary"):
    distributed.on_main_process_first(lambda: calls.append(1), "vocabulary")
  assert calls == []
