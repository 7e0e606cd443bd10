"""`t5x-lite infer` end to end on the tiny run: one output per input, whatever the input
lengths, from --input or --input-file, printed or written as JSON Lines; bad flags are
refused before the checkpoint is restored."""

import json

import pytest

from t5x_lite import api
from t5x_lite.cli.main import main

INPUTS = [
    "The",
    "def f(x):\n    return x",
    "A much longer input about dictionaries, lists, tuples and sets, repeated: " * 4,
]


def test_infer_prints_one_line_per_input(tiny_run, capsys):
  args = ["infer", "--workdir", tiny_run, "--batch-size", "2"]
  for text in INPUTS:
    args += ["--input", text]
  assert main(args) == 0
  captured = capsys.readouterr()
  assert len(captured.out.splitlines()) == len(INPUTS)
  assert "1 input(s) cut to data.inputs_length=32" in captured.err


def test_infer_file_to_file_with_beam_and_sampling(tiny_run, tmp_path):
  source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
  lines = [text.replace("\n", " ") for text in INPUTS]
  source.write_text("\n".join(lines) + "\n")
  greedy = tmp_path / "greedy.jsonl"
  assert main(["infer", "--workdir", tiny_run, "--input-file", str(source),
               "--output", str(greedy), "--step", "20"]) == 0
  # Beam search with one beam is greedy decoding.
  assert main(["infer", "--workdir", tiny_run, "--input-file", str(source), "--output",
               str(target), "--method", "beam", "--num-beams", "1"]) == 0
  assert target.read_text() == greedy.read_text()
  records = [json.loads(line) for line in greedy.read_text().splitlines()]
  assert [record["input"] for record in records] == lines  # One record per input, in order.
  assert all(isinstance(record["output"], str) for record in records)
  sample = ["infer", "--workdir", tiny_run, "--input-file", str(source), "--output", str(target),
            "--method", "sample", "--top-k", "5", "--seed", "1", "--max-decode-length", "4"]
  assert main(sample) == 2  # An existing --output is not replaced unasked.
  assert main([*sample, "--overwrite"]) == 0
  assert len(target.read_text().splitlines()) == len(INPUTS)


@pytest.mark.parametrize("flags, message", [
    (["--input", " "], "no input text; pass --input TEXT or a non-empty --input-file"),
    (["--input-file", "{tmp}/empty.txt"], "no input text"),
    (["--input-file", "{tmp}/nothere.txt"], "cannot read --input-file {tmp}/nothere.txt"),
    (["--input", "x", "--output", "{tmp}/no/out.txt"], "directory {tmp}/no does not exist"),
    (["--input", "x", "--batch-size", "0"], "--batch-size=0 must be at least 1"),
    (["--input", "x", "--max-decode-length", "0"], "--max-decode-length=0 must be at least 1"),
    (["--input", "x", "--method", "sample", "--top-p", "0"], "--top-p=0.0 must be in (0, 1]"),
    (["--input", "x", "--method", "beam", "--num-beams", "0"], "--num-beams=0 must be at least 1"),
])
def test_infer_rejects_bad_flags_before_restoring(tiny_run, tmp_path, monkeypatch, capsys, flags,
                                                  message):
  (tmp_path / "empty.txt").write_text("")
  monkeypatch.setattr(api, "load", lambda *_, **__: pytest.fail("restored before checking"))
  flags = [flag.format(tmp=tmp_path) for flag in flags]
  assert main(["infer", "--workdir", tiny_run, *flags]) == 2
  err = capsys.readouterr().err
  assert err.startswith("t5x-lite infer: error: ") and message.format(tmp=tmp_path) in err
