"""Multi-process start-up through JAX's own runtime (jax.distributed), and stopping.

Clusters that jax.distributed.initialize() configures by itself (TPU VM slices, SLURM
job steps, Open MPI, ...) are detected with JAX's own detectors; other clusters pass a
coordinator, a process count and an id, by flag or environment variable. Only process 0
writes logs and metrics; every process saves and restores checkpoints.

An error on one process stops them all within seconds. The failing process publishes
its message through JAX's coordination service and exits without JAX's shutdown barrier
(stop_all_processes); a watcher thread on every other process, which may be blocked in
a collective waiting for it, prints that message and exits too. Without this the others
would wait minutes for JAX's heartbeat timeout, then abort with a C++ stack trace, and
process 0's output would never show the real error.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import os
import socket
import sys
import threading
import time
import warnings
from typing import Any, Optional

import jax
import numpy as np

from t5x_lite.config import ConfigError

# Default seconds to wait for all processes to reach the coordinator before giving up.
HANDSHAKE_TIMEOUT_S = 300
# JAX's own handshake limit is ours plus this, so our message comes before its abort.
_JAX_TIMEOUT_MARGIN_S = 30
# Coordination-service keys: the first failure's record; per process, the key its
# watcher waits on; one entry per process that has left after a failure.
_STOP_KEY = "t5x_lite/stop"
_WAKE_KEY = "t5x_lite/wake/{}"
_LEFT_DIR = "t5x_lite/left/"
# How long a stopping process 0, which hosts the service, waits for the others to read
# the stop record before it exits and takes the service with it.
_STOP_NOTICE_S = 10
_EXIT_GRACE_S = 1
_WATCH_MS = 3_600_000  # One wait of the watcher; it waits again after each.

# Set once this process has joined a multi-process run; the client may stay None (below).
_joined = False
_client: Optional[Any] = None
_label = "t5x-lite"  # "t5x-lite COMMAND", for the lines the watcher prints.
# Held by whichever of the main thread and the watcher ends the process first.
_stopping = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Settings:
  """The multi-process flags, each falling back to its environment variable."""

  coordinator: Optional[str]
  num_processes: Optional[int]
  process_id: Optional[int]
  handshake_timeout: int


def settings(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
             process_id: Optional[int] = None,
             handshake_timeout: Optional[int] = None) -> Settings:
  """The settings given (flags, or arguments from Python), each falling back to its
  environment variable; checked, so a typo is a message, not a traceback."""
  coordinator = coordinator or os.environ.get("T5X_LITE_COORDINATOR") or None
  result = Settings(
      coordinator=coordinator,
      num_processes=_flag_or_env(num_processes, "T5X_LITE_NUM_PROCESSES"),
      process_id=_flag_or_env(process_id, "T5X_LITE_PROCESS_ID"),
      handshake_timeout=_flag_or_env(handshake_timeout, "T5X_LITE_HANDSHAKE_TIMEOUT",
                                     HANDSHAKE_TIMEOUT_S))
  if coordinator is not None:
    _host_and_port(coordinator)
  if result.num_processes is not None and result.num_processes < 1:
    raise ConfigError(f"--num-processes {result.num_processes} must be at least 1.")
  if result.handshake_timeout < 1:
    raise ConfigError(f"--handshake-timeout {result.handshake_timeout} must be at least 1 second.")
  if result.num_processes is not None and result.process_id is not None and not (
      0 <= result.process_id < result.num_processes):
    raise ConfigError(
        f"--process-id {result.process_id} must be in 0..{result.num_processes - 1}.")
  return result


def _flag_or_env(flag: Optional[int], variable: str,
                 default: Optional[int] = None) -> Optional[int]:
  if flag is not None:
    return flag
  value = os.environ.get(variable, "").strip()
  if not value:
    return default
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"{variable}={value!r} is not a whole number; set it to one, "
                      "or unset it.") from None


def _host_and_port(address: str) -> tuple[str, int]:
  """("host", port) of "HOST:PORT" ("[v6]:PORT" too)."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ConfigError(
        f"Coordinator address {address!r} (--coordinator or T5X_LITE_COORDINATOR) is not "
        "HOST:PORT; give process 0's address and a free port, e.g. 10.0.0.1:8476.")
  return host.removeprefix("[").removesuffix("]"), int(port)


def _cluster_processes() -> tuple[str, int]:
  """(name, process count) of the cluster jax.distributed.initialize() would detect by
  itself, or ("", 1): JAX's own detectors, in JAX's order, so the two always agree
  (Cloud TPU VMs are found through the metadata server, SLURM only inside a job step)."""
  from jax._src import clusters  # pylint: disable=import-outside-toplevel  (no public API)
  for cluster in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
    with warnings.catch_warnings():  # Any Kubernetes pod: "the kubernetes package is missing".
      warnings.simplefilter("ignore")
      if cluster.opt_in_only_method or not cluster.is_env_present():
        continue
    name = cluster.name or cluster.__name__
    try:
      return name, cluster.get_process_count()
    except Exception as e:  # Metadata server down, a pod outside a Job, ...
      raise ConfigError(
          f"JAX detected a {name} cluster but could not read its size: {e}. Pass "
          "--num-processes 1 for a single-process run.") from e
  return "", 1


def initialize(s: Optional[Settings] = None, label: str = "t5x-lite") -> None:
  """Joins the run's processes; a no-op for a single process. `s` defaults to the
  environment's settings; `label` ("t5x-lite train") starts the lines printed on errors."""
  s = s or settings()
  if s.num_processes == 1:  # Said so explicitly: never join a detected cluster.
    return
  cluster = ""
  if s.coordinator is not None or s.num_processes is not None or s.process_id:
    if s.coordinator is None or s.num_processes is None or s.process_id is None:
      raise ConfigError(
          "A multi-process run needs --coordinator HOST:PORT, --num-processes N and "
          "--process-id I (or T5X_LITE_COORDINATOR, T5X_LITE_NUM_PROCESSES and "
          "T5X_LITE_PROCESS_ID).")
  else:
    cluster, processes = _cluster_processes()
    if processes == 1:
      return
  global _label
  _label = label
  # CPU processes exchange collectives over gloo; GPUs and TPUs ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  deadline = time.monotonic() + s.handshake_timeout
  if s.process_id:  # Process 0 starts the coordinator; the others first check it is there.
    _wait_for_coordinator(s, deadline)
  where = s.coordinator or f"the address JAX detected from the {cluster} environment"
  who = f"Process {s.process_id}" if s.process_id is not None else "This process"
  left = max(1.0, deadline - time.monotonic())
  # JAX aborts the process from C++ when its own handshake limit passes, without saying
  # where it looked: this timer says it first.
  watchdog = threading.Timer(left, _handshake_timed_out, (s, who, where))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
        coordinator_address=s.coordinator, num_processes=s.num_processes,
        process_id=s.process_id,
        initialization_timeout=math.ceil(left) + _JAX_TIMEOUT_MARGIN_S)
  except Exception as e:  # The runtime's own errors do not say where it was looking.
    raise ConfigError(
        f"{who} could not join the run through the coordinator at {where}: {e}. Check that "
        "process 0 is running and that the address and port are reachable from every "
        "host.") from e
  finally:
    watchdog.cancel()
  _watch_for_stops()


def _wait_for_coordinator(s: Settings, deadline: float) -> None:
  """Returns once something accepts connections at the coordinator's address."""
  host, port = _host_and_port(s.coordinator)
  while True:
    try:
      with socket.create_connection((host, port), timeout=5):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise ConfigError(
            f"Process {s.process_id} found no coordinator at {s.coordinator} within "
            f"{s.handshake_timeout} s ({e}). Start process 0 with the same --coordinator; check "
            "the host and port, and that they are reachable from this host; raise "
            "--handshake-timeout if process 0 starts slowly.") from None
    time.sleep(1)


def _handshake_timed_out(s: Settings, who: str, where: str) -> None:
  """Runs on a timer thread while the main thread is still inside JAX's handshake."""
  count = f"all {s.num_processes} processes" if s.num_processes else "every process"
  _exit(2, f"{_label}: error: {who} waited {s.handshake_timeout} s at the coordinator at "
           f"{where} for {count} to join. Start every process with the same "
           "--coordinator and --num-processes and its own --process-id, check that the "
           "address is reachable from every host, or raise --handshake-timeout.")


def _exit(status: int, line: str = "") -> None:
  """Prints `line`, then ends the process at once: no atexit handlers and no JAX
  shutdown barrier, which would wait for processes that have stopped."""
  _say(line)
  os._exit(status)  # pylint: disable=protected-access


def _say(line: str) -> None:
  if line:  # One write, so other threads' output cannot split the line.
    sys.stderr.write(line + "\n")
  sys.stdout.flush()
  sys.stderr.flush()


def _tag() -> str:
  return f"process {jax.process_index()} of {jax.process_count()}"


def _watch_for_stops() -> None:
  """Starts the thread that ends this process when another one stops the run."""
  global _joined, _client
  _joined = True
  from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel
  # The client Orbax uses too. It has no public API: if a JAX release moves it, errors
  # still end this process at once, and the others follow at JAX's heartbeat timeout.
  _client = getattr(getattr(jax_distributed, "global_state", None), "client", None)
  if _client is None:
    return
  watcher = threading.Thread(target=_watch, name="t5x-lite-stop-watcher", daemon=True)
  watcher.start()
  atexit.register(_end_watch, watcher)


def _end_watch(watcher: threading.Thread) -> None:
  """At a normal exit (before JAX's clean-up, which runs after): wakes the watcher and
  waits for it, as a thread still inside JAX's client when the interpreter ends aborts
  the process."""
  _wake(jax.process_index())
  watcher.join(_STOP_NOTICE_S)


def _wake(process: int) -> None:
  try:
    _client.key_value_set(_WAKE_KEY.format(process), "1", allow_overwrite=True)
  except Exception:  # pylint: disable=broad-except  (that process's host is gone)
    pass


def _watch() -> None:
  while True:
    try:
      _client.blocking_key_value_get(_WAKE_KEY.format(jax.process_index()), _WATCH_MS)
      break
    except Exception as e:  # Timed out: wait again. Anything else: the runtime is ending.
      if "DEADLINE_EXCEEDED" not in str(e):
        return
  record = _first_stop()  # None: woken by _end_watch.
  if record and _stopping.acquire(blocking=False):  # Else this process stops on its own.
    _leave(record["status"], f"{_label} ({_tag()}): error: process {record['process']} "
                             f"stopped the run: {record['reason']}")


def stop_all_processes(status: int, reason: str) -> None:
  """In a multi-process run: tells the other processes why this one stops, then ends it
  with `status` at once. Returns (doing nothing) in a single-process run.

  The caller has printed the full error; `reason` is its one-line summary.
  """
  if not _joined:
    return
  if _client is None:
    _exit(status)
  _stopping.acquire()  # Never released: the process ends here, or in the watcher.
  me = jax.process_index()
  try:
    _client.key_value_set(_STOP_KEY, json.dumps({"process": me, "status": status,
                                                 "reason": reason}))
  except Exception:  # pylint: disable=broad-except  (another process stopped first)
    first = _first_stop()
    if first:
      _leave(status, f"{_label} ({_tag()}): process {first['process']} had stopped the run "
                     f"first: {first['reason']}")
    _leave(status)
  for other in range(jax.process_count()):
    if other != me:
      _wake(other)
  _leave(status)


def _leave(status: int, line: str = "") -> None:
  """Ends this process like _exit. Process 0 hosts the coordination service, whose end
  makes the others abort with a stack trace: it first waits (briefly) for them to leave.
  They say so as the last thing before they exit."""
  _say(line)
  if jax.process_index() == 0:
    deadline = time.monotonic() + _STOP_NOTICE_S
    while time.monotonic() < deadline and len(_left()) < jax.process_count() - 1:
      time.sleep(0.1)
    time.sleep(_EXIT_GRACE_S)  # For the last one to be gone, not just about to go.
  else:
    try:
      _client.key_value_set(_LEFT_DIR + str(jax.process_index()), "1")
    except Exception:  # pylint: disable=broad-except  (the service is gone already)
      pass
  os._exit(status)  # pylint: disable=protected-access


def _first_stop() -> Optional[dict]:
  try:
    return json.loads(_client.key_value_try_get(_STOP_KEY))
  except Exception:  # pylint: disable=broad-except  (no stop record)
    return None


def _left() -> list:
  try:
    return _client.key_value_dir_get(_LEFT_DIR)
  except Exception:  # pylint: disable=broad-except
    return []


def on_main_process_first(fn, name: str):
  """Runs fn on process 0, then on the others once it has finished (e.g. building a
  dataset or training a vocabulary that all processes then read from disk). If it
  fails on process 0, the others stop too instead of waiting forever."""
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils
  result, error = None, None
  if jax.process_index() == 0:
    try:
      result = fn()
    except Exception as e:  # Re-raised below, once the others know.
      error = e
  failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
  if error is not None:
    raise error
  if failed:
    raise ConfigError(f"Process 0 failed while preparing the {name}; its output says why.")
  return fn() if jax.process_index() != 0 else result


def any_process(flag: bool) -> bool:
  """True on every process if it is True on any (e.g. a SIGTERM seen by one host)."""
  if jax.process_count() == 1:
    return flag
  return bool(allgather_rows(np.array([[int(flag)]], np.int32)).any())


def allgather_rows(table: np.ndarray) -> np.ndarray:
  """(k, m) int32 rows from every process -> (processes * k, m), in process order."""
  if jax.process_count() == 1:
    return table
  from jax.experimental import multihost_utils
  gathered = multihost_utils.process_allgather(table.astype(np.int32))
  return np.asarray(gathered).reshape(-1, table.shape[-1])
