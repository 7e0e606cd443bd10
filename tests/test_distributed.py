"""Multi-process start-up settings and the single/multi-process helpers, without a cluster:
jax.distributed.initialize and the collectives are replaced by recorders. (tests/test_multihost.py
starts real processes; tests/cli/test_common.py turns the flags into settings.)"""

import inspect
import socket
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from jax._src.clusters import cloud_tpu_cluster
from jax.experimental import multihost_utils

from t5x_lite import distributed
from t5x_lite.config import ConfigError

REAL_INITIALIZE = jax.distributed.initialize  # Replaced by a recorder in the tests.

# Everything t5x-lite or JAX's cluster detectors read.
ENV = ("T5X_LITE_COORDINATOR", "T5X_LITE_NUM_PROCESSES", "T5X_LITE_PROCESS_ID",
       "T5X_LITE_HANDSHAKE_TIMEOUT", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES",
       "TPU_WORKER_ID", "TPU_SKIP_MDS_QUERY", "MEGASCALE_COORDINATOR_ADDRESS",
       "MEGASCALE_NUM_SLICES", "MEGASCALE_SLICE_ID", "SLURM_JOB_ID", "SLURM_STEP_NODELIST",
       "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "OMPI_MCA_orte_hnp_uri",
       "KUBERNETES_SERVICE_HOST")

# What srun sets in each task of a 2-task job step.
SLURM_STEP = {"SLURM_JOB_ID": "123", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
              "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}


@pytest.fixture
def env(monkeypatch):
  """A clean environment, jax.distributed.initialize / jax.config.update recorded, and a
  coordinator address that accepts connections (env.coordinator)."""
  for name in ENV:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", False)
  calls = Recorder()
  monkeypatch.setattr(jax.distributed, "initialize", calls.initialize)
  monkeypatch.setattr(jax.config, "update", calls.update)
  # A recorded join leaves no client; these make sure no later test sees a joined run.
  monkeypatch.setattr(distributed, "_joined", False)
  monkeypatch.setattr(distributed, "_client", None)
  with socket.socket() as listening:
    listening.bind(("localhost", 0))
    listening.listen()
    calls.coordinator = f"localhost:{listening.getsockname()[1]}"
    yield calls


class Recorder:
  def __init__(self):
    self.initialize_kwargs, self.updates, self.error, self.coordinator = [], [], None, None

  def initialize(self, **kwargs):
    self.initialize_kwargs.append(kwargs)
    if self.error:
      raise self.error

  def update(self, name, value):
    self.updates.append((name, value))


def _detected(**changes) -> dict:
  """The call that leaves everything to JAX's cluster detection."""
  return {"coordinator_address": None, "num_processes": None, "process_id": None,
          "initialization_timeout": distributed.HANDSHAKE_TIMEOUT_S
                                    + distributed._JAX_TIMEOUT_MARGIN_S, **changes}


def test_single_process_is_a_no_op(env):
  distributed.initialize()
  distributed.initialize(distributed.settings())
  distributed.initialize(distributed.settings(num_processes=1))
  # What a launcher may set for one process:
  distributed.initialize(distributed.settings(process_id=0))
  assert env.initialize_kwargs == [] and env.updates == []


def test_settings_reach_jax(env):
  distributed.initialize(distributed.settings(env.coordinator, num_processes=4, process_id=3))
  assert env.initialize_kwargs == [_detected(
      coordinator_address=env.coordinator, num_processes=4, process_id=3)]
  assert env.updates == [("jax_cpu_collectives_implementation", "gloo")]
  inspect.signature(REAL_INITIALIZE).bind(**env.initialize_kwargs[0])  # keywords this JAX takes


def test_environment_variables_are_the_defaults(env, monkeypatch):
  monkeypatch.setenv("T5X_LITE_COORDINATOR", env.coordinator)
  monkeypatch.setenv("T5X_LITE_NUM_PROCESSES", "2")
  monkeypatch.setenv("T5X_LITE_PROCESS_ID", "1")
  monkeypatch.setenv("T5X_LITE_HANDSHAKE_TIMEOUT", "60")
  assert distributed.settings() == distributed.Settings(env.coordinator, 2, 1, 60)
  assert distributed.settings(process_id=0).process_id == 0  # a given value (a flag) wins
  distributed.initialize()
  assert env.initialize_kwargs == [_detected(coordinator_address=env.coordinator,
                                             num_processes=2, process_id=1,
                                             initialization_timeout=60 + 30)]


def test_empty_variables_count_as_unset(env, monkeypatch):
  for name in ("T5X_LITE_COORDINATOR", "T5X_LITE_NUM_PROCESSES", "T5X_LITE_PROCESS_ID",
               "T5X_LITE_HANDSHAKE_TIMEOUT"):
    monkeypatch.setenv(name, "")
  assert distributed.settings() == distributed.Settings(
      None, None, None, distributed.HANDSHAKE_TIMEOUT_S)
  distributed.initialize()
  assert env.initialize_kwargs == []


@pytest.mark.parametrize("given", [
    {"coordinator": "host:1234"},
    {"num_processes": 2, "process_id": 0},
    {"coordinator": "host:1234", "num_processes": 2},
    {"process_id": 1},
])
def test_explicit_runs_need_all_three(env, given):
  with pytest.raises(ConfigError, match="needs --coordinator HOST:PORT, --num-processes N and --process-id I"):
    distributed.initialize(distributed.settings(**given))
  assert env.initialize_kwargs == []


@pytest.mark.parametrize("given,variables,message", [
    ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, {},
     r"--process-id 2 must be in 0\.\.1"),
    ({"coordinator": "h:1", "num_processes": 2, "process_id": -1}, {},
     r"--process-id -1 must be in 0\.\.1"),
    ({"num_processes": 1, "process_id": 1}, {}, r"--process-id 1 must be in 0\.\.0"),
    ({"num_processes": 0}, {}, "--num-processes 0 must be at least 1"),
    ({"handshake_timeout": 0}, {}, "--handshake-timeout 0 must be at least 1 second"),
    ({"coordinator": "localhost", "num_processes": 2, "process_id": 0}, {},
     r"Coordinator address 'localhost' \(--coordinator or T5X_LITE_COORDINATOR\) is not HOST:PORT"),
    ({"coordinator": "h:99999", "num_processes": 2, "process_id": 0}, {}, "is not HOST:PORT"),
    ({}, {"T5X_LITE_COORDINATOR": ":8476"}, "':8476' .* is not HOST:PORT"),
    ({}, {"T5X_LITE_NUM_PROCESSES": "two"},
     r"T5X_LITE_NUM_PROCESSES='two' is not a whole number; set it to one, or unset it"),
    ({}, {"T5X_LITE_PROCESS_ID": "1.0"}, "T5X_LITE_PROCESS_ID='1.0' is not a whole number"),
])
def test_bad_settings_are_clear_errors(env, monkeypatch, given, variables, message):
  for name, value in variables.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ConfigError, match=message):
    distributed.initialize(distributed.settings(**given))
  if not given:  # Read from the environment by default, with the same checks.
    with pytest.raises(ConfigError, match=message):
      distributed.initialize()
  assert env.initialize_kwargs == []


def test_ipv6_coordinator(env):
  assert distributed._host_and_port("[::1]:8476") == ("::1", 8476)  # pylint: disable=protected-access


def _fake_tpu_vm(monkeypatch, workers: str) -> None:
  """A Cloud TPU VM as JAX sees it: libtpu and chips found, topology in the metadata server."""
  metadata = {"agent-worker-number": "0", "worker-network-endpoints": workers, "tpu-env": ""}
  monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
  monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", lambda key: (metadata[key], 200))


@pytest.mark.parametrize("setup,detected", [
    # A SLURM job step (srun) with 2 tasks; JAX reads nothing outside a step (salloc's
    # shell, the batch script) nor a step of one task.
    (lambda mp: [mp.setenv(k, v) for k, v in SLURM_STEP.items()], True),
    (lambda mp: [mp.setenv("SLURM_NTASKS", "2"), mp.setenv("SLURM_JOB_ID", "123")], False),
    (lambda mp: [mp.setenv(k, v) for k, v in {**SLURM_STEP, "SLURM_NTASKS": "1"}.items()], False),
    # A plain Cloud TPU VM slice sets no TPU_WORKER_HOSTNAMES: JAX asks the metadata server.
    (lambda mp: _fake_tpu_vm(mp, "w0,w1"), True),
    (lambda mp: _fake_tpu_vm(mp, "w0"), False),
    # GKE: TPU_WORKER_HOSTNAMES, on a TPU VM only.
    (lambda mp: [_fake_tpu_vm(mp, ""), mp.setenv("TPU_SKIP_MDS_QUERY", "1"),
                 mp.setenv("TPU_WORKER_HOSTNAMES", "w0,w1")], True),
    (lambda mp: mp.setenv("TPU_WORKER_HOSTNAMES", "w0,w1"), False),
    # Open MPI (mpirun).
    (lambda mp: [mp.setenv("OMPI_MCA_orte_hnp_uri", "1531576320.0;tcp://10.96.0.1:34911"),
                 mp.setenv("OMPI_COMM_WORLD_SIZE", "2")], True),
])
def test_clusters_are_detected_as_jax_detects_them(env, monkeypatch, setup, detected):
  setup(monkeypatch)
  distributed.initialize()
  assert env.initialize_kwargs == ([_detected()] if detected else [])


def test_a_kubernetes_pod_without_the_kubernetes_package_is_one_quiet_process(env, monkeypatch,
                                                                               recwarn):
  monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
  distributed.initialize()
  assert env.initialize_kwargs == [] and not recwarn.list


def test_num_processes_1_means_one_process_inside_a_cluster(env, monkeypatch):
  for name, value in SLURM_STEP.items():
    monkeypatch.setenv(name, value)
  distributed.initialize(distributed.settings(num_processes=1, process_id=0))
  monkeypatch.setenv("T5X_LITE_NUM_PROCESSES", "1")
  distributed.initialize()
  assert env.initialize_kwargs == []


def test_a_failed_handshake_says_where_it_looked(env, monkeypatch):
  env.error = RuntimeError("DEADLINE_EXCEEDED")
  with pytest.raises(ConfigError, match=rf"Process 1 could not join the run through the coordinator at "
                                        rf"{env.coordinator}: DEADLINE_EXCEEDED\.") as info:
    distributed.initialize(distributed.settings(env.coordinator, num_processes=2, process_id=1))
  assert info.value.__cause__ is env.error
  assert " s:" not in str(info.value)  # No claim that it waited: JAX may fail at once.
  for name, value in SLURM_STEP.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ConfigError, match=r"This process could not join .* the address JAX detected "
                                        r"from the slurm environment"):
    distributed.initialize()


def test_an_absent_coordinator_is_named_within_the_timeout(env):
  with socket.socket() as closed:  # Bound, not listening: connections are refused.
    closed.bind(("localhost", 0))
    address = f"localhost:{closed.getsockname()[1]}"
    with pytest.raises(ConfigError, match=rf"Process 1 found no coordinator at {address} within 1 s"):
      distributed.initialize(distributed.settings(address, num_processes=2, process_id=1,
                                                  handshake_timeout=1))
  assert env.initialize_kwargs == []


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

