"""Incremental decoding against full-prefix recomputation, and a model that has learnt its targets."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t5x_lite import decoding
from t5x_lite.config import ModelConfig, tiny
from t5x_lite.decoding import EOS_ID, PAD_ID, decode
from t5x_lite.model import Transformer, init_params

MAX_LEN = 10
INPUT_LENGTHS = (8, 5, 3, 6)  # Rows padded with 0 to 8.


def _config(scan_layers: bool = False, architecture: str = "encoder_decoder") -> ModelConfig:
  config = dataclasses.replace(tiny(vocab_size=64), d_model=32, d_ff=64, num_heads=2, d_kv=16,
                               scan_layers=scan_layers)
  if architecture == "decoder_only":
    return dataclasses.replace(config, architecture=architecture, num_encoder_layers=0,
                               num_decoder_layers=3)
  return config


def _inputs() -> np.ndarray:
  rng = np.random.default_rng(0)
  tokens = rng.integers(2, 64, size=(len(INPUT_LENGTHS), max(INPUT_LENGTHS))).astype(np.int32)
  for row, length in enumerate(INPUT_LENGTHS):
    tokens[row, length:] = 0
  return tokens


@functools.lru_cache(maxsize=None)
def _unrolled_params() -> Any:
  """Initialised once: on CPU, compiling the model's init costs seconds."""
  return jax.jit(lambda key: init_params(_config(), key))(jax.random.key(0))


def _stack_layers(params: Any, architecture: str = "encoder_decoder") -> Any:
  """The same weights in the scan_layers layout: layers_{i} stacked along a leading axis."""
  config, stacked = _config(True, architecture), dict(params)
  for stack, num_layers in (("encoder", config.num_encoder_layers), ("decoder", config.num_decoder_layers)):
    if not num_layers:
      continue
    tree = dict(params[stack])
    layers = [tree.pop(f"layers_{i}") for i in range(num_layers)]
    tree["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
    stacked[stack] = tree
  expected = jax.eval_shape(lambda key: init_params(config, key), jax.random.key(0))
  assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, expected)
  return stacked


def _eos_prone(scan_layers: bool) -> tuple[ModelConfig, Any]:
  """A random model whose EOS logit is scaled up, so some rows end early and some never do."""
  params = dict(_unrolled_params())
  params["logits_dense"] = params["logits_dense"].at[:, EOS_ID].multiply(3.0)
  return _config(scan_layers), _stack_layers(params) if scan_layers else params


@pytest.fixture(scope="module", params=[False, True], ids=["unrolled", "scanned"])
def model(request) -> tuple[ModelConfig, Any]:
  """Both cache layouts: per-layer leaves (b, ...) and scanned leaves (b, layers, ...)."""
  return _eos_prone(request.param)


@pytest.fixture(scope="module")
def unrolled_model() -> tuple[ModelConfig, Any]:
  """Token choice does not touch the cache, so sampling is tested on one layout."""
  return _eos_prone(False)


@functools.lru_cache(maxsize=None)
def _teacher_forced(scan_layers: bool, architecture: str = "encoder_decoder"):
  """Jitted full-sequence logits (b, l, v) from (params, inputs, decoder inputs)."""
  apply = Transformer(_config(scan_layers, architecture)).apply
  return jax.jit(lambda params, inputs, decoder_inputs: apply({"params": params}, inputs, decoder_inputs))


def _sequence_log_prob(config: ModelConfig, params: Any, inputs: np.ndarray,
                       tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Teacher-forced summed log-probabilities of tokens through EOS, and their lengths."""
  decoder_inputs = np.concatenate([np.zeros_like(tokens[:, :1]), tokens[:, :-1]], axis=1)
  logits = _teacher_forced(config.scan_layers, config.architecture)(
      params, jnp.asarray(inputs), jnp.asarray(decoder_inputs))
  log_probs = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), tokens[..., None], -1)[..., 0]
  ended_before = np.cumsum(tokens == EOS_ID, axis=1) - (tokens == EOS_ID)  # EOS strictly earlier
  counted = ended_before == 0
  return (log_probs * counted).sum(1), counted.sum(1)


def _uncached_greedy(config: ModelConfig, params: Any, inputs: np.ndarray,
                     max_decode_length: int) -> np.ndarray:
  """Reference greedy decoding that reruns the full model on the whole prefix each step."""
  b = inputs.shape[0]
  tokens = np.zeros((b, max_decode_length), np.int32)
  done = np.zeros((b,), bool)
  for i in range(max_decode_length):
    decoder_inputs = np.concatenate([np.full((b, 1), PAD_ID, np.int32), tokens[:, :-1]], axis=1)
    logits = _teacher_forced(config.scan_layers)(params, jnp.asarray(inputs), jnp.asarray(decoder_inputs))
    token = np.where(done, PAD_ID, np.argmax(np.asarray(logits[:, i]), axis=-1))
    tokens[:, i] = token
    done |= token == EOS_ID
  return tokens


def _assert_padded_after_eos(tokens: np.ndarray) -> None:
  after_eos = (np.cumsum(tokens == EOS_ID, axis=1) - (tokens == EOS_ID)) > 0
  assert np.all(tokens[after_eos] == 0)


def test_cached_greedy_matches_uncached(model):
  config, params = model
  out = decode(params, config, _inputs(), method="greedy", max_decode_length=MAX_LEN)
  tokens = np.asarray(out.tokens)
  np.testing.assert_array_equal(tokens, _uncached_greedy(config, params, _inputs(), MAX_LEN))
  ended = (tokens == EOS_ID).any(1)
  assert ended.any() and not ended.all(), "the batch should mix ended and unended rows"
  log_prob, _ = _sequence_log_prob(config, params, _inputs(), tokens)
  np.testing.assert_allclose(out.scores, log_prob, rtol=1e-5, atol=1e-5)


def test_step_logits_match_teacher_forcing(model):
  config, params = model
  inputs = jnp.asarray(_inputs())
  targets = np.random.default_rng(1).integers(0, 64, size=(inputs.shape[0], MAX_LEN)).astype(np.int32)
  decoder_inputs = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
  expected = _teacher_forced(config.scan_layers)(params, inputs, jnp.asarray(decoder_inputs))
  transformer = Transformer(config)

  @jax.jit
  def start(params: Any, inputs: jax.Array) -> tuple[jax.Array, Any]:
    encoded = transformer.apply({"params": params}, inputs, method=Transformer.encode)
    return encoded, decoding.init_cache(transformer, params, encoded, inputs, MAX_LEN)

  encoded, cache = start(params, inputs)
  step = jax.jit(functools.partial(decoding.decode_step, transformer))
  for i in range(MAX_LEN):
    logits, cache = step(params, cache, encoded, inputs, jnp.asarray(decoder_inputs[:, i]))
    np.testing.assert_allclose(logits, expected[:, i], rtol=1e-5, atol=1e-5, err_msg=f"position {i}")


def test_beam_of_one_is_greedy(model):
  config, params = model
  greedy = decode(params, config, _inputs(), max_decode_length=MAX_LEN)
  beam = decode(params, config, _inputs(), method="beam", max_decode_length=MAX_LEN, num_beams=1,
                length_penalty=0.0)
  np.testing.assert_array_equal(beam.tokens, greedy.tokens)
  np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_scores_are_true_and_beat_greedy(model, alpha):
  config, params = model
  beam = decode(params, config, _inputs(), method="beam", max_decode_length=MAX_LEN, num_beams=4,
                length_penalty=alpha)
  tokens = np.asarray(beam.tokens)
  _assert_padded_after_eos(tokens)
  # The reported score is the sequence's real (teacher-forced) score: beams and cache stayed aligned.
  log_prob, length = _sequence_log_prob(config, params, _inputs(), tokens)
  np.testing.assert_allclose(beam.scores, log_prob / ((5.0 + length) / 6.0) ** alpha, rtol=1e-5, atol=1e-5)
  if alpha == 0.0:
    greedy = decode(params, config, _inputs(), max_decode_length=MAX_LEN)
    assert np.all(np.asarray(beam.scores) >= np.asarray(greedy.scores) - 1e-5)
    assert np.any(np.asarray(beam.scores) > np.asarray(greedy.scores) + 1e-3)


def test_sampling_with_top_k_one_or_tiny_top_p_is_greedy(unrolled_model):
  config, params = unrolled_model
  greedy = decode(params, config, _inputs(), max_decode_length=MAX_LEN)
  for options in ({"top_k": 1}, {"top_p": 1e-6}):
    sampled = decode(params, config, _inputs(), method="sample", max_decode_length=MAX_LEN,
                     rng=jax.random.key(3), temperature=0.7, **options)
    np.testing.assert_array_equal(sampled.tokens, greedy.tokens, err_msg=str(options))


def test_sampling_is_deterministic_per_rng_and_varies_across_rngs(unrolled_model):
  config, params = unrolled_model

  def sample(seed: int) -> np.ndarray:
    out = decode(params, config, _inputs(), method="sample", max_decode_length=MAX_LEN,
                 rng=jax.random.key(seed), top_p=0.95)
    tokens = np.asarray(out.tokens)
    _assert_padded_after_eos(tokens)
    return tokens

  np.testing.assert_array_equal(sample(0), sample(0))
  assert not np.array_equal(sample(0), sample(1))


def test_top_k_and_top_p_restrict_the_support():
  logits = jnp.log(jnp.array([[0.1, 0.4, 0.3, 0.2]] * 4000))
  choose = jax.jit(decoding._choose_sampled)
  top_k = np.asarray(choose(logits, jax.random.key(0), 1.0, 2, 1.0))
  nucleus = np.asarray(choose(logits, jax.random.key(0), 1.0, 0, 0.5))
  for tokens in (top_k, nucleus):  # Both keep tokens 1 and 2, renormalised to 4/7 and 3/7.
    assert set(np.unique(tokens)) == {1, 2}
    assert abs(np.mean(tokens == 1) - 4 / 7) < 0.03


def test_tokens_after_eos_are_zero(unrolled_model):
  config, params = unrolled_model
  runs = [decode(params, config, _inputs(), max_decode_length=MAX_LEN),
          decode(params, config, _inputs(), method="beam", max_decode_length=MAX_LEN),
          decode(params, config, _inputs(), method="sample", max_decode_length=MAX_LEN,
                 rng=jax.random.key(0), temperature=0.5)]
  for out in runs:
    tokens = np.asarray(out.tokens)
    assert (tokens == EOS_ID).any()
    _assert_padded_after_eos(tokens)


def test_new_batches_of_the_same_shape_do_not_retrace(unrolled_model, monkeypatch):
  config, params = unrolled_model
  traces = []
  original = decoding.decode_step

  def counting_step(*args):
    traces.append(1)
    return original(*args)

  monkeypatch.setattr(decoding, "decode_step", counting_step)
  inputs, length = _inputs(), MAX_LEN - 3  # A length no other test compiles, so this one traces.
  decode(params, config, inputs, max_decode_length=length)
  assert traces
  traced = len(traces)
  decode(params, config, (inputs + 7) * (inputs > 0), max_decode_length=length)
  decode(params, dataclasses.replace(config), inputs[::-1], max_decode_length=length)
  assert len(traces) == traced


def test_greedy_reproduces_the_targets_of_an_overfit_model():
  config, inputs = _config(), _inputs()
  targets = np.random.default_rng(2).integers(2, 64, size=(inputs.shape[0], MAX_LEN)).astype(np.int32)
  for row, length in enumerate([10, 3, 1, 6]):  # Lengths include EOS; one target is EOS alone.
    targets[row, length - 1] = EOS_ID
    targets[row, length:] = 0
  decoder_inputs = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
  weights = jnp.asarray(targets > 0, jnp.float32)  # EOS is learnt; padding is not.
  forward = _teacher_forced(False)
  optimizer = optax.adam(3e-3)

  def loss_fn(params: Any) -> jax.Array:
    logits = forward(params, jnp.asarray(inputs), jnp.asarray(decoder_inputs))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(targets))
    return jnp.sum(losses * weights) / jnp.sum(weights)

  @jax.jit
  def train_step(params: Any, opt_state: Any) -> tuple[Any, Any, jax.Array]:
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  params = _unrolled_params()
  opt_state = optimizer.init(params)
  for _ in range(300):
    params, opt_state, loss = train_step(params, opt_state)
  assert loss < 0.01
  for method in ("greedy", "beam"):  # Same shapes as the tests above: no new compilation.
    out = decode(params, config, inputs, method=method, max_decode_length=MAX_LEN)
    np.testing.assert_array_equal(out.tokens, targets, err_msg=method)


@pytest.mark.parametrize("settings, message", [
    ({"method": "top_k"}, "method"),
    ({"method": "sample"}, "rng"),
    ({"method": "sample", "rng": jax.random.key(0), "top_p": 0.0}, "top_p"),
    ({"method": "beam", "length_penalty": -0.5}, "length_penalty"),
])
def test_rejects_invalid_settings(settings, message):
  with pytest.raises(ValueError, match=message):
    decode({}, _config(), _inputs(), max_decode_length=MAX_LEN, **settings)


def test_per_layer_position_bias_decodes_as_teacher_forcing():
  """umT5's bias tables, one per layer and scanned, follow the cache's decode positions: each
  greedy token is the argmax of the full-sequence logits given the tokens before it."""
  config = dataclasses.replace(_config(scan_layers=True), position_scheme="relative_per_layer")
  params = jax.jit(lambda key: init_params(config, key))(jax.random.key(1))
  assert params["decoder"]["layers"]["relpos_bias"]["rel_embedding"].shape == (2, 2, 32)
  out = decode(params, config, _inputs(), method="greedy", max_decode_length=MAX_LEN)
  tokens = np.asarray(out.tokens)
  decoder_inputs = np.concatenate([np.zeros_like(tokens[:, :1]), tokens[:, :-1]], axis=1)
  logits = np.asarray(jax.jit(Transformer(config).apply)({"params": params}, jnp.asarray(_inputs()),
                                                         jnp.asarray(decoder_inputs)))
  before_eos = (np.cumsum(tokens == EOS_ID, axis=1) - (tokens == EOS_ID)) == 0
  np.testing.assert_array_equal(np.argmax(logits, -1)[before_eos], tokens[before_eos])
  log_probs = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), tokens[..., None], -1)
  np.testing.assert_allclose(out.scores, (log_probs[..., 0] * before_eos).sum(1), rtol=1e-5,
                             atol=1e-5)


# ----------------------------------------------------------------------------
# Decoder-only (prefix LM)
# ----------------------------------------------------------------------------


def _prefix_lm_inputs() -> np.ndarray:
  """_inputs() and a row without inputs: every row's prefix has a different length."""
  return np.concatenate([_inputs(), np.zeros((1, max(INPUT_LENGTHS)), np.int32)])


@functools.lru_cache(maxsize=None)
def _prefix_lm(scan_layers: bool) -> tuple[ModelConfig, Any]:
  """An EOS-prone random prefix LM, unrolled or scanned (the same weights)."""
  config = _config(architecture="decoder_only")
  params = dict(jax.jit(lambda key: init_params(config, key))(jax.random.key(0)))
  params["logits_dense"] = params["logits_dense"].at[:, EOS_ID].multiply(3.0)
  if scan_layers:
    return _config(True, "decoder_only"), _stack_layers(params, "decoder_only")
  return config, params


def test_right_aligned_prefix():
  prefix, segment_ids = decoding.right_aligned_prefix(jnp.array([[5, 6, 7], [8, 0, 0], [0, 0, 0]]))
  np.testing.assert_array_equal(prefix, [[0, 5, 6, 7], [0, 0, 0, 8], [0, 0, 0, 0]])
  np.testing.assert_array_equal(segment_ids, [[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]])


@pytest.mark.parametrize("scan_layers", [False, True], ids=["unrolled", "scanned"])
def test_prefix_lm_cached_greedy_is_the_teacher_forced_argmax(scan_layers):
  """The prefix fed at once (right-aligned, rows of different lengths), then one token per
  step: the tokens and scores of the full forward pass given the tokens before each."""
  config, params = _prefix_lm(scan_layers)
  inputs = _prefix_lm_inputs()
  out = decode(params, config, inputs, method="greedy", max_decode_length=MAX_LEN)
  tokens = np.asarray(out.tokens)
  ended = (tokens == EOS_ID).any(1)
  assert ended.any() and not ended.all(), "the batch should mix ended and unended rows"
  decoder_inputs = np.concatenate([np.zeros_like(tokens[:, :1]), tokens[:, :-1]], axis=1)
  logits = _teacher_forced(scan_layers, "decoder_only")(params, jnp.asarray(inputs),
                                                         jnp.asarray(decoder_inputs))
  before_eos = (np.cumsum(tokens == EOS_ID, axis=1) - (tokens == EOS_ID)) == 0
  np.testing.assert_array_equal(np.argmax(np.asarray(logits), -1)[before_eos], tokens[before_eos])
  log_prob, _ = _sequence_log_prob(config, params, inputs, tokens)
  np.testing.assert_allclose(out.scores, log_prob, rtol=1e-5, atol=1e-5)


def test_prefix_lm_beam_search():
  """A beam of one is greedy; four beams (their cache rows, prefix included, reordered each
  step) score their tokens as the full forward pass does."""
  config, params = _prefix_lm(False)
  inputs = _prefix_lm_inputs()
  greedy = decode(params, config, inputs, max_decode_length=MAX_LEN)
  beam = decode(params, config, inputs, method="beam", max_decode_length=MAX_LEN, num_beams=1,
                length_penalty=0.0)
  np.testing.assert_array_equal(beam.tokens, greedy.tokens)
  np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-5, atol=1e-5)
  beams = decode(params, config, inputs, method="beam", max_decode_length=MAX_LEN, num_beams=4,
                 length_penalty=0.0)
  log_prob, _ = _sequence_log_prob(config, params, inputs, np.asarray(beams.tokens))
  np.testing.assert_allclose(beams.scores, log_prob, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(beams.scores) >= np.asarray(greedy.scores) - 1e-5)
