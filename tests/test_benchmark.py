"""`t5x-lite benchmark` and its PyTorch peer, on tiny models on the CPU."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from t5x_lite import benchmark, flops, model
from t5x_lite import config as config_lib
from t5x_lite.checkpoints import VOCABULARY_FILE
from t5x_lite.cli.main import main
from t5x_lite.data import load_vocabulary
from t5x_lite.data.packing import KEYS as BATCH_KEYS

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_EXPERIMENT = str(ROOT / "experiments" / "tiny_python_docs.py")
# A smaller model and rows than the experiment's, so the real-data runs stay fast.
SMALL = [f"--set={setting}" for setting in (
    "data.inputs_length=32", "data.targets_length=8", "model.d_model=32", "model.d_ff=64",
    "model.d_kv=8", "model.num_encoder_layers=1", "model.num_decoder_layers=1")]
FIELDS = (
    "system", "experiment", "batch", "inputs_length", "targets_length", "steps", "warmup",
    "step_time_median_s", "step_time_mean_s", "step_time_min_s", "seq_per_s", "tokens_per_s",
    "flops_per_sequence", "tflops_per_s", "peak_tflops", "mfu",
    "mfu_of_measured_matmul", "compile_s", "peak_memory_bytes",
    "loss", "parameters", "device_kind", "device_count", "backend", "settings", "model", "versions")


def _one_json_line(text: str) -> dict:
  lines = text.strip().splitlines()
  assert len(lines) == 1, text
  return json.loads(lines[0])


def test_benchmark_command_prints_one_json_record(capsys):
  status = main([
      "benchmark", TINY_EXPERIMENT, "--set", "model.vocab_size=256",
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
  assert record["mfu_of_measured_matmul"] is None  # no matmul rate measured on a CPU
  assert record["peak_memory_bytes"] is None  # the CPU backend reports none
  memory = record["compiled_memory"]  # XLA's accounting is there on every backend
  assert memory["arguments"] > 4 * record["parameters"] and memory["temp"] > 0
  assert memory["total"] == memory["arguments"] + memory["outputs_not_aliased"] + memory["temp"]
  assert record["settings"]["dtype"] == "float32"
  assert {"scan_layers", "remat_policy", "attention_impl", "loss_chunk_size"} <= set(record["settings"])
  assert set(record["versions"]) == {"jax", "jaxlib", "flax"}
  assert "input" not in record  # synthetic batches only, unless --data real


def test_benchmark_rejects_zero_steps(capsys):
  status = main(["benchmark", TINY_EXPERIMENT, "--steps", "0"])
  assert status == 2
  assert "--steps" in capsys.readouterr().err


def test_real_data_record_compares_the_training_loader_with_synthetic_batches(capsys, tmp_path):
  status = main(["benchmark", TINY_EXPERIMENT, "--batch", "8", "--steps", "3", "--warmup", "1",
                     "--data", "real", "--workdir", str(tmp_path), *SMALL])
  assert status == 0
  record = _one_json_line(capsys.readouterr().out)
  assert set(FIELDS) <= set(record) and np.isfinite(record["loss"])
  fields = record["input"]
  assert fields["dataset"] == "python_docs"
  assert fields["synthetic_step_s"] > 0 and fields["real_step_s"] > 0
  assert fields["slowdown"] == pytest.approx(fields["real_step_s"] / fields["synthetic_step_s"] - 1)
  assert 0 < fields["packing_efficiency"] <= 1
  assert fields["loader_batches_per_s"] > 0
  # Every row of a packed batch holds at least one example.
  assert fields["loader_examples_per_s"] / fields["loader_batches_per_s"] >= 8 - 1e-9
  # The vocabulary is resolved as train resolves it: its copy kept in the workdir, and
  # model.vocab_size (None in the experiment) taken from it for both loops' one step.
  assert record["model"]["vocab_size"] == load_vocabulary(str(tmp_path / VOCABULARY_FILE), 100).vocab_size


def test_real_data_names_a_missing_dataset(capsys, tmp_path):
  status = main(["benchmark", TINY_EXPERIMENT, "--data", "real", "--set", "data.dataset=c4/en",
                     "--set", f"data.data_dir={tmp_path}"])
  assert status == 2
  assert "Dataset 'c4/en' not found" in capsys.readouterr().err


def test_benchmark_refuses_an_unknown_data_source(capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(["benchmark", TINY_EXPERIMENT, "--data", "c4"])
  assert exit_info.value.code == 2
  assert "invalid choice: 'c4'" in capsys.readouterr().err


def test_pipelined_loop_times_only_the_batches_after_warmup_and_prefetch():
  """Pulls warmup batches, then the skipped (prefetched) ones, then the timed ones; the
  packing efficiency is that of the timed batches alone."""
  def step(state, batch):  # Counts the steps taken.
    return state + 1, {"loss": state}

  full = benchmark.synthetic_batch(2, 4, 2, vocab_size=10)
  half = dict(full, encoder_segment_ids=np.array([[0, 0, 1, 1]] * 2, np.int32),
              decoder_segment_ids=np.array([[0, 1]] * 2, np.int32))
  batches = iter([full] * 2 + [full] * 3 + [half] * 4)  # warmup 2, skip 3, steps 4: no more
  sharding = NamedSharding(Mesh(jax.devices()[:1], ("data",)), PartitionSpec("data"))
  seconds, packing, state = benchmark.pipelined_step_time(step, jnp.zeros(()), batches, sharding,
                                                          steps=4, warmup=2, skip=3)
  assert seconds > 0 and packing == 0.5 and int(state) == 6


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
  assert batch["decoder_loss_weights"].dtype == np.float32


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
  # The datasheet peak (989), with the matmul rate measured through JAX (789) kept apart.
  assert flops.peak_flops_per_device(device_kind="NVIDIA H100 80GB HBM3") == 989e12
  assert flops.peak_flops_per_device(device_kind="NVIDIA H100 PCIe") == 756e12
  assert flops.measured_matmul_flops_per_device("NVIDIA H100 80GB HBM3") == 789e12
  assert flops.measured_matmul_flops_per_device("cpu") == 0.0
  assert flops.peak_flops_per_device(device_kind="cpu") == 0.0
  assert flops.peak_flops_per_device(2e12, device_kind="NVIDIA H100 80GB HBM3") == 2e12
