"""A saved run, loaded for use from Python: generate, score, rank-classify, evaluate.

    model = t5x_lite.load("runs/tiny")
    model.generate(["def add(a, b):"])
    model.score(["translate: hi"], ["bonjour"])

`load` restores only what is needed (configuration, vocabulary, parameters) onto the
devices of this process (of every process, in a multi-process run where each passes the
same inputs); it never builds a dataset and never writes into the workdir. Batching,
padding and the decoder's key/value cache are handled inside each method.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import os
from typing import Any, Mapping, Optional, Sequence, Union, cast

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from t5x_lite import checkpoints, decoding, evaluation, inference, partitioning
from t5x_lite.config import ExperimentConfig, MeshConfig
from t5x_lite.data.vocabulary import Vocabulary, load_vocabulary
from t5x_lite.errors import ConfigError
from t5x_lite.training.step import Setup, make_setup

# A progress bar is shown for work of more rows than this (progress=None).
_PROGRESS_MIN_ROWS = 256

Texts = Union[str, Sequence[str]]


class Model:
  """A run's model at one checkpoint step. Build it with `t5x_lite.load`."""

  def __init__(self, config: ExperimentConfig, params: Any, vocabulary: Optional[Vocabulary],
               setup: Setup, step: int, workdir: str):
    self.config = config  # The run's configuration, fitted to this machine's devices.
    self.params = params  # The parameter pytree, sharded over `mesh`.
    self.vocabulary = vocabulary  # None for a workdir imported without one.
    self.step = step
    self.workdir = workdir
    self._setup = setup
    self._log_probs_fn = inference.make_log_probs_fn(setup)

  @property
  def mesh(self) -> Mesh:
    return self._setup.mesh

  def __repr__(self) -> str:
    m = self.config.model
    return (f"Model({self.workdir!r}, step={self.step}, d_model={m.d_model}, "
            f"layers={m.num_encoder_layers}/{m.num_decoder_layers}, vocab_size={m.vocab_size}, "
            f"mesh={dict(self.mesh.shape)})")

  # --------------------------------------------------------------------------
  # Text in, text or scores out
  # --------------------------------------------------------------------------

  def generate(self, texts: Texts, *, method: str = "greedy", max_length: Optional[int] = None,
               batch_size: int = 32, seed: int = 0, progress: Optional[bool] = None,
               **decoding_options: float) -> list[str]:
    """The decoded output for each input text, in order.

    method: "greedy", "sample" (temperature, top_k, top_p) or "beam" (num_beams,
    length_penalty): decoding_options. max_length: tokens to generate at most (default
    data.targets_length). Inputs longer than data.inputs_length tokens are cut, as in
    training. A lone string counts as one text.
    """
    texts = _as_list(texts, "texts")
    max_length = self.config.data.targets_length if max_length is None else max_length
    _check_batch_size(batch_size)
    decoding.check_settings(self.config.model, method, max_length,
                            **{**_DECODING_DEFAULTS, **_known_options(decoding_options)})
    vocabulary = self._require_vocabulary()
    inputs = self._encode_inputs(texts)
    with self._progress(len(inputs), progress, "generate") as bar:
      return [vocabulary.decode(ids) for ids in inference.generate(
          self._setup, self.params, inputs, batch_size=batch_size, method=method,
          max_decode_length=max_length, seed=seed, on_batch=bar.update, **decoding_options)]

  def score(self, inputs: Texts, targets: Texts, *, per_token: bool = False,
            batch_size: int = 32, progress: Optional[bool] = None
            ) -> Union[np.ndarray, list[np.ndarray]]:
    """The log-likelihood (nats) of each target given its input, EOS included: an array
    (n,) of sums, or with per_token=True a list of per-token arrays. Targets are scored
    whole; inputs are cut to data.inputs_length as in training."""
    inputs, targets = _as_list(inputs, "inputs"), _as_list(targets, "targets")
    if len(inputs) != len(targets):
      raise ConfigError(f"score needs one target per input: got {len(inputs)} inputs and "
                        f"{len(targets)} targets.")
    _check_batch_size(batch_size)
    encoded_inputs = self._encode_inputs(inputs)
    encoded_targets = inference.with_eos(self._require_vocabulary().encode_batch(targets))
    with self._progress(len(inputs), progress, "score") as bar:
      token_scores = [scores.astype(np.float64) for scores in inference.token_log_probs(
          self._setup, self._log_probs_fn, self.params, encoded_inputs, encoded_targets,
          batch_size=batch_size, on_batch=bar.update)]
    if per_token:
      return token_scores
    return np.array([scores.sum() for scores in token_scores], np.float64)

  def rank_classify(self, inputs: Texts, options: Union[Sequence[str], Sequence[Sequence[str]]],
                    *, batch_size: int = 32, progress: Optional[bool] = None) -> np.ndarray:
    """T5's rank classification: for each input, the index of the option the model finds
    most likely as its target (by summed log-likelihood). `options` is one list shared by
    all inputs, or one list per input."""
    inputs = _as_list(inputs, "inputs")
    if isinstance(options, str) or not options:
      raise ConfigError("rank_classify needs at least one option: a list of strings shared by "
                        "all inputs, or one list per input.")
    per_input: list[list[str]]
    if all(isinstance(option, str) for option in options):
      per_input = [[str(option) for option in options]] * len(inputs)
    else:
      per_input = [_as_list(choices, "options") for choices in options]
      if len(per_input) != len(inputs):
        raise ConfigError(f"rank_classify needs one list of options per input, or one shared "
                          f"list: got {len(per_input)} lists for {len(inputs)} inputs.")
    if any(not choices for choices in per_input):
      raise ConfigError("rank_classify needs at least one option for every input.")
    pairs = [(text, option) for text, choices in zip(inputs, per_input) for option in choices]
    scores = self.score([text for text, _ in pairs], [option for _, option in pairs],
                        batch_size=batch_size, progress=progress)
    bounds = np.cumsum([0] + [len(choices) for choices in per_input])
    return np.array([int(np.argmax(scores[start:end]))
                     for start, end in itertools.pairwise(bounds)], np.int64)

  # --------------------------------------------------------------------------
  # Arrays and whole splits
  # --------------------------------------------------------------------------

  def logits(self, batch: Mapping[str, Any]) -> np.ndarray:
    """Teacher-forced logits (b, l_targets, vocab), float32, for a batch of token ids:
    encoder_input_tokens (b, l_in) and decoder_input_tokens (b, l_targets) (the targets
    shifted right, starting at 0), optionally encoder_segment_ids / decoder_segment_ids
    for packed rows."""
    missing = [key for key in ("encoder_input_tokens", "decoder_input_tokens") if key not in batch]
    if missing:
      raise ConfigError(f"logits needs the batch keys {missing}.")
    keys = [key for key in ("encoder_input_tokens", "decoder_input_tokens", "encoder_segment_ids",
                            "decoder_segment_ids") if key in batch]
    arrays = [np.asarray(batch[key], np.int32) for key in keys]
    if any(array.ndim != 2 or len(array) != len(arrays[0]) for array in arrays):
      raise ConfigError(f"logits needs (batch, length) arrays with one row count: got shapes "
                        f"{ {key: array.shape for key, array in zip(keys, arrays)} }.")
    rows = len(arrays[0])
    padded = inference.batch_rows(self._setup, rows, rows)  # A multiple of the batch sharding.
    # Spare rows: one EOS in the encoder (row of segment 1) and nothing to decode.
    arrays = [np.pad(array, ((0, padded - rows), (0, 0)),
                     constant_values=1 if key != "decoder_input_tokens" else 0)
              for key, array in zip(keys, arrays)]
    sharding = self._setup.batch_sharding
    out = cast(jax.Array, self._setup.model.apply(
        {"params": self.params}, *(inference.to_device(x, sharding) for x in arrays)))
    return inference.to_host(out)[:rows].astype(np.float32)

  def evaluate(self, split: Optional[str] = None, *, dataset: Optional[str] = None,
               max_examples: Optional[int] = None) -> dict[str, float]:
    """Loss, accuracy, perplexity (and for seq2seq tasks the decoded-text metrics) over
    every example of `split` (default data.eval_split) of `dataset` (default the run's),
    or its first max_examples: the numbers `t5x-lite eval` prints. Nothing is written."""
    metrics, _ = self.evaluate_with_samples(split, dataset=dataset, max_examples=max_examples,
                                            num_samples=0)
    return metrics

  def evaluate_with_samples(self, split: Optional[str] = None, *, dataset: Optional[str] = None,
                            max_examples: Optional[int] = None, num_samples: int = 20
                            ) -> tuple[dict[str, float], list[dict[str, str]]]:
    """evaluate(), and for seq2seq tasks up to num_samples decoded examples (input, target,
    prediction) to eyeball."""
    vocabulary = self._require_vocabulary()
    if max_examples is not None and max_examples < 1:
      raise ConfigError(f"max_examples={max_examples} must be at least 1, or None for all.")
    data = dataclasses.replace(self.config.data, max_eval_examples=max_examples,
                               dataset=dataset or self.config.data.dataset)
    setup = dataclasses.replace(self._setup, config=dataclasses.replace(self.config, data=data))
    metrics, scorer = evaluation.evaluate_split(setup, self.params, vocabulary,
                                                split or self.config.data.eval_split)
    return metrics, (scorer.samples(num_samples) if scorer and num_samples else [])

  # --------------------------------------------------------------------------

  def _require_vocabulary(self) -> Vocabulary:
    if self.vocabulary is None:
      raise ConfigError(
          f"{self.workdir} has no {checkpoints.VOCABULARY_FILE}, which text in and out needs: "
          f"copy the model's SentencePiece model to "
          f"{os.path.join(self.workdir, checkpoints.VOCABULARY_FILE)} and load it again.")
    return self.vocabulary

  def _encode_inputs(self, texts: list[str]) -> list[np.ndarray]:
    return inference.with_eos(self._require_vocabulary().encode_batch(texts),
                              self.config.data.inputs_length)

  def _progress(self, rows: int, show: Optional[bool], what: str) -> tqdm:
    show = rows > _PROGRESS_MIN_ROWS if show is None else show
    return tqdm(total=rows, desc=what, unit="row",
                disable=not show or jax.process_index() != 0)


# The options decoding.decode takes beside the method and length, with its own defaults.
_DECODING_DEFAULTS = {name: parameter.default
                      for name, parameter in inspect.signature(decoding.decode).parameters.items()
                      if parameter.kind is inspect.Parameter.KEYWORD_ONLY
                      and name not in ("method", "max_decode_length", "rng")}


def _known_options(options: Mapping[str, Any]) -> dict[str, Any]:
  unknown = sorted(set(options) - set(_DECODING_DEFAULTS))
  if unknown:
    raise ConfigError(f"Unknown decoding options {unknown}; choose from "
                      f"{sorted(_DECODING_DEFAULTS)}.")
  return dict(options)


def _check_batch_size(batch_size: int) -> None:
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ConfigError(f"batch_size={batch_size!r} must be a positive integer.")


def _as_list(texts: Texts, name: str) -> list[str]:
  if isinstance(texts, str):
    return [texts]
  texts = list(texts)
  wrong = next((t for t in texts if not isinstance(t, str)), None)
  if wrong is not None:
    raise ConfigError(f"{name} must be strings; got {type(wrong).__name__} {wrong!r}.")
  return texts


def load(workdir: Union[str, os.PathLike], *, step: Optional[int] = None,
         mesh: Union[Mesh, MeshConfig, None] = None,
         overrides: Sequence[str] = ()) -> Model:
  """The model of a run (or of a workdir made by `import-hf`) at `step` (default: the
  latest checkpoint), on this process's devices.

  mesh: the run's own if it fits these devices, else data parallelism over all of them;
  or a MeshConfig, or a jax Mesh whose axes the run's sharding rules name. overrides:
  `--set`-style "KEY=VALUE" strings applied to the saved configuration (e.g.
  "data.targets_length=64", "model.attention_impl=xla").
  """
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise ConfigError(f"{workdir} is not a directory; pass the workdir of a `t5x-lite train` or "
                      "`t5x-lite import-hf` run.")
  config = _saved_config(workdir, overrides)
  meta = checkpoints.read_meta(workdir, step)  # Clear errors for no checkpoint or no such step.
  step = meta["step"]
  if isinstance(mesh, MeshConfig):
    partitioning.resolve_mesh_shape(mesh, jax.device_count())  # Asked for: it must fit.
    config.mesh = mesh
  evaluation.fit_to_devices(config, mesh if isinstance(mesh, Mesh) else None)
  vocabulary = _run_vocabulary(workdir, config, meta)
  setup = make_setup(config, mesh=mesh if isinstance(mesh, Mesh) else None)
  params = checkpoints.restore_params(workdir, setup.abstract_state.params, step)
  return Model(config, params, vocabulary, setup, step, workdir)


def _saved_config(workdir: str, overrides: Sequence[str]) -> ExperimentConfig:
  try:
    return evaluation.load_config(workdir, list(overrides))
  except ConfigError as e:
    if "Unknown" not in str(e) or overrides:
      raise
    raise ConfigError(f"{e} {workdir}/config.json was written by another version of t5x-lite "
                      "(the valid names are this version's): rename or drop those fields, or "
                      "load it with the version that wrote it.") from None


def _run_vocabulary(workdir: str, config: ExperimentConfig, meta: dict) -> Optional[Vocabulary]:
  """WORKDIR/vocabulary.model, checked against the one the checkpoint recorded (a swapped
  file would turn every output into other words); None where the workdir has none."""
  path = config.data.vocabulary
  if not os.path.isfile(path):
    if config.model.vocab_size is None:
      raise ConfigError(f"{workdir} has no {checkpoints.VOCABULARY_FILE} and its config.json does "
                        "not give model.vocab_size; copy the run's vocabulary there.")
    return None
  recorded = meta.get("vocabulary")
  if recorded and checkpoints.file_reference(path)["sha256"] != recorded["sha256"]:
    raise ConfigError(
        f"{path} is not the vocabulary step {meta['step']} was trained with (sha256 "
        f"{recorded['sha256'][:12]}..., from {recorded['path']}); put that file back in its "
        "place.")
  vocabulary = load_vocabulary(path, config.data.vocab_extra_ids)
  if config.model.vocab_size is None:
    config.model.vocab_size = vocabulary.vocab_size
  elif vocabulary.vocab_size > config.model.vocab_size:
    raise ConfigError(
        f"{path} has {vocabulary.vocab_size} ids but the model only {config.model.vocab_size}: "
        "it is not the vocabulary this model was trained with; put the run's own back.")
  return vocabulary
