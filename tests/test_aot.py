"""Ahead-of-time compilation (`t5x-lite info --target`): XLA's memory accounting of the
train step for a device that is described, not present."""

import importlib.metadata
import json
import types

import pytest
from helpers import REPO, TINY_EXPERIMENT

from t5x_lite import aot
from t5x_lite.cli.main import main

INSTALLED = {(dist.metadata["Name"] or "").lower().replace("_", "-")
             for dist in importlib.metadata.distributions()}
HAS_CUDA_PLUGIN = "jax-cuda12-plugin" in INSTALLED
HAS_LIBTPU = "libtpu" in INSTALLED


def _info(capsys, *args) -> dict:
  status = main(["info", TINY_EXPERIMENT, "--json", *args])
  out = capsys.readouterr().out
  assert status == 0, out
  return json.loads(out)


def test_cpu_target_reports_the_compiled_step_per_device(capsys):
  report = _info(capsys, "--target", "cpu")
  assert report["activation_dtype"] == "float32"
  one = report["compiled"]
  assert one["target"] == "cpu" and one["devices"] == 1 and one["compile_s"] > 0
  memory = one["memory_per_device_bytes"]
  assert memory["arguments"] > 0 and memory["temp"] > 0
  assert memory["total"] == memory["arguments"] + memory["outputs_not_aliased"] + memory["temp"]
  assert one["fused_attention_calls"] == 0 and "fits" not in one  # no device memory to compare
  # Data parallel over 8 devices: each holds an eighth of the batch's activations.
  eight = _info(capsys, "--target", "cpu", "--devices", "8")["compiled"]
  assert eight["devices"] == 8 and eight["memory_per_device_bytes"]["temp"] < memory["temp"]


def test_human_report_has_the_compiled_section(capsys):
  assert main(["info", TINY_EXPERIMENT, "--target", "cpu"]) == 0
  out = capsys.readouterr().out
  assert "compiled train step per device, 1 x cpu" in out and "fused attention calls" in out


@pytest.mark.parametrize("args, message", [
    (["--target", "tpu9"], "--target tpu9: unknown; choose cpu, h100, h200, a100, or a TPU slice"),
    (["--target", "v4:2x2x1"], "--target v4:2x2x1: unknown"),
    (["--target", "v5e:2x2", "--devices", "4"], "a TPU target's topology (v5e:2x2) sets the device count"),
    (["--target", "cpu", "--devices", "9"], "--xla_force_host_platform_device_count=9"),
    (["--target", "cpu", "--devices", "0"], "--devices 0"),
])
def test_bad_targets_are_one_clear_error(capsys, args, message):
  assert main(["info", TINY_EXPERIMENT, *args]) == 2
  assert message in capsys.readouterr().err


@pytest.mark.skipif(HAS_CUDA_PLUGIN, reason="jax's CUDA plugin is installed here")
def test_gpu_target_without_the_plugin_says_how_to_get_it(capsys):
  assert main(["info", TINY_EXPERIMENT, "--target", "h100"]) == 2
  assert 'pip install "jax[cuda12]==' in capsys.readouterr().err


@pytest.mark.skipif(HAS_LIBTPU, reason="libtpu is installed here")
def test_tpu_target_without_libtpu_says_how_to_get_it(capsys):
  assert main(["info", TINY_EXPERIMENT, "--target", "v5e:2x2"]) == 2
  assert 'pip install "jax[tpu]==' in capsys.readouterr().err


@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu (jax[tpu]); no TPU needed")
def test_tpu_target_compiles_or_reports_what_does_not_fit(capsys):
  fits = _info(capsys, "--target", "v5e:2x2")
  assert fits["activation_dtype"] == "float32"  # the tiny preset fixes it; 'auto' would be bf16
  assert fits["compiled"]["devices"] == 4 and fits["compiled"]["fits"]
  assert fits["compiled"]["device_kind"].startswith("TPU v5")
  memory = fits["compiled"]["memory_per_device_bytes"]
  assert 0 < memory["temp"] and memory["total"] == (memory["arguments"] + memory["temp"]
                                                    + memory["outputs_not_aliased"])
  # T5.1.1-base at its batch of 256 over four 16 GB chips: the TPU compiler refuses it.
  status = main(["info", f"{REPO}/experiments/t5_1_1_base.py", "--target", "v5e:2x2", "--json"])
  too_big = json.loads(capsys.readouterr().out)["compiled"]
  assert status == 0 and not too_big["fits"] and "RESOURCE_EXHAUSTED" in too_big["compiler_message"]
  assert main(["info", TINY_EXPERIMENT, "--target", "v5e:7x3"]) == 2
  assert "not a TPU topology libtpu knows" in capsys.readouterr().err


class _CompiledWithStats:
  """Stands in for a compiled step: memory_bytes reads only its memory_analysis()."""

  def __init__(self, **stats):
    self.stats = types.SimpleNamespace(**stats)

  def memory_analysis(self):
    return self.stats


@pytest.mark.parametrize("platform, temp", [("tpu", 700), ("gpu", 900), ("cpu", 900)])
def test_tpu_scratch_is_what_the_compilers_peak_leaves(platform, temp):
  # libtpu's temp_size_in_bytes counts buffers that are never live together; on a TPU the
  # scratch is the compiler's peak less arguments and outputs. Other backends' temp is the
  # scratch allocation itself, and their peak means something else (the CPU's leaves out
  # the arguments).
  compiled = _CompiledWithStats(argument_size_in_bytes=1000, output_size_in_bytes=1100,
                                alias_size_in_bytes=1000, temp_size_in_bytes=900,
                                peak_memory_in_bytes=1800)
  memory = aot.memory_bytes(compiled, platform)
  assert memory == {"arguments": 1000, "outputs_not_aliased": 100, "temp": temp,
                    "total": 1100 + temp}


def test_tpu_without_a_peak_keeps_xlas_temp():
  compiled = _CompiledWithStats(argument_size_in_bytes=10, output_size_in_bytes=10,
                                alias_size_in_bytes=10, temp_size_in_bytes=5,
                                peak_memory_in_bytes=0)
  assert aot.memory_bytes(compiled, "tpu")["temp"] == 5


def test_target_config_describes_the_device():
  h100 = aot.target_config(aot.TARGETS["h100"])
  assert "core_count: 132" in h100 and f"device_memory_size: {81559 * 2**20}" in h100
  assert "cuda_compute_capability { major: 9 minor: 0 }" in h100
  assert 'device_description_str: "NVIDIA H100 80GB HBM3"' in h100


@pytest.mark.skipif(not HAS_CUDA_PLUGIN, reason="needs jax's CUDA plugin (jax[cuda12]); no GPU needed")
def test_h100_target_compiles_cudnn_attention_without_a_gpu(capsys, monkeypatch):
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
  sets = ["--set", "data.pack=false", "--set", "model.dtype=auto"]
  report = _info(capsys, "--target", "h100", *sets, "--set", "model.attention_impl=cudnn")
  assert report["activation_dtype"] == "bfloat16"  # model.dtype='auto' as on the GPU
  fused = report["compiled"]
  assert fused["device_kind"] == "NVIDIA H100 80GB HBM3" and fused["fits"]
  assert fused["memory_fraction"] == 0.9
  # Encoder self, decoder self and cross attention, forward and backward, per layer; a
  # policy that keeps the attention's output keeps the fused forward's results with it (the
  # backward pass does not run the forward kernel again), full remat runs it again.
  assert fused["fused_attention_calls"] >= 6
  calls = {policy: _info(capsys, "--target", "h100", *sets, "--set", "model.attention_impl=cudnn",
                         "--set", f"model.remat_policy={policy}")["compiled"]["fused_attention_calls"]
           for policy in ("none", "full")}
  assert calls["none"] == fused["fused_attention_calls"] < calls["full"]
  plain = _info(capsys, "--target", "h100", *sets)["compiled"]
  assert plain["fused_attention_calls"] == 0
