"""Incremental decoding with the model's key/value cache: greedy, sampling, beam search.

Each method runs its whole loop inside one `jax.jit` (a `lax.while_loop` that
stops early once every sequence has ended), so a step costs one decoder token,
not a pass over the prefix. T5 has no BOS: decoding starts from the pad id 0
and ends at EOS (id 1); positions after EOS hold 0.

A decoder-only model (a prefix LM) first feeds its whole prefix [0, x_1..x_n] in one call,
right-aligned so that every row's first target comes at the same index: the left padding
is masked out, and index distances between real tokens stay their distances in training.

Shapes: b = batch, n = beams, l = max_decode_length, v = vocab.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from t5x_lite.config import ConfigError, ModelConfig

# PAD_ID is also the first decoder input: T5 starts decoding from pad.
from t5x_lite.data.vocabulary import EOS_ID, PAD_ID
from t5x_lite.model import Transformer

Array = jax.Array
METHODS = ("greedy", "sample", "beam")


class DecodeOutput(NamedTuple):
  """What `decode` returns."""

  tokens: Array  # (b, l) int32, 0 after EOS.
  # (b,) float32. greedy/sample: summed log-probabilities of the tokens (through
  # EOS) under the model at temperature 1; beam: that sum over the length penalty.
  scores: Array


# ----------------------------------------------------------------------------
# Cache primitives
# ----------------------------------------------------------------------------


def init_cache(model: Transformer, params: Any, encoded: Array, encoder_input_tokens: Array,
               max_decode_length: int) -> Any:
  """Allocates the self-attention cache and computes cross-attention keys/values once."""
  b = encoder_input_tokens.shape[0]
  _, variables = model.apply(
      {"params": params}, encoded, encoder_input_tokens,
      jnp.zeros((b, max_decode_length), jnp.int32),
      decode=True, method=Transformer.decode, mutable=["cache"])
  return variables["cache"]


def decode_step(model: Transformer, params: Any, cache: Any, encoded: Array,
                encoder_input_tokens: Array, tokens: Array) -> tuple[Array, Any]:
  """Feeds one token per row; returns float32 logits (b, v) and the advanced cache."""
  logits, variables = model.apply(
      {"params": params, "cache": cache}, encoded, encoder_input_tokens, tokens[:, None],
      decode=True, method=Transformer.decode, mutable=["cache"])
  return logits[:, 0].astype(jnp.float32), variables["cache"]


def gather_cache_rows(cache: Any, rows: Array) -> Any:
  """Takes cache rows `rows` (m,) along the batch: expands to beams and reorders them.

  Every leaf with ndim >= 2 has batch at dim 0 (scanned layers stack at dim 1),
  except the decoder's shared `key_positions` (1, l); scalars have no batch.
  """

  def gather(path: tuple, leaf: Array) -> Array:
    name = getattr(path[-1], "key", None)
    if leaf.ndim < 2 or name == "key_positions":
      return leaf
    return jnp.take(leaf, rows, axis=0)

  return jax.tree_util.tree_map_with_path(gather, cache)


def _encode(model: Transformer, params: Any, encoder_input_tokens: Array) -> Array:
  return model.apply({"params": params}, encoder_input_tokens, method=Transformer.encode)


def right_aligned_prefix(encoder_input_tokens: Array) -> tuple[Array, Array]:
  """(b, l_in) inputs, padding last -> a prefix LM's prefix (b, l_in + 1) [0.., 0, x_1..x_n]
  and its segment ids (1 from the start token on, 0 for the left padding)."""
  b, inputs_length = encoder_input_tokens.shape
  prefix = jnp.concatenate([jnp.full((b, 1), PAD_ID, jnp.int32), encoder_input_tokens], axis=1)
  padding = inputs_length - jnp.sum(encoder_input_tokens > 0, axis=1, keepdims=True)  # (b, 1)
  column = jnp.arange(inputs_length + 1)[None]
  # Rotated right by the padding: the padding after x_n wraps round to the front.
  prefix = jnp.take_along_axis(prefix, (column - padding) % (inputs_length + 1), axis=1)
  return prefix, (column >= padding).astype(jnp.int32)


def _start(model: Transformer, params: Any, encoder_input_tokens: Array,
           max_decode_length: int) -> tuple[Any, Any]:
  """(context, cache) before the first token: the encoder output and inputs (whose
  cross-attention keys/values the cache holds), or for a prefix LM the first token's logits
  (b, v) from feeding the prefix into a cache with room for the rest."""
  if model.config.architecture == "encoder_decoder":
    encoded = _encode(model, params, encoder_input_tokens)
    cache = init_cache(model, params, encoded, encoder_input_tokens, max_decode_length)
    return (encoded, encoder_input_tokens), cache
  prefix, segment_ids = right_aligned_prefix(encoder_input_tokens)
  b, prefix_length = prefix.shape
  # The prefix, then every token but the last (which is never fed).
  cache_length = prefix_length + max_decode_length - 1
  _, variables = model.apply(
      {"params": params}, jnp.zeros((b, cache_length), jnp.int32),
      jnp.zeros((b, cache_length), jnp.int32), method=Transformer.prefix_lm_next_logits,
      mutable=["cache"])
  logits, variables = model.apply(
      {"params": params, "cache": variables["cache"]}, prefix, segment_ids,
      method=Transformer.prefix_lm_next_logits, mutable=["cache"])
  return logits, variables["cache"]


def _step(model: Transformer, params: Any, cache: Any, context: Any, tokens: Array,
          step: Array) -> tuple[Array, Any]:
  """The logits (b, v) of the token after `tokens` (b,), the first of which, step 0's, is 0,
  and the advanced cache. A prefix LM has fed that 0 with its prefix: step 0 reads `_start`'s
  logits."""
  if model.config.architecture == "encoder_decoder":
    return decode_step(model, params, cache, *context, tokens)

  def feed() -> tuple[Array, Any]:
    logits, variables = model.apply(
        {"params": params, "cache": cache}, tokens[:, None], jnp.ones_like(tokens[:, None]),
        method=Transformer.prefix_lm_next_logits, mutable=["cache"])
    return logits, variables["cache"]

  return jax.lax.cond(step == 0, lambda: (context, cache), feed)


def _token_log_prob(logits: Array, tokens: Array) -> Array:
  """(b, v), (b,) -> (b,) log-probability of each row's token."""
  log_probs = jax.nn.log_softmax(logits)
  return jnp.take_along_axis(log_probs, tokens[:, None], axis=1)[:, 0]


# ----------------------------------------------------------------------------
# Greedy and sampling: one loop, differing only in how a token is chosen
# ----------------------------------------------------------------------------


class _State(NamedTuple):
  step: Array  # () int32
  tokens: Array  # (b, l)
  last: Array  # (b,) the next decoder input
  done: Array  # (b,) bool: EOS already emitted
  scores: Array  # (b,)
  cache: Any


def _choose_sampled(logits: Array, rng: Array, temperature: Array, top_k: Array,
                    top_p: Array) -> Array:
  """Samples from the top_k (0 = all) most likely tokens, then from the top_p nucleus of those.

  A full sort with the cut-offs as masks keeps top_k a traced value, so changing
  it does not recompile.
  """
  values, indices = jax.lax.top_k(logits / temperature, logits.shape[-1])  # (b, v), descending
  rank = jnp.arange(logits.shape[-1])
  values = jnp.where((rank < top_k) | (top_k == 0), values, -jnp.inf)
  probs = jax.nn.softmax(values)
  # Keep a token if the tokens above it hold less than top_p: the first always stays.
  keep = jnp.cumsum(probs, axis=-1) - probs < top_p
  choice = jax.random.categorical(rng, jnp.where(keep, values, -jnp.inf))  # (b,)
  return jnp.take_along_axis(indices, choice[:, None], axis=1)[:, 0]


def _token_loop(model: Transformer, params: Any, encoder_input_tokens: Array, max_decode_length: int,
                choose: Callable[[Array, Array], Array]) -> DecodeOutput:
  """Decodes token by token; `choose(logits (b, v), step) -> (b,)` picks the next token."""
  b = encoder_input_tokens.shape[0]
  context, cache = _start(model, params, encoder_input_tokens, max_decode_length)

  def cond(s: _State) -> Array:
    return (s.step < max_decode_length) & ~jnp.all(s.done)

  def body(s: _State) -> _State:
    logits, cache = _step(model, params, s.cache, context, s.last, s.step)
    token = jnp.where(s.done, PAD_ID, choose(logits, s.step))
    scores = s.scores + jnp.where(s.done, 0.0, _token_log_prob(logits, token))
    tokens = jax.lax.dynamic_update_slice(s.tokens, token[:, None], (0, s.step))
    return _State(s.step + 1, tokens, token, s.done | (token == EOS_ID), scores, cache)

  init = _State(jnp.zeros((), jnp.int32), jnp.zeros((b, max_decode_length), jnp.int32),
                jnp.full((b,), PAD_ID, jnp.int32), jnp.zeros((b,), bool),
                jnp.zeros((b,), jnp.float32), cache)
  final = jax.lax.while_loop(cond, body, init)
  return DecodeOutput(final.tokens, final.scores)


def _greedy(model: Transformer, max_decode_length: int, params: Any,
            encoder_input_tokens: Array) -> DecodeOutput:
  return _token_loop(model, params, encoder_input_tokens, max_decode_length,
                     lambda logits, step: jnp.argmax(logits, axis=-1).astype(jnp.int32))


def _sample(model: Transformer, max_decode_length: int, params: Any, encoder_input_tokens: Array,
            rng: Array, temperature: Array, top_k: Array, top_p: Array) -> DecodeOutput:
  def choose(logits: Array, step: Array) -> Array:
    return _choose_sampled(logits, jax.random.fold_in(rng, step), temperature, top_k, top_p)

  return _token_loop(model, params, encoder_input_tokens, max_decode_length, choose)


# ----------------------------------------------------------------------------
# Beam search
# ----------------------------------------------------------------------------


class _BeamState(NamedTuple):
  step: Array  # () int32
  live_tokens: Array  # (b, n, l)
  live_log_probs: Array  # (b, n) summed log-probabilities; -inf for empty beams
  finished_tokens: Array  # (b, n, l)
  finished_scores: Array  # (b, n) length-penalised; -inf for empty slots
  cache: Any  # rows b * n, beam-major within each example


def _length_penalty(length: Array, alpha: Array) -> Array:
  """GNMT / T5X: ((5 + length) / 6) ** alpha."""
  return ((5.0 + length) / 6.0) ** alpha


def _take_beams(x: Array, index: Array) -> Array:
  """x (b, m, ...), index (b, j) -> (b, j, ...)."""
  return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def _beam_search(model: Transformer, max_decode_length: int, num_beams: int, params: Any,
                 encoder_input_tokens: Array, alpha: Array) -> DecodeOutput:
  """Beam search; a hypothesis ends only when EOS is among the n best continuations.

  That rule (rather than any EOS among the 2n candidates) makes num_beams=1
  exactly greedy. Stops once no live beam can beat the worst finished one
  (sound for alpha >= 0, since log-probabilities only fall and the penalty
  only grows); live beams still running at max length end there, unfinished.
  """
  b, n, l = encoder_input_tokens.shape[0], num_beams, max_decode_length
  context, cache = _start(model, params, encoder_input_tokens, l)
  rows = jnp.repeat(jnp.arange(b), n)  # (b * n,)
  cache = gather_cache_rows(cache, rows)
  context = jax.tree.map(lambda x: x[rows], context)
  max_penalty = _length_penalty(jnp.float32(l), alpha)

  def cond(s: _BeamState) -> Array:
    best_live = s.live_log_probs[:, 0] / max_penalty
    can_improve = best_live > s.finished_scores[:, -1]
    return (s.step < l) & jnp.any(can_improve)

  def body(s: _BeamState) -> _BeamState:
    previous = jax.lax.dynamic_index_in_dim(s.live_tokens, jnp.maximum(s.step - 1, 0), 2, False)
    last = jnp.where(s.step == 0, PAD_ID, previous)  # (b, n)
    logits, cache = _step(model, params, s.cache, context, last.reshape(b * n), s.step)
    v = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits).reshape(b, n, v)
    candidates = (s.live_log_probs[:, :, None] + log_probs).reshape(b, n * v)
    top_log_probs, top_index = jax.lax.top_k(candidates, 2 * n)  # (b, 2n), descending
    source_beam, token = top_index // v, top_index % v
    tokens = _take_beams(s.live_tokens, source_beam)  # (b, 2n, l)
    tokens = jax.lax.dynamic_update_slice(tokens, token[:, :, None], (0, 0, s.step))
    is_eos = token == EOS_ID

    ends = is_eos & (jnp.arange(2 * n) < n)
    new_scores = jnp.where(ends, top_log_probs / _length_penalty(s.step + 1.0, alpha), -jnp.inf)
    finished_scores, pick = jax.lax.top_k(jnp.concatenate([s.finished_scores, new_scores], 1), n)
    finished_tokens = _take_beams(jnp.concatenate([s.finished_tokens, tokens], 1), pick)

    live_log_probs, pick = jax.lax.top_k(jnp.where(is_eos, -jnp.inf, top_log_probs), n)
    cache_rows = (jnp.arange(b)[:, None] * n + _take_beams(source_beam, pick)).reshape(b * n)
    return _BeamState(s.step + 1, _take_beams(tokens, pick), live_log_probs, finished_tokens,
                      finished_scores, gather_cache_rows(cache, cache_rows))

  live_log_probs = jnp.tile(jnp.where(jnp.arange(n) == 0, 0.0, -jnp.inf), (b, 1))
  init = _BeamState(jnp.zeros((), jnp.int32), jnp.zeros((b, n, l), jnp.int32), live_log_probs,
                    jnp.zeros((b, n, l), jnp.int32), jnp.full((b, n), -jnp.inf), cache)
  s = jax.lax.while_loop(cond, body, init)
  # Beams alive at max length compete as truncated hypotheses; after an early
  # stop none can beat a finished one.
  truncated = jnp.where(s.step == l, s.live_log_probs / max_penalty, -jnp.inf)
  scores = jnp.concatenate([s.finished_scores, truncated], 1)
  tokens = jnp.concatenate([s.finished_tokens, s.live_tokens], 1)
  best = jnp.argmax(scores, axis=1)[:, None]  # (b, 1)
  return DecodeOutput(_take_beams(tokens, best)[:, 0], jnp.take_along_axis(scores, best, 1)[:, 0])


# ----------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _compiled(config_items: tuple, method: str, max_decode_length: int,
              num_beams: int) -> Callable[..., DecodeOutput]:
  """One jitted decoder per static setting; jax.jit then caches per input shape."""
  model = Transformer(ModelConfig(**dict(config_items)))
  if method == "greedy":
    fn = functools.partial(_greedy, model, max_decode_length)
  elif method == "sample":
    fn = functools.partial(_sample, model, max_decode_length)
  else:
    fn = functools.partial(_beam_search, model, max_decode_length, num_beams)
  return jax.jit(fn)


def check_settings(config: ModelConfig, method: str, max_decode_length: int, *, temperature: float,
                   top_k: int, top_p: float, num_beams: int, length_penalty: float,
                   name: Callable[[str], str] = lambda arg: arg) -> None:
  """Raises ConfigError (a ValueError) for settings `decode` cannot use. `name` spells an
  argument in the message, so the CLI can check its flags before restoring a checkpoint."""
  if method not in METHODS:
    raise ConfigError(f"{name('method')}={method!r}; choose one of {list(METHODS)}.")
  if config.vocab_size is None:
    raise ConfigError("config.vocab_size is None; set it from the vocabulary before decoding.")
  if max_decode_length < 1:
    raise ConfigError(f"{name('max_decode_length')}={max_decode_length} must be at least 1.")
  if method == "sample":
    if not temperature > 0:
      raise ConfigError(f"{name('temperature')}={temperature} must be positive; use "
                        f"{name('method')}=greedy for argmax.")
    if not 0 <= top_k <= config.vocab_size:
      raise ConfigError(f"{name('top_k')}={top_k} must be in [0, vocab_size={config.vocab_size}] "
                        "(0 = off).")
    if not 0 < top_p <= 1:
      raise ConfigError(f"{name('top_p')}={top_p} must be in (0, 1].")
  if method == "beam":
    if num_beams < 1:
      raise ConfigError(f"{name('num_beams')}={num_beams} must be at least 1.")
    if length_penalty < 0:
      raise ConfigError(f"{name('length_penalty')}={length_penalty} must be >= 0 (early stopping "
                        "relies on it).")


def decode(params: Any, config: ModelConfig, encoder_input_tokens: ArrayLike, *,
           method: str = "greedy", max_decode_length: int, rng: Optional[Array] = None,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_beams: int = 4,
           length_penalty: float = 0.6) -> DecodeOutput:
  """Decodes (b, l_in) int32 inputs (0 = padding) into (b, max_decode_length) tokens.

  method: "greedy"; "sample" (needs rng; temperature, then top_k (0 = off) and
  top_p (1 = off)); or "beam" (num_beams, length_penalty alpha). Compiled once
  per (config, method, max_decode_length, num_beams, input shape) and reused;
  the float settings and top_k are traced, so changing them does not recompile.
  """
  if method == "sample" and rng is None:
    raise ValueError('method="sample" needs rng, e.g. jax.random.key(0).')
  check_settings(config, method, max_decode_length, temperature=temperature, top_k=top_k,
                 top_p=top_p, num_beams=num_beams, length_penalty=length_penalty)
  config_items = tuple(sorted(dataclasses.asdict(config).items()))
  fn = _compiled(config_items, method, max_decode_length, num_beams if method == "beam" else 0)
  encoder_input_tokens = jnp.asarray(encoder_input_tokens, jnp.int32)
  if method == "greedy":
    return fn(params, encoder_input_tokens)
  if method == "sample":
    return fn(params, encoder_input_tokens, rng, jnp.float32(temperature), jnp.int32(top_k),
              jnp.float32(top_p))
  return fn(params, encoder_input_tokens, jnp.float32(length_penalty))

