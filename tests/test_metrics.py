"""metrics.jsonl, TensorBoard events, W&B runs and the progress bar."""

import glob
import json
import os
import struct
import subprocess
import sys

import pytest
from helpers import TINY_EXPERIMENT, TINY_SETTINGS

from t5x_lite import config as config_lib
from t5x_lite import metrics


def _lines(workdir) -> list[str]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return f.read().splitlines()


def _events(workdir) -> list:
  """Every Event in the run's TensorBoard files (TFRecord framing: length, crc, data, crc)."""
  from tensorboardX.proto import event_pb2
  events = []
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.*"))):
    with open(path, "rb") as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[offset + 12:offset + 12 + length])
      events.append(event)
      offset += 12 + length + 4
  return events


def _scalars(workdir) -> dict[tuple[str, int], float]:
  return {(value.tag, event.step): value.simple_value
          for event in _events(workdir) for value in event.summary.value}


def test_one_json_line_per_write(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write(1, "train", {"loss": 2.5, "accuracy": 0.25})
  writer.write(1, "validation", {"loss": 3.0})
  writer.close()
  assert [json.loads(line) for line in _lines(tmp_path)] == [
      {"step": 1, "split": "train", "loss": 2.5, "accuracy": 0.25},
      {"step": 1, "split": "validation", "loss": 3.0}]
  assert metrics.read_metrics(str(tmp_path))[1] == {"step": 1, "split": "validation", "loss": 3.0}
  scalars = _scalars(tmp_path)
  assert scalars[("train/loss", 1)] == 2.5 and scalars[("validation/loss", 1)] == 3.0
  assert scalars[("train/accuracy", 1)] == 0.25


def test_resumed_writer_drops_lines_past_the_resume_step(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  for step in range(1, 6):
    writer.write(step, "train", {"loss": float(step)})
  writer.write(3, "validation", {"loss": 9.0})
  writer.close()
  writer = metrics.MetricWriter(str(tmp_path), resume_step=3)
  writer.write(4, "train", {"loss": 40.0})
  writer.close()
  records = metrics.read_metrics(str(tmp_path))
  assert [(r["step"], r["split"], r["loss"]) for r in records] == [
      (1, "train", 1.0), (2, "train", 2.0), (3, "train", 3.0), (3, "validation", 9.0),
      (4, "train", 40.0)]
  # TensorBoard drops the old step 4 and 5 too: the new writer purges from step 4 on.
  starts = [e.step for e in _events(tmp_path) if e.HasField("session_log")]
  assert 4 in starts and 3 not in starts


def test_fresh_writer_starts_an_empty_file(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 7, "split": "train", "loss": 1.0}) + "\n")
  metrics.MetricWriter(str(tmp_path)).close()
  assert metrics.read_metrics(str(tmp_path)) == []


def test_disabled_writer_leaves_the_directory_alone(tmp_path):
  """Processes other than 0 must neither truncate process 0's file nor write to it."""
  line = json.dumps({"step": 7, "split": "train", "loss": 1.0}) + "\n"
  (tmp_path / "metrics.jsonl").write_text(line)
  writer = metrics.MetricWriter(str(tmp_path), enabled=False, resume_step=2)
  writer.write(8, "train", {"loss": 0.5})
  writer.close()
  assert (tmp_path / "metrics.jsonl").read_text() == line
  assert os.listdir(tmp_path) == ["metrics.jsonl"]


def test_read_metrics_of_a_missing_file_and_blank_lines(tmp_path):
  assert metrics.read_metrics(str(tmp_path / "nowhere")) == []
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\n\n  \n{"step": 2, "split": "train"}\n')
  assert [r["step"] for r in metrics.read_metrics(str(tmp_path))] == [1, 2]


def test_lower_is_better_ignores_case_and_prefixes():
  assert metrics.lower_is_better("Validation/Loss") and metrics.lower_is_better("EVAL_PERPLEXITY")
  assert not metrics.lower_is_better("validation/Accuracy") and not metrics.lower_is_better("BLEU")


def test_progress_bar_moves_to_the_step(capsys):
  bar = metrics.ProgressBar(total=10, initial=3)
  bar.update(5)
  bar.update(7)
  bar.close()
  err = capsys.readouterr().err
  assert "7/10" in err and "loss=" not in err


def test_progress_bar_shows_loss_throughput_and_mfu(capsys):
  bar = metrics.ProgressBar(total=10)
  bar.update(2, {"loss": 1.234567, "seq_per_s": 12.34, "mfu": 0.4567})
  err = capsys.readouterr().err
  assert "2/10" in err and "loss=1.2346" in err and "seq/s=12.3" in err and "mfu=45.7%" in err
  bar.update(4, {"loss": 0.5, "seq_per_s": 8.0})  # MFU unknown (no peak for this device)
  bar.close()
  last = capsys.readouterr().err.split("\r")[-1]
  assert "loss=0.5000" in last and "mfu" not in last


def test_progress_bar_message_goes_above_the_bar(capsys):
  bar = metrics.ProgressBar(total=10)
  bar.write("step 5: validation loss 1.0000")
  bar.close()
  assert capsys.readouterr().out == "step 5: validation loss 1.0000\n"


def test_disabled_progress_bar_prints_nothing(capsys):
  bar = metrics.ProgressBar(total=10, initial=1, enabled=False)
  bar.update(5)
  bar.update(6, {"loss": 1.0, "seq_per_s": 1.0, "mfu": 0.5})
  bar.write("hello")
  bar.close()
  captured = capsys.readouterr()
  assert captured.err == "" and captured.out == ""


def test_no_loggers_write_only_metrics_jsonl(tmp_path):
  config = config_lib.ExperimentConfig()
  config.train.loggers = ()
  writer = metrics.MetricWriter(str(tmp_path), config=config)
  writer.write(1, "train", {"loss": 2.5})
  writer.close()
  assert os.listdir(tmp_path) == ["metrics.jsonl"]


def test_tensorboard_events_are_written_without_importing_torch(tmp_path):
  """In a fresh interpreter (torch is installed in the lowest-versions environment):
  tensorboardX would import torch, which takes seconds, and the writer works without it."""
  script = f"""
import sys
from t5x_lite import metrics
writer = metrics.summary_writer({str(tmp_path / "tensorboard")!r})
writer.add_scalar("train/loss", 2.5, 3)
writer.close()
assert "torch" not in sys.modules, "tensorboardX imported torch, or torch was left hidden"
"""
  subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert _scalars(tmp_path) == {("train/loss", 3): 2.5}


@pytest.mark.parametrize("loggers,expected", [
    ("[tensorboard,wandbb]",
     r"unknown loggers \['wandbb'\]; choose from \['tensorboard', 'wandb'\]"),
    ("[wandb,tensorboard,wandb]", r"names 'wandb' twice"),
    ("[wandb]", r'wandb is not installed: pip install "t5x-lite\[wandb\]"'),
])
def test_logger_errors_come_before_any_work(tmp_path, monkeypatch, loggers, expected):
  from t5x_lite.training.loop import train
  monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError.
  with pytest.raises(config_lib.ConfigError, match=expected):
    train(config_lib.load_experiment(TINY_EXPERIMENT, [*TINY_SETTINGS, f"train.loggers={loggers}"]),
          str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def _wandb_records(path) -> list:
  """The Records of a .wandb file: a LevelDB-style log of 32 KiB blocks after a 7-byte header,
  each record split in chunks (crc 4, length 2, type 1: full 1, first 2, middle 3, last 4)."""
  from wandb.proto import wandb_internal_pb2
  with open(path, "rb") as f:
    data = f.read()
  assert data[:4] == b":W&B"
  records, pending, offset = [], b"", 7
  while offset + 7 <= len(data):
    left = 32768 - offset % 32768
    if left < 7:  # Zero padding at a block's end.
      offset += left
      continue
    length, kind = struct.unpack("<HB", data[offset + 4:offset + 7])
    pending += data[offset + 7:offset + 7 + length]
    offset += 7 + length
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      records.append(record)
      pending = b""
  return records


def _wandb_run(run_dir) -> tuple:
  """(run record, {step: {key: value}}) of an offline run directory."""
  (path,) = glob.glob(os.path.join(run_dir, "*.wandb"))
  records = _wandb_records(path)
  (run,) = [r.run for r in records if r.HasField("run")]
  history = {}
  for record in records:
    if record.HasField("history"):
      row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
             for item in record.history.item}
      history[record.history.step.num] = row
  return run, history


@pytest.fixture(name="wandb_offline")
def _wandb_offline(tmp_path, monkeypatch):
  """W&B offline, with its own directories: nothing is sent anywhere."""
  import wandb  # In the test extra: CI must not skip this.
  for name in ("DIR", "CACHE_DIR", "CONFIG_DIR", "DATA_DIR"):
    monkeypatch.setenv(f"WANDB_{name}", str(tmp_path / f"wandb_{name.lower()}"))
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
  wandb.teardown()  # wandb reads the environment once per set-up.
  yield
  wandb.teardown()


@pytest.mark.usefixtures("wandb_offline")
def test_wandb_gets_every_logged_step_and_a_resumed_run_continues_it(tmp_path):
  import jax

  from t5x_lite.training.loop import train
  workdir = str(tmp_path / "run")
  settings = [*TINY_SETTINGS, "train.log_every=2", "train.eval_every=4", "checkpoint.every_steps=4",
              "train.peak_flops_per_device=1e12", "train.loggers=[tensorboard,wandb]", "name="]
  for steps in (4, 6):
    config = config_lib.load_experiment(TINY_EXPERIMENT, [*settings, f"train.steps={steps}"])
    train(config, workdir, devices=jax.devices()[:1])

  assert config_lib.load_json(os.path.join(workdir, "config.json")).train.loggers == (
      "tensorboard", "wandb")
  run_id = (tmp_path / "run" / "wandb_run_id").read_text().strip()
  # Offline, each session is a directory of its own; `wandb sync` joins them as one run.
  first, resumed = sorted(glob.glob(os.path.join(workdir, "wandb", "offline-run-*")))
  assert first.endswith(run_id) and resumed.endswith(run_id)
  records = metrics.read_metrics(workdir)
  for run_dir, steps in ((first, [2, 4]), (resumed, [6])):
    run, history = _wandb_run(run_dir)
    assert (run.run_id, run.project, run.display_name) == (run_id, "t5x-lite", "run")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["train"]["loggers"] == ["tensorboard", "wandb"]
    assert sorted(history) == steps
    # The same numbers as metrics.jsonl, under TensorBoard's tags.
    for record in (r for r in records if r["step"] in steps):
      for name, value in record.items():
        if name not in ("step", "split"):
          assert history[record["step"]][f"{record['split']}/{name}"] == pytest.approx(value)
  assert {"train/loss", "train/mfu", "train/seq_per_s", "validation/loss"} <= set(history[6])
  assert _scalars(workdir)[("train/loss", 6)] == pytest.approx(history[6]["train/loss"])


def test_a_last_line_cut_by_a_kill_is_dropped_and_damage_is_named(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "split": "train", "loss": 2.0}\n{"step": 2, "spl')
  assert [r["step"] for r in metrics.read_metrics(str(tmp_path))] == [1]
  writer = metrics.MetricWriter(str(tmp_path), resume_step=1, config=None)
  writer.close()
  assert path.read_text() == '{"step": 1, "split": "train", "loss": 2.0}\n'
  path.write_text('{"step": 1, "split": "train"}\nnot json\n{"step": 2, "split": "train"}\n')
  with pytest.raises(config_lib.ConfigError, match="metrics.jsonl line 2 is not a metrics record"):
    metrics.read_metrics(str(tmp_path))
