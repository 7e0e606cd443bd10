"""The Python API on the tiny run: load, generate, score, rank-classify, logits, evaluate."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

import t5x_lite
from t5x_lite import checkpoints, decoding, inference
from t5x_lite.data import DataError, GeneratorSource, Seq2Seq, Task, register_task
from t5x_lite.errors import ConfigError

TEXTS = ["The", "def f(x):", "A much longer input about dictionaries and lists, " * 3]


def _tree(path: str) -> dict[str, float]:
  """Every file under path with its modification time: what a read may not change."""
  return {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
          for root, _, names in os.walk(path) for name in names}


@pytest.fixture(scope="module")
def model(tiny_run):
  return t5x_lite.load(tiny_run)


def test_load_restores_config_vocabulary_and_params_without_writing(tiny_run, monkeypatch):
  before = _tree(tiny_run)
  from t5x_lite.data import sources
  monkeypatch.setattr(sources, "open_source", lambda *a, **k: pytest.fail("touched a dataset"))
  loaded = t5x_lite.load(tiny_run, step=10)
  assert loaded.step == 10 and loaded.config.model.vocab_size == loaded.vocabulary.vocab_size
  assert jax.tree.leaves(loaded.params)[0].sharding.mesh.shape == loaded.mesh.shape
  assert "step=10" in repr(loaded)
  assert _tree(tiny_run) == before


def test_score_is_the_teacher_forced_sum_of_log_probabilities(model):
  inputs, targets = ["def add(a, b):", "import os"], ["return a + b", "os.path"]
  scores = model.score(inputs, targets)
  per_token = model.score(inputs, targets, per_token=True)
  assert scores.shape == (2,) and scores.dtype == np.float64
  np.testing.assert_allclose(scores, [p.sum() for p in per_token], rtol=1e-12)
  # The same sums from the logits of the forward pass, computed here by hand.
  for text, target, tokens_scores in zip(inputs, targets, per_token):
    encoder = inference.with_eos(model.vocabulary.encode_batch([text]))[0]
    target_ids = inference.with_eos(model.vocabulary.encode_batch([target]))[0]
    decoder_inputs = np.concatenate([[0], target_ids[:-1]])
    logits = model.logits({"encoder_input_tokens": encoder[None],
                           "decoder_input_tokens": decoder_inputs[None]})[0]
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                keepdims=True)) - logits.max(-1, keepdims=True)
    expected = log_probs[np.arange(len(target_ids)), target_ids]
    np.testing.assert_allclose(tokens_scores, expected, rtol=1e-4, atol=1e-4)
    assert len(tokens_scores) == len(target_ids)  # EOS included


def test_score_of_greedy_output_is_the_decoders_own_score(model):
  """Scoring the greedy output gives the decoder's own score: on the generated ids always (the
  engine behind score), and on the text wherever the text tokenizes back to those ids."""
  encoded = inference.with_eos(model.vocabulary.encode_batch(TEXTS),
                               model.config.data.inputs_length)
  out = decoding.decode(model.params, model.config.model, inference.pad_batch(encoded, len(TEXTS)),
                        max_decode_length=16)
  generated_ids = [ids[:np.flatnonzero(ids == decoding.EOS_ID)[0] + 1]
                   if (ids == decoding.EOS_ID).any() else ids for ids in np.asarray(out.tokens)]
  setup = model._setup  # pylint: disable=protected-access
  log_probs = list(inference.token_log_probs(setup, inference.make_log_probs_fn(setup),
                                             model.params, encoded, generated_ids, batch_size=8))
  np.testing.assert_allclose([p.sum() for p in log_probs], np.asarray(out.scores), atol=1e-4)
  for text, output, ids, decoder_score in zip(TEXTS, model.generate(TEXTS, max_length=16),
                                              generated_ids, np.asarray(out.scores)):
    text_ids = ids[:-1] if ids[-1] == decoding.EOS_ID else ids
    if np.array_equal(model.vocabulary.encode(output), text_ids):
      # score() appends EOS: an output cut at max_length has one token more than the decoder's.
      per_token = model.score(text, output, per_token=True)[0]
      assert per_token[:len(ids)].sum() == pytest.approx(float(decoder_score), abs=1e-3)


def test_rank_classify_picks_the_best_scoring_option(model):
  options = ["return x", "import os", "the"]
  inputs = ["def f(x):", "The"]
  chosen = model.rank_classify(inputs, options)
  scores = model.score([i for i in inputs for _ in options], options * len(inputs)).reshape(2, 3)
  np.testing.assert_array_equal(chosen, scores.argmax(axis=1))
  per_input = model.rank_classify(inputs, [options[:2], options[1:]])
  assert per_input[0] == scores[0, :2].argmax() and per_input[1] == scores[1, 1:].argmax()


def test_generate_many_texts_in_batches_matches_one_by_one(model):
  texts = [f"line {i} of the input" for i in range(37)]
  together = model.generate(texts, max_length=6, batch_size=8, progress=True)
  assert len(together) == 37 and all(isinstance(t, str) for t in together)
  assert [model.generate(t, max_length=6)[0] for t in texts[:3]] == together[:3]
  beam = model.generate(texts[:4], method="beam", num_beams=1, max_length=6)
  assert beam == together[:4]  # One beam is greedy.
  sampled = model.generate(texts[:4], method="sample", top_k=3, seed=1, max_length=6)
  assert sampled == model.generate(texts[:4], method="sample", top_k=3, seed=1, max_length=6)


def test_evaluate_gives_the_numbers_of_the_eval_command(model, tiny_run, capsys):
  from t5x_lite.cli.main import main
  metrics = model.evaluate(max_examples=16)
  assert main(["eval", "--workdir", tiny_run, "--set", "data.max_eval_examples=16"]) == 0
  with open(os.path.join(tiny_run, "eval", f"step_{model.step}_validation.json")) as f:
    printed = json.load(f)["metrics"]
  assert metrics == pytest.approx(printed)
  capsys.readouterr()


@pytest.mark.parametrize("call, message", [
    (lambda m: m.generate(["x"], method="nope"), "method='nope'"),
    (lambda m: m.generate(["x"], beams=2), "Unknown decoding options ['beams']"),
    (lambda m: m.generate(["x"], max_length=0), "max_decode_length=0 must be at least 1"),
    (lambda m: m.generate([3]), "texts must be strings"),
    (lambda m: m.score(["a", "b"], ["c"]), "one target per input"),
    (lambda m: m.rank_classify(["a"], [["x"], ["y"]]), "one list of options per input"),
    (lambda m: m.rank_classify(["a"], []), "at least one option"),
    (lambda m: m.rank_classify(["a"], [[]]), "at least one option for every input"),
    (lambda m: m.evaluate(max_examples=0), "max_examples=0 must be at least 1"),
    (lambda m: m.logits({"encoder_input_tokens": np.ones((1, 4))}), "decoder_input_tokens"),
])
def test_bad_calls_are_one_clear_error(model, call, message):
  with pytest.raises(ConfigError, match=None) as error:
    call(model)
  assert message in str(error.value)


def test_load_errors(tiny_run, tmp_path):
  with pytest.raises(ConfigError, match="is not a directory"):
    t5x_lite.load(tmp_path / "missing")
  with pytest.raises(ConfigError, match="has no config.json"):
    t5x_lite.load(tmp_path)
  copy = tmp_path / "copy"
  shutil.copytree(tiny_run, copy)
  with pytest.raises(checkpoints.CheckpointError, match="step 7 not found"):
    t5x_lite.load(copy, step=7)
  shutil.rmtree(copy / "checkpoints")
  (copy / "checkpoints").mkdir()
  with pytest.raises(checkpoints.CheckpointError, match="No finished checkpoint"):
    t5x_lite.load(copy)


def test_load_refuses_an_old_layout_config_and_a_swapped_vocabulary(tiny_run, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(tiny_run, copy)
  saved = json.loads((copy / "config.json").read_text())
  saved["model"]["relative_attention_buckets"] = saved["model"].pop("relative_attention_num_buckets")
  (copy / "config.json").write_text(json.dumps(saved))
  with pytest.raises(ConfigError, match="another version of t5x-lite"):
    t5x_lite.load(copy)
  shutil.copy(os.path.join(tiny_run, "config.json"), copy / "config.json")
  vocabulary = copy / checkpoints.VOCABULARY_FILE
  vocabulary.write_bytes(vocabulary.read_bytes() + b"\0")
  with pytest.raises(ConfigError, match="is not the vocabulary step 20 was trained with"):
    t5x_lite.load(copy)


def test_load_with_another_vocab_size_names_the_checkpoints_vocabulary(tiny_run):
  before = _tree(tiny_run)
  meta = checkpoints.read_meta(tiny_run)
  size, vocabulary = meta["config"]["model"]["vocab_size"], meta["vocabulary"]["path"]
  with pytest.raises(checkpoints.CheckpointError) as error:
    t5x_lite.load(tiny_run, overrides=[f"model.vocab_size={size + 128}"])
  assert str(error.value).splitlines()[0] == (
      f"Checkpoint step 20 in {tiny_run}/checkpoints was trained with vocab_size {size} (vocabulary "
      f"{vocabulary}); this run has vocab_size {size + 128}. Use the same vocabulary as the "
      f"checkpoint (--set data.vocabulary={vocabulary} model.vocab_size={size}, or drop the settings "
      "that changed them), or start a new workdir to train with the new vocabulary from scratch.")
  assert _tree(tiny_run) == before
  assert t5x_lite.load(tiny_run).config.model.vocab_size == size


def test_public_names_import_lazily():
  import subprocess
  import sys
  code = ("import sys, t5x_lite; assert 'jax' not in sys.modules; "
          "import t5x_lite.data.packing; assert 't5x_lite.data.pipeline' not in sys.modules; "
          "assert 'sentencepiece' not in sys.modules; print(sorted(t5x_lite.__all__))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert "load" in out.stdout and "train" in out.stdout
  assert callable(t5x_lite.load) and callable(t5x_lite.train)
  with pytest.raises(AttributeError):
    _ = t5x_lite.no_such_name


def test_load_onto_another_mesh_scores_the_same(model, tiny_run):
  from t5x_lite import partitioning
  from t5x_lite.config import MeshConfig
  two_d = MeshConfig(axes=("data", "model"), shape=(4, 2), rules_preset="model_parallel")
  other = t5x_lite.load(tiny_run, mesh=two_d)
  assert dict(other.mesh.shape) == {"data": 4, "model": 2}
  given = t5x_lite.load(tiny_run, mesh=partitioning.make_mesh(MeshConfig(shape=(2, 1)), jax.devices()[:2]))
  inputs, targets = ["def f(x):", "The"], ["return x", "end"]
  for loaded in (other, given):
    np.testing.assert_allclose(loaded.score(inputs, targets), model.score(inputs, targets),
                               rtol=1e-5)
  with pytest.raises(ConfigError, match="mesh"):
    t5x_lite.load(tiny_run, mesh=MeshConfig(shape=(3, 1)))


def _choice_records(split):
  del split
  snippets = [("def add(a, b):", "return a + b"), ("import", "os"), ("class Point:", "pass"),
              ("for i in", "range(10):"), ("print(", "'hello')")]
  answers = [answer for _, answer in snippets]
  for prompt, answer in snippets:
    yield {"prompt": prompt, "answer": answer, "choices": answers}


def test_a_task_with_rank_classification_reports_its_accuracy(model):
  """Evaluation of a task asking for rank_classification scores every choice: its accuracy is
  the one rank_classify gives on the same records."""
  register_task(Task(
      "test_choices", GeneratorSource(_choice_records), Seq2Seq(),
      preprocessors=(lambda r: {"inputs": r["prompt"], "targets": r["answer"], "choices": r["choices"]},),
      metrics=("exact_match", "rank_classification")))
  metrics = model.evaluate(dataset="test_choices")
  records = list(_choice_records("validation"))
  chosen = model.rank_classify([r["prompt"] for r in records], records[0]["choices"])
  expected = np.mean([r["choices"][c] == r["answer"] for r, c in zip(records, chosen)])
  assert metrics["rank_classification_accuracy"] == pytest.approx(expected)
  assert metrics["rank_classification_examples"] == 5 and "exact_match" in metrics
  register_task(Task("test_no_choices", GeneratorSource(_choice_records), Seq2Seq(),
                     preprocessors=(lambda r: {"inputs": r["prompt"], "targets": r["answer"]},),
                     metrics=("rank_classification",)))
  with pytest.raises(DataError, match="needs records with 'inputs', 'targets' and 'choices'"):
    model.evaluate(dataset="test_no_choices")
