"""metrics.jsonl, TensorBoard events and the progress bar, without training anything."""

import glob
import json
import os
import struct

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
