"""`t5x-lite info --target T --suggest`: the cheapest rematerialisation policy and the largest
batch that fit a device, found by compiling candidates for it (t5x_lite.aot; the device
need not be present).

Cheapest means least recomputed: the policies are tried from keeping everything to keeping
only layer inputs (with unrolled layers, leaving it to the compiler first), and the first
that fits at the experiment's batch wins. The largest batch
is searched by doubling (or halving, when nothing fits) the experiment's batch, so it stays
divisible by the devices, with that policy and with full rematerialisation.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

from t5x_lite import aot
from t5x_lite.config import ConfigError, ExperimentConfig
from t5x_lite.model import REMAT_POLICIES

MAX_DOUBLINGS = 4


def _candidate(config: ExperimentConfig, target: str, devices: list, batch_size: int,
               policy: str) -> dict:
  """The compile report of `config` at this batch and policy, with what was tried."""
  trial = copy.deepcopy(config)
  trial.train.batch_size, trial.model.remat_policy = batch_size, policy
  try:
    report = aot.compile_report(trial, target, devices)
  except ConfigError as e:  # e.g. a halved batch no longer divides over the devices
    return {"batch_size": batch_size, "remat_policy": policy, "fits": False, "compiler_message": str(e)}
  return {"batch_size": batch_size, "remat_policy": policy, **report}


def suggest(config: ExperimentConfig, target: str, devices: list,
            on_candidate: Optional[Callable[[dict], None]] = None) -> dict:
  """{"cheapest_policy", "largest_batch": {policy: batch}, "candidates": [...]}: None where
  nothing fits. `on_candidate` sees each compiled candidate as it comes (compiling a large
  model takes minutes each)."""
  if not (aot.is_tpu(target) or target in aot.TARGETS):
    raise ConfigError(f"--suggest needs a device with known memory: --target "
                      f"{', '.join(aot.TARGETS)} or a TPU slice such as v5e:2x2, not {target}.")
  candidates: list[dict] = []

  def fits(batch_size: int, policy: str) -> bool:
    candidate = _candidate(config, target, devices, batch_size, policy)
    candidates.append(candidate)
    if on_candidate is not None:
      on_candidate(candidate)
    return bool(candidate.get("fits"))

  batch = config.train.batch_size
  # Unrolled layers may also be left to the compiler (which the TPU's rematerialises itself).
  policies = REMAT_POLICIES if config.model.scan_layers else ("compiler",) + REMAT_POLICIES
  cheapest = next((policy for policy in policies if fits(batch, policy)), None)
  largest: dict[str, Optional[int]] = {}
  for policy in dict.fromkeys(p for p in (cheapest, "full") if p is not None):
    # Full remat keeps the least, so it fits wherever any policy does.
    largest[policy] = _largest_batch(batch, policy, fits, fits_at_batch=cheapest is not None)
  return {"target": target, "batch_size": batch, "cheapest_policy": cheapest,
          "largest_batch": largest, "candidates": candidates}


def _largest_batch(batch: int, policy: str, fits: Callable[[int, str], bool],
                   fits_at_batch: bool) -> Optional[int]:
  """Doubling from `batch` when it fits, else halving down to one that fits."""
  if fits_at_batch:
    largest = batch
    for _ in range(MAX_DOUBLINGS):
      if not fits(2 * largest, policy):
        break
      largest *= 2
    return largest
  while batch % 2 == 0 and batch > 1:
    batch //= 2
    if fits(batch, policy):
      return batch
  return None


def format_suggestion(result: dict) -> str:
  lines = [f"suggestion for {result['target']} (XLA's memory accounting of each candidate):"]
  for c in result["candidates"]:
    if "memory_per_device_bytes" in c:
      memory = f"{c['memory_per_device_bytes']['total'] / 2**30:7.1f} GiB per device"
    else:
      memory = f"refused: {c.get('compiler_message', '')[:80]}"
    lines.append(f"  batch {c['batch_size']:>6}  remat {c['remat_policy']:<14} "
                 f"{'fits    ' if c.get('fits') else 'no fit  '}{memory}")
  batch = result["batch_size"]
  if result["cheapest_policy"] is None:
    lines.append(f"at batch {batch} nothing fits, even model.remat_policy=full")
  else:
    lines.append(f"at batch {batch} the cheapest remat policy that fits: "
                 f"--set model.remat_policy={result['cheapest_policy']}")
  for policy, largest in result["largest_batch"].items():
    searched = "" if largest is None or largest < batch * 2 ** MAX_DOUBLINGS else " (or more: search stopped)"
    found = f"--set train.batch_size={largest}{searched}" if largest else "none (halving found no fit)"
    lines.append(f"largest batch with remat {policy}: {found}")
  return "\n".join(lines)
