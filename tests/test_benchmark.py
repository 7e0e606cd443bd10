"""`t5x-lite benchmark` and its PyTorch peer, on tiny models on the CPU."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from t5x_lite import benchmark, cli, config as config_lib, flops, model
from t5x_lite.data.packing import KEYS as BATCH_KEYS

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIELDS = (
    "system", "experiment", "batch", "inputs_length", "targets_length", "steps", "warmup",
    "step_time_median_s", "step_time_mean_s", "step_time_min_s", "seq_per_s", "tokens_per_s",
    "flops_per_sequence", "tflops_per_s", "peak_tflops", "mfu", "compile_s", "peak_memory_bytes",
    "loss", "parameters", "device_kind", "device_count", "backend", "settings", "model", "versions")


def _one_json_line(text: str) -> dict:
  lines = text.strip().splitlines()
  assert len(lines) == 1, text
  return json.loads(lines[0])


def test_benchmark_command_prints_one_json_record(capsys):
  status = cli.main([
      "benchmark", str(ROOT / "experiments" / "tiny_python_docs.py"), "--set", "model.vocab_size=256",
      "--batch", "8", "--steps", "2", "--warmup", "1", "--peak-tflops", "2"])
  assert status == 0
  record = _one_json_line(capsys.readouterr().out)
  assert set(FIELDS) <= set(record)
  assert record["system"] == "t5x-lite" and record["experiment"] == "tiny_python_docs"
  assert (record["batch"], record["inputs_length"], record["targets_length"]) == (8, 128, 32)
  assert record["seq_per_s"] > 0 and record["compile_s"] > 0 and np.isfinite(record["loss"])
  assert record["seq_per_s"] == pytest.approx(8 / record["step_time_median_s"])
  assert record["tokens_per_s"] == pytest.approx(record["seq_per_s"] * 160)
  tiny = config_lib.tiny(256)
  assert record["flops_per_sequence"] == flops.train_flops_per_sequence(tiny, 128, 32)
  assert record["parameters"] == model.count_params(tiny)
  # MFU is against the stated peak of every device of the mesh.
  assert record["peak_tflops"] == 2 * record["device_count"]
  assert record["mfu"] == pytest.approx(record["tflops_per_s"] / record["peak_tflops"])
  assert record["peak_memory_bytes"] is None  # the CPU backend reports none
  assert record["settings"]["dtype"] == "float32"
  assert {"scan_layers", "remat_policy", "attention_impl"} <= set(record["settings"])
  assert set(record["versions"]) == {"jax", "jaxlib", "flax"}


def test_benchmark_rejects_zero_steps(capsys):
  status = cli.main(["benchmark", str(ROOT / "experiments" / "tiny_python_docs.py"), "--steps", "0"])
  assert status == 2
  assert "--steps" in capsys.readouterr().err


def test_synthetic_batch_is_full_rows_shifted_right():
  batch = benchmark.synthetic_batch(3, 16, 8, vocab_size=50, seed=1)
  assert list(batch) == list(BATCH_KEYS)
  assert batch["encoder_input_tokens"].shape == (3, 16) and batch["decoder_target_tokens"].shape == (3, 8)
  for key in ("encoder_input_tokens", "decoder_target_tokens"):
    assert batch[key].dtype == np.int32
    assert batch[key].min() >= 2 and batch[key].max() < 50  # no padding, no EOS
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 0], 0)
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], batch["decoder_target_tokens"][:, :-1])
  for key in ("encoder_segment_ids", "decoder_segment_ids", "decoder_loss_weights"):
    np.testing.assert_array_equal(batch[key], 1)
  np.testing.assert_array_equal(batch["encoder_positions"], np.tile(np.arange(16), (3, 1)))
  np.testing.assert_array_equal(batch["decoder_positions"], np.tile(np.arange(8), (3, 1)))
  assert batch["decoder_loss_weights"].dtype == np.float32


@pytest.mark.parametrize("environ,expected", [
    ({"JAX_PLATFORMS": "cpu"}, None),
    ({"JAX_PLATFORMS": "cuda"}, " ".join(benchmark.GPU_XLA_FLAGS)),
    ({"JAX_PLATFORMS": "cuda", "XLA_FLAGS": ""}, None),  # the user's choice, even empty, wins
])
def test_gpu_xla_flags_only_on_gpu_and_never_over_the_users(environ, expected):
  before = dict(environ)
  assert benchmark.set_gpu_xla_flags(environ) == expected
  assert environ.get("XLA_FLAGS") == (expected if expected is not None else before.get("XLA_FLAGS"))


def test_hf_peer_prints_one_json_record_with_the_same_flops(capsys):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  spec = importlib.util.spec_from_file_location("bench_hf_t5", ROOT / "tools" / "bench_hf_t5.py")
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)
  status = tool.main(["--size", "tiny", "--vocab-size", "256", "--batch", "2", "--inputs-length", "32",
                      "--targets-length", "16", "--steps", "2", "--warmup", "1", "--device", "cpu"])
  assert status == 0
  record = _one_json_line(capsys.readouterr().out)
  assert set(FIELDS) <= set(record)
  assert record["system"] == "hf-transformers-t5" and record["seq_per_s"] > 0
  tiny = config_lib.tiny(256)
  assert record["flops_per_sequence"] == flops.train_flops_per_sequence(tiny, 32, 16)
  assert record["parameters"] == model.count_params(tiny)  # lm_head untied, as in T5.1.1
  assert record["settings"]["torch_compile"] is False and record["settings"]["optimizer"] == "adamw"
  assert record["mfu"] is None and record["peak_memory_bytes"] is None


def test_peak_flops_of_a_named_device_kind():
  """Looked up by prefix for the torch peer's device names; an override wins; unknown is 0."""
  assert flops.peak_flops_per_device(device_kind="NVIDIA H100 80GB HBM3") == 789e12
  assert flops.peak_flops_per_device(device_kind="cpu") == 0.0
  assert flops.peak_flops_per_device(2e12, device_kind="NVIDIA H100 80GB HBM3") == 2e12
