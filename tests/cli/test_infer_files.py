"""`t5x-lite infer` at scale: files in, JSON Lines out, scoring pairs, resuming a stopped job,
and never replacing an output without --overwrite."""

import json

import pytest

import t5x_lite
from t5x_lite import api
from t5x_lite.cli import infer
from t5x_lite.cli.main import main

TEXTS = [f"line {i}: the quick brown fox" for i in range(7)]


def _records(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_mode_prints_the_api_scores(tiny_run, capsys):
  assert main(["infer", "--workdir", tiny_run, "--mode", "score", "--input", "def f(x):",
               "--target", "return x", "--input", "The", "--target", "end"]) == 0
  printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  expected = t5x_lite.load(tiny_run).score(["def f(x):", "The"], ["return x", "end"])
  assert [r["score"] for r in printed] == pytest.approx(list(expected), abs=1e-4)
  assert printed[0]["target"] == "return x" and len(printed[0]["token_scores"]) >= 2


def test_files_in_jsonl_out_refused_then_overwritten(tiny_run, tmp_path, capsys):
  source = tmp_path / "pairs.jsonl"
  source.write_text("".join(json.dumps({"q": t, "a": "fox"}) + "\n" for t in TEXTS))
  out = tmp_path / "scores.jsonl"
  argv = ["infer", "--workdir", tiny_run, "--mode", "score", "--input-file", str(source),
          "--input-field", "q", "--target-field", "a", "--output", str(out)]
  assert main(argv) == 0
  records = _records(out)
  assert [r["input"] for r in records] == TEXTS and not (tmp_path / "scores.jsonl.progress.json").exists()
  before = out.read_text()
  assert main(argv) == 2
  assert f"--output {out} exists; pass --overwrite" in capsys.readouterr().err
  assert out.read_text() == before
  assert main(argv + ["--overwrite"]) == 0
  assert _records(out) == records


def test_a_stopped_job_resumes_where_it_stopped(tiny_run, tmp_path, monkeypatch):
  source = tmp_path / "in.txt"
  source.write_text("\n".join(TEXTS) + "\n")
  argv = ["infer", "--workdir", tiny_run, "--input-file", str(source), "--batch-size", "2",
          "--max-decode-length", "5"]
  assert main(argv + ["--output", str(tmp_path / "whole.jsonl")]) == 0
  monkeypatch.setattr(infer, "_CHUNK_BATCHES", 1)  # Chunks of 2 inputs, written one by one.
  generate, calls = api.Model.generate, []

  def stopping_generate(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt  # Killed while the third chunk is computed.
    return generate(self, *args, **kwargs)

  monkeypatch.setattr(api.Model, "generate", stopping_generate)
  out = tmp_path / "out.jsonl"
  assert main(argv + ["--output", str(out)]) == 130
  with open(out, "a") as f:
    f.write('{"input": "cut sho')  # A kill can cut the last line.
  assert out.read_text().count("\n") == 4  # Two chunks of two were written.
  monkeypatch.setattr(api.Model, "generate", generate)
  assert main(argv + ["--output", str(out)]) == 0
  assert out.read_text() == (tmp_path / "whole.jsonl").read_text()
  # Another job's partial output is not resumed.
  assert main(argv[:-1] + ["6", "--output", str(out)]) == 2


@pytest.mark.parametrize("flags, message", [
    (["--input-file", "{tmp}/binary.txt"], "is not UTF-8 text"),
    (["--input", "x", "--output", "{tmp}"], "is a directory"),
    (["--mode", "score", "--input", "x"], "needs one --target per --input"),
    (["--input", "x", "--target", "y"], "--target is for --mode score"),
    (["--mode", "score", "--input-file", "{tmp}/one_column.tsv"], "is not INPUT<TAB>TARGET"),
    (["--input-file", "{tmp}/bad.jsonl"], "line 1 is not JSON"),
    (["--input-file", "{tmp}/fields.jsonl"], "has no text field 'inputs'"),
])
def test_bad_inputs_are_one_clear_error(tiny_run, tmp_path, capsys, flags, message):
  (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
  (tmp_path / "one_column.tsv").write_text("no tab here\n")
  (tmp_path / "bad.jsonl").write_text("{not json\n")
  (tmp_path / "fields.jsonl").write_text('{"text": "x"}\n')
  assert main(["infer", "--workdir", tiny_run, *(f.format(tmp=tmp_path) for f in flags)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("t5x-lite infer: error: ") and message in err
