"""The T5 encoder-decoder, or its decoder-only prefix LM, in Flax linen, with logical axis
names on every parameter.

Parameters are a plain pytree passed to `apply`; nothing is hidden in module
state. Defaults follow T5.1.1 (docs/reference.md): pre-norm RMSNorm, no biases,
gated-GELU FFN, untied logits, one relative-position-bias table per stack.

Shapes: b = batch, l/q/k = lengths, d = d_model, h = heads, k = d_kv,
f = d_ff, v = vocab.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from t5x_lite.config import ModelConfig
from t5x_lite.partitioning import ActivationSharding, constrain

Array = jax.Array
_NEG_INF = -1e10  # Large, finite: fully-masked rows (padding) stay NaN-free.

# Logical names of activations.
BATCH_LENGTH_EMBED = ("batch", "length", "embed")
BATCH_LENGTH_HEADS_KV = ("batch", "length", "heads", "kv")
BATCH_LENGTH_MLP = ("batch", "length", "mlp")
BATCH_LENGTH_VOCAB = ("batch", "length", "vocab")


def activation_dtype(config: ModelConfig) -> jnp.dtype:
  """'auto' is bfloat16 on accelerators and float32 on the CPU."""
  if config.dtype == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  return jnp.dtype(config.dtype)


def _param(module: nn.Module, name: str, init: Callable, shape: tuple, axes: tuple, dtype) -> Array:
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def _kernel_init(in_axis, out_axis, scale: float = 1.0, distribution: str = "truncated_normal"):
  return nn.initializers.variance_scaling(scale, "fan_in", distribution, in_axis=in_axis, out_axis=out_axis)


def dropout(config: ModelConfig) -> nn.Dropout:
  """The dropout of embeddings, residuals, the MLP hidden and the stacks' outputs: T5X's
  (and Mesh TensorFlow's) keeps one mask per (batch, feature), shared along the length
  (broadcast_dims=(-2,)); with dropout_shared_over_length=False one per element, as
  Hugging Face's T5."""
  shared = (-2,) if config.dropout_shared_over_length else ()
  return nn.Dropout(config.dropout_rate, broadcast_dims=shared)


# ----------------------------------------------------------------------------
# Relative position bias
# ----------------------------------------------------------------------------


def relative_position_bucket(relative_position: Array, *, bidirectional: bool,
                             num_buckets: int = 32, max_distance: int = 128) -> Array:
  """T5's bucketing of key_position - query_position.

  Half the buckets (bidirectional) are for keys after the query. Within a
  direction, distances below num_buckets/4 (or /2 causal) get their own bucket;
  larger ones share logarithmically wider buckets up to max_distance.
  """
  relative_position = jnp.asarray(relative_position)
  bucket = jnp.zeros_like(relative_position)
  distance = -relative_position
  if bidirectional:
    num_buckets //= 2
    bucket = bucket + (distance < 0).astype(relative_position.dtype) * num_buckets
    distance = jnp.abs(distance)
  else:
    distance = jnp.maximum(distance, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  log_ratio = jnp.log(distance.astype(jnp.float32) / max_exact + jnp.finfo(jnp.float32).eps)
  large = max_exact + (log_ratio / np.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(
      relative_position.dtype)
  large = jnp.minimum(large, num_buckets - 1)
  return bucket + jnp.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
  """A bias table per stack (T5) or per layer (umT5); returns (1, h, q, k) float32 attention bias.

  Positions are indices in the row, packed or not, as in T5X: inside a packed segment the
  distance between two tokens is the distance between their indices, and attention across
  segments is masked, so one bias serves every row (a (b, h, q, k) bias and its gradient
  would cost gigabytes at T5's batch sizes)."""

  config: ModelConfig
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array) -> Array:
    # query_positions: (1, q); key_positions: (1, k)
    cfg = self.config
    table = _param(self, "rel_embedding", nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                   (cfg.num_heads, cfg.relative_attention_num_buckets), ("heads", "relpos_buckets"),
                   jnp.dtype(cfg.param_dtype))
    relative = key_positions[:, None, :] - query_positions[:, :, None]  # (1, q, k)
    buckets = relative_position_bucket(
        relative, bidirectional=self.bidirectional,
        num_buckets=cfg.relative_attention_num_buckets,
        max_distance=cfg.relative_attention_max_distance)
    bias = jnp.take(table.astype(jnp.float32), buckets, axis=1)  # (h, 1, q, k)
    return jnp.transpose(bias, (1, 0, 2, 3))


# ----------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------


class Norm(nn.Module):
  """RMSNorm (T5: scale only, no mean subtraction) or LayerNorm."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    param_dtype = jnp.dtype(cfg.param_dtype)
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",), param_dtype)
    bias = None
    if cfg.norm == "layernorm":
      bias = _param(self, "bias", nn.initializers.zeros, (x.shape[-1],), ("embed",), param_dtype)
    y = _normalize(x, scale, bias, layernorm=cfg.norm == "layernorm", eps=cfg.norm_eps,
                   dtype=activation_dtype(cfg))
    return checkpoint_name(y, "norm")


def _normalize(x: Array, scale: Array, bias: Optional[Array], *, layernorm: bool, eps: float,
               dtype) -> Array:
  """(..., d) -> (..., d) in `dtype`, computed in float32."""
  x32 = x.astype(jnp.float32)
  if layernorm:
    x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
  variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
  y = x32 * jax.lax.rsqrt(variance + eps) * scale.astype(jnp.float32)
  if bias is not None:
    y = y + bias.astype(jnp.float32)
  return y.astype(dtype)


class Embed(nn.Module):
  """Token embedding (vocab, embed); with tied logits also the output kernel."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.embedding = _param(self, "embedding", nn.initializers.normal(stddev=1.0),
                            (cfg.vocab_size, cfg.d_model), ("vocab", "embed"),
                            jnp.dtype(cfg.param_dtype))

  def __call__(self, tokens: Array) -> Array:
    return jnp.take(self.embedding, tokens, axis=0).astype(activation_dtype(self.config))


@flax.struct.dataclass
class AttentionMask:
  """Which keys each query may attend to, kept compact so that each implementation builds
  what it needs: the einsum path a boolean (b|1, 1, q|1, k) mask, cuDNN lengths and a
  causal flag.

  key_segment_ids (b|1, k): 0 marks padding keys. query_segment_ids (b|1, q), given for
  packed rows, lets a query see only the keys of its own segment. Without it a row is one
  sequence whose padding comes last, which cuDNN takes as lengths; a packed row's mask can
  only reach cuDNN as an additive (b, h, q, k) bias. causal: a query sees keys at its index
  or before. prefix_keys (b, k) bool, with causal and query_segment_ids: keys that the queries
  of their segment see wherever they are (a prefix LM's inputs, attended bidirectionally).
  """
  key_segment_ids: Optional[Array] = None
  query_segment_ids: Optional[Array] = None
  causal: bool = flax.struct.field(pytree_node=False, default=False)
  prefix_keys: Optional[Array] = None

  @property
  def packed(self) -> bool:
    return self.query_segment_ids is not None

  def dense(self, query_length: int, key_length: int) -> Optional[Array]:
    """(b|1, 1, q|1, k) bool, or None when every query sees every key."""
    mask = None
    if self.key_segment_ids is not None:
      keys = self.key_segment_ids[:, None, :] > 0  # (b, 1, k)
      if self.packed:
        keys = keys & (self.query_segment_ids[:, :, None] == self.key_segment_ids[:, None, :])
      mask = keys[:, None]
    if self.causal:
      causal = (jnp.arange(key_length)[None, :] <= jnp.arange(query_length)[:, None])[None, None]
      if self.prefix_keys is not None:
        causal = causal | self.prefix_keys[:, None, None, :]  # (b, 1, q, k)
      mask = causal if mask is None else mask & causal
    return mask

  def key_lengths(self, batch_size: int) -> Optional[Array]:
    """(b,) int32 count of non-padding keys of unpacked rows, at least 1: a row of padding
    alone (eval's filler rows) then attends to its first key instead of dividing by zero."""
    if self.key_segment_ids is None:
      return None
    lengths = jnp.sum(self.key_segment_ids > 0, axis=-1, dtype=jnp.int32)
    return jnp.broadcast_to(jnp.maximum(lengths, 1), (batch_size,))


@jax.custom_vjp
def attention_weights(query: Array, key: Array, bias: Optional[Array],
                      mask: Optional[Array]) -> Array:
  """softmax(query . key + bias, masked) as (b, h, q, s) weights in the query's dtype.

  query: (b, q, h, k); key: (b, s, h, k); bias: (1, h, q, s) float32; mask: (b|1, 1, q|1, s)
  bool or None. The logits and the softmax are float32; the backward pass keeps only the
  weights, in the activation dtype (the second matmul keeps them anyway), instead of
  autodiff's float32 softmax output: at T5-base's batch 128 that is 1.6 GB per encoder
  layer. The score gradient is formed in float32, reduced there for the bias, and meets
  the query and key matmuls in the activation dtype, as T5X's bfloat16 attention does.
  """
  return _attention_weights_forward(query, key, bias, mask)[0]


def _attention_weights_forward(query, key, bias, mask):
  logits = jnp.einsum("bqhk,bshk->bhqs", query, key, preferred_element_type=jnp.float32)
  if bias is not None:
    logits = logits + bias
  if mask is not None:
    logits = jnp.where(mask, logits, _NEG_INF)
  weights = jax.nn.softmax(logits, axis=-1).astype(query.dtype)
  return weights, (query, key, weights, bias, mask)


def _attention_weights_backward(residuals, weights_grad):
  query, key, weights, bias, mask = residuals
  weights32, grad32 = weights.astype(jnp.float32), weights_grad.astype(jnp.float32)
  logits_grad = weights32 * (grad32 - jnp.sum(grad32 * weights32, axis=-1, keepdims=True))
  if mask is not None:
    logits_grad = jnp.where(mask, logits_grad, 0.0)
  bias_grad = None if bias is None else jnp.sum(logits_grad, axis=0, keepdims=True)
  logits_grad = logits_grad.astype(query.dtype)
  query_grad = jnp.einsum("bhqs,bshk->bqhk", logits_grad, key)
  key_grad = jnp.einsum("bhqs,bqhk->bshk", logits_grad, query)
  return query_grad, key_grad, bias_grad, None


attention_weights.defvjp(_attention_weights_forward, _attention_weights_backward)


def dot_product_attention(query: Array, key: Array, value: Array, bias: Optional[Array],
                          mask: AttentionMask, *, impl: str,
                          weights_dropout: Optional[Callable[[Array], Array]] = None) -> Array:
  """Attention without 1/sqrt(d) scaling (T5 folds it into the query init).

  query: (b, q, h, k); key, value: (b, s, h, k); bias: (1, h, q, s) float32. Logits and
  softmax in float32 (`attention_weights`). weights_dropout, applied to the (b, h, q, s)
  attention weights as T5X does, needs them materialised: with it the einsum path runs
  whatever `impl` says.
  """
  query_length, key_length = query.shape[1], key.shape[1]
  if impl != "xla" and weights_dropout is None:
    implementation = "cudnn" if impl == "cudnn" else None
    if bias is not None:
      bias = bias.astype(query.dtype)
    if mask.packed:
      return jax.nn.dot_product_attention(
          query, key, value, bias=bias, mask=mask.dense(query_length, key_length), scale=1.0,
          implementation=implementation)
    return jax.nn.dot_product_attention(
        query, key, value, bias=bias, scale=1.0, is_causal=mask.causal,
        key_value_seq_lengths=mask.key_lengths(query.shape[0]), implementation=implementation)
  weights = checkpoint_name(
      attention_weights(query, key, bias, mask.dense(query_length, key_length)), "attention_weights")
  if weights_dropout is not None:
    weights = weights_dropout(weights)
  return jnp.einsum("bhqs,bshk->bqhk", weights, value)


class Attention(nn.Module):
  """Multi-head attention; with decode=True it keeps a key/value cache."""

  config: ModelConfig
  sharding: Optional[ActivationSharding] = None
  # self (decoder self-attention caches k/v per step) or cross (caches once).
  kind: str = "self"

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Optional[Array], mask: AttentionMask,
               *, deterministic: bool, decode: bool = False,
               decode_position: Optional[Array] = None) -> Array:
    cfg = self.config
    dtype, param_dtype = activation_dtype(cfg), jnp.dtype(cfg.param_dtype)
    h, k, d = cfg.num_heads, cfg.d_kv, cfg.d_model
    # Kernels are stored 2-D (embed, heads * kv) as T5X does, so Adafactor
    # factors their second moments; they are reshaped to heads at use.
    qkv_axes = ("embed", "joined_kv")
    # T5 has no 1/sqrt(d_kv) in the logits: it lives in the query's init.
    query_init = _kernel_init(0, 1, scale=1.0 / k, distribution="normal")
    kv_init = _kernel_init(0, 1, distribution="normal")
    wq = _param(self, "query", query_init, (d, h * k), qkv_axes, param_dtype)
    wk = _param(self, "key", kv_init, (d, h * k), qkv_axes, param_dtype)
    wv = _param(self, "value", kv_init, (d, h * k), qkv_axes, param_dtype)
    wo = _param(self, "out", _kernel_init(0, 1, distribution="normal"), (h * k, d),
                ("joined_kv", "embed"), param_dtype)

    def project(x, w):
      y = jnp.einsum("bld,dhk->blhk", x, w.reshape(d, h, k).astype(dtype))
      return checkpoint_name(constrain(y, self.sharding, BATCH_LENGTH_HEADS_KV), "attention_qkv")

    query = project(inputs_q, wq)
    if decode and self.kind == "cross":
      # Encoder keys/values are computed on the first call and reused.
      key = self.variable("cache", "cross_key", project, inputs_kv, wk).value
      value = self.variable("cache", "cross_value", project, inputs_kv, wv).value
    else:
      key, value = project(inputs_kv, wk), project(inputs_kv, wv)
    if decode and self.kind == "self":
      key, value = self._update_cache(key, value, decode_position)
    weights_dropout = None
    if not deterministic and cfg.dropout_rate > 0:
      # T5X's: one keep-mask per (batch, head, key), shared by all queries.
      weights_dropout = functools.partial(
          nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,)), deterministic=False)
    out = dot_product_attention(query, key, value, bias, mask, impl=cfg.attention_impl,
                                weights_dropout=weights_dropout)
    out = checkpoint_name(constrain(out, self.sharding, BATCH_LENGTH_HEADS_KV), "attention_mix")
    out = jnp.einsum("blhk,hkd->bld", out, wo.reshape(h, k, d).astype(dtype))
    return checkpoint_name(out, "attention_out")

  def _update_cache(self, key: Array, value: Array, position: Array) -> tuple[Array, Array]:
    """Writes this call's keys/values (b, q, h, k) from `position` on; returns the whole cache.
    q is 1 per decoding step, or a prefix LM's whole prefix on its first step.

    The cache's length is fixed by the first (initialising) call, which
    passes the full length.
    """
    is_initialized = self.has_variable("cache", "cached_key")
    cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
    if not is_initialized:
      return key, value
    index = (0, position, 0, 0)
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, index)
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, index)
    return cached_key.value, cached_value.value


_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=True),
    "gated-gelu": functools.partial(jax.nn.gelu, approximate=True),
    "gated-relu": jax.nn.relu,
    "swiglu": jax.nn.silu,
}


class MLP(nn.Module):
  """Feed-forward block; gated variants multiply by a second linear branch."""

  config: ModelConfig
  sharding: Optional[ActivationSharding] = None

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    cfg = self.config
    dtype, param_dtype = activation_dtype(cfg), jnp.dtype(cfg.param_dtype)
    activation = _ACTIVATIONS[cfg.ffn_activation]
    in_init, out_init = _kernel_init(0, 1), _kernel_init(0, 1)

    def up(name):
      w = _param(self, name, in_init, (cfg.d_model, cfg.d_ff), ("embed", "mlp"), param_dtype)
      y = jnp.einsum("bld,df->blf", x, w.astype(dtype))
      return checkpoint_name(constrain(y, self.sharding, BATCH_LENGTH_MLP), "mlp_up")

    hidden = activation(up("wi_0")) * up("wi_1") if cfg.gated_ffn else activation(up("wi"))
    hidden = dropout(cfg)(checkpoint_name(hidden, "mlp_hidden"), deterministic=deterministic)
    wo = _param(self, "wo", out_init, (cfg.d_ff, cfg.d_model), ("mlp", "embed"), param_dtype)
    return checkpoint_name(jnp.einsum("blf,fd->bld", hidden, wo.astype(dtype)), "mlp_out")


# ----------------------------------------------------------------------------
# Layers and stacks
# ----------------------------------------------------------------------------


class EncoderLayer(nn.Module):
  config: ModelConfig
  sharding: Optional[ActivationSharding] = None
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, bias: Optional[Array], positions: Array,
               mask: AttentionMask) -> tuple[Array, None]:
    cfg = self.config
    residual_dropout = dropout(cfg)
    if cfg.position_scheme == "relative_per_layer":
      bias = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(positions, positions)
    y = Norm(cfg, name="pre_attention_layer_norm")(x)
    y = Attention(cfg, self.sharding, name="attention")(y, y, bias, mask, deterministic=self.deterministic)
    x = constrain(x + residual_dropout(y, deterministic=self.deterministic), self.sharding, BATCH_LENGTH_EMBED)
    y = Norm(cfg, name="pre_mlp_layer_norm")(x)
    y = MLP(cfg, self.sharding, name="mlp")(y, deterministic=self.deterministic)
    x = constrain(x + residual_dropout(y, deterministic=self.deterministic), self.sharding, BATCH_LENGTH_EMBED)
    return x, None


class DecoderLayer(nn.Module):
  """A decoder layer; without `encoded` (a prefix LM) it has no cross-attention."""

  config: ModelConfig
  sharding: Optional[ActivationSharding] = None
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, x: Array, encoded: Optional[Array], bias: Optional[Array],
               positions: tuple[Array, Array], self_mask: AttentionMask,
               cross_mask: Optional[AttentionMask], decode_position: Optional[Array]) -> tuple[Array, None]:
    """positions: the (1, q) query and (1, k) key positions of the self-attention."""
    cfg = self.config
    residual_dropout = dropout(cfg)
    det = self.deterministic
    if cfg.position_scheme == "relative_per_layer":
      bias = RelativePositionBias(cfg, bidirectional=False, name="relpos_bias")(*positions)
    y = Norm(cfg, name="pre_self_attention_layer_norm")(x)
    y = Attention(cfg, self.sharding, kind="self", name="self_attention")(
        y, y, bias, self_mask, deterministic=det, decode=self.decode, decode_position=decode_position)
    x = constrain(x + residual_dropout(y, deterministic=det), self.sharding, BATCH_LENGTH_EMBED)
    if encoded is not None:
      y = Norm(cfg, name="pre_cross_attention_layer_norm")(x)
      y = Attention(cfg, self.sharding, kind="cross", name="encoder_decoder_attention")(
          y, encoded, None, cross_mask, deterministic=det, decode=self.decode)
      x = constrain(x + residual_dropout(y, deterministic=det), self.sharding, BATCH_LENGTH_EMBED)
    y = Norm(cfg, name="pre_mlp_layer_norm")(x)
    y = MLP(cfg, self.sharding, name="mlp")(y, deterministic=det)
    x = constrain(x + residual_dropout(y, deterministic=det), self.sharding, BATCH_LENGTH_EMBED)
    return x, None


# What each remat policy keeps for the backward pass, by the checkpoint_name tags above;
# the rest of a layer is recomputed from its input. From most kept to least:
_SAVED_ACTIVATIONS = {
    # Everything tagged: no matmul recomputed, only the elementwise work between the tagged
    # tensors. Without this autodiff would keep every residual it makes, float32 norm
    # intermediates included (a scan stacks them over the layers: 97 instead of 40 GiB
    # for T5.1.1-base at batch 128 on an H100; 60 unrolled).
    "none": ("norm", "attention_qkv", "attention_weights", "attention_mix", "attention_out",
             "mlp_up", "mlp_hidden", "mlp_out"),
    # Every matmul output and the attention weights: only elementwise work (norms,
    # activation functions) is recomputed.
    "minimal": ("attention_qkv", "attention_weights", "attention_mix", "attention_out",
                "mlp_up", "mlp_out"),
    # Matmul outputs: the attention weights are recomputed (their query-key matmul included).
    "dots": ("attention_qkv", "attention_mix", "attention_out", "mlp_up", "mlp_out"),
    # The weight matmuls' outputs: all of attention is recomputed.
    "dots_no_batch": ("attention_qkv", "attention_out", "mlp_up", "mlp_out"),
    # The layer input only: the whole layer is recomputed.
    "full": (),
}


# Least recomputation first: each keeps less than the one before it.
REMAT_POLICIES = tuple(_SAVED_ACTIVATIONS)


def _fused_attention_outputs(primitive, *_, **__) -> bool:
  """cuDNN attention's forward outputs (its result and softmax statistics: what its backward
  needs), the fused path's counterpart of the tagged attention mix; unnamed, they would be
  recomputed by running the forward kernel again in the backward pass."""
  return primitive.name.startswith("dot_product_attention_fwd")


def remat_policy(name: str) -> Callable:
  """The jax.checkpoint policy of model.remat_policy `name`."""
  saved = _SAVED_ACTIVATIONS[name]
  policy = jax.checkpoint_policies.save_only_these_names(*saved)
  if "attention_mix" in saved:
    policy = jax.checkpoint_policies.save_from_both_policies(policy, _fused_attention_outputs)
  return policy


def _stack(layer_cls: type, config: ModelConfig, num_layers: int, num_args: int, cache_axis: int):
  """Wraps a layer class with rematerialisation and, optionally, nn.scan. remat_policy
  'compiler' leaves the layers to XLA: jax.checkpoint's regions would keep the TPU
  compiler from rematerialising what does not fit (T5.1.1-base at batch 256 on a v5e:2x2
  then fits with 13.4 GiB per chip, as T5X's network does with 13.1, where 'none' needs 20.8)."""
  if config.remat_policy != "compiler":
    layer_cls = nn.remat(layer_cls, policy=remat_policy(config.remat_policy),
                         prevent_cse=not config.scan_layers)
  if config.scan_layers:
    layer_cls = nn.scan(
        layer_cls,
        variable_axes={"params": 0, "cache": cache_axis},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * num_args,
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"})
  return layer_cls


def _positions(length: int) -> Array:
  """(1, length) indices: the positions of the relative-position bias, shared by all rows."""
  return jnp.arange(length, dtype=jnp.int32)[None]


class Encoder(nn.Module):
  config: ModelConfig
  sharding: Optional[ActivationSharding] = None

  @nn.compact
  def __call__(self, embedded: Array, mask: AttentionMask, *, deterministic: bool) -> Array:
    cfg = self.config
    bias = None
    positions = _positions(embedded.shape[1])
    if cfg.position_scheme == "relative":
      bias = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(positions, positions)
    x = dropout(cfg)(embedded, deterministic=deterministic)
    x = constrain(x, self.sharding, BATCH_LENGTH_EMBED)
    layer = _stack(EncoderLayer, cfg, cfg.num_encoder_layers, num_args=3, cache_axis=1)
    if cfg.scan_layers:
      x, _ = layer(cfg, self.sharding, deterministic, name="layers")(x, bias, positions, mask)
    else:
      for i in range(cfg.num_encoder_layers):
        x, _ = layer(cfg, self.sharding, deterministic, name=f"layers_{i}")(x, bias, positions, mask)
    x = Norm(cfg, name="encoder_norm")(x)
    return dropout(cfg)(x, deterministic=deterministic)


class Decoder(nn.Module):
  """T5's decoder, or with encoded=None a prefix LM's one stack (model.architecture=decoder_only)."""

  config: ModelConfig
  sharding: Optional[ActivationSharding] = None

  @nn.compact
  def __call__(self, embedded: Array, encoded: Optional[Array], encoder_segment_ids: Optional[Array],
               segment_ids: Optional[Array], *, deterministic: bool, decode: bool = False,
               prefix: Optional[Array] = None) -> Array:
    """segment_ids (b, l) for packed rows (then encoder_segment_ids are packed too), else None.

    Without `encoded` (a prefix LM) segment_ids are always given and prefix (b, l) marks the
    keys every query of their segment sees (`prefix_lm_row`); decoding, segment_ids mark the
    fed tokens that are not padding, and each call sees every key written so far: the whole
    prefix at once on the first step, one token per step after it.
    """
    cfg = self.config
    length = embedded.shape[1]
    prefix_lm = encoded is None
    decode_position = None
    if decode:
      # The first (initialising) call passes the full length, which fixes the cache's size;
      # then one token per call (a prefix LM's first step: its whole prefix).
      is_initialized = self.has_variable("cache", "position")
      position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
      cache_positions = self.variable("cache", "key_positions", _positions, length)
      if prefix_lm:
        # (b, max_length): 0 for the prefix's left padding and for entries not written yet.
        cache_segment_ids = self.variable("cache", "key_segment_ids", jnp.zeros_like, segment_ids)
      if is_initialized:
        decode_position = position.value
        key_positions = cache_positions.value  # (1, max_length)
        query_positions = decode_position + _positions(length)  # (1, q)
        if prefix_lm:
          cache_segment_ids.value = jax.lax.dynamic_update_slice(
              cache_segment_ids.value, segment_ids, (0, decode_position))
          self_mask = AttentionMask(cache_segment_ids.value, segment_ids)
        else:
          # The cache is a sequence whose first decode_position + 1 entries are filled.
          self_mask = AttentionMask((key_positions <= decode_position).astype(jnp.int32))
        position.value = decode_position + length
      else:
        query_positions = key_positions = cache_positions.value
        self_mask = AttentionMask(causal=True)
    else:
      query_positions = key_positions = _positions(length)
      self_mask = AttentionMask(segment_ids, segment_ids, causal=True, prefix_keys=prefix)
    cross_mask = None if prefix_lm else AttentionMask(encoder_segment_ids, segment_ids)
    bias = None
    if cfg.position_scheme == "relative":
      bias = RelativePositionBias(cfg, bidirectional=False, name="relpos_bias")(
          query_positions, key_positions)
    x = dropout(cfg)(embedded, deterministic=deterministic)
    x = constrain(x, self.sharding, BATCH_LENGTH_EMBED)
    layer = _stack(DecoderLayer, cfg, cfg.num_decoder_layers, num_args=6, cache_axis=1)
    args = (encoded, bias, (query_positions, key_positions), self_mask, cross_mask, decode_position)
    if cfg.scan_layers:
      x, _ = layer(cfg, self.sharding, deterministic, decode, name="layers")(x, *args)
    else:
      for i in range(cfg.num_decoder_layers):
        x, _ = layer(cfg, self.sharding, deterministic, decode, name=f"layers_{i}")(x, *args)
    x = Norm(cfg, name="decoder_norm")(x)
    return dropout(cfg)(x, deterministic=deterministic)


def project_logits(x: Array, kernel: Array, scale: float,
                   sharding: Optional[ActivationSharding] = None) -> Array:
  """(b, l, d) decoder output -> (b, l, v) float32 logits, with kernel (d, v) and scale from
  `Transformer.logits_kernel`. In float32 whatever the activation dtype, as T5X "for
  stability": a bfloat16 projection is off by up to 0.13 nats per token at |logits| of
  20-40 (train.loss_chunk_size keeps the float32 logits from existing all at once). A plain
  function, so the chunked loss can call it inside jax.checkpoint / lax.scan, where a bound
  module cannot go."""
  logits = jnp.einsum("bld,dv->blv", x.astype(jnp.float32), kernel.astype(jnp.float32))
  if scale != 1.0:
    logits = logits * scale
  return constrain(logits, sharding, BATCH_LENGTH_VOCAB)


def _unpacked_segment_ids(tokens: Array) -> Array:
  """(b, l) segment ids of unpacked rows: 1 for tokens, 0 for padding."""
  return (tokens > 0).astype(jnp.int32)


class PrefixLMRow(NamedTuple):
  """An encoder-decoder batch row laid out for a prefix LM (`prefix_lm_row`); l = l_in + l_tgt."""

  tokens: Array  # (b, l) the stack's input tokens
  segment_ids: Array  # (b, l) 0 for padding
  prefix: Array  # (b, l) bool: start tokens and inputs, attended bidirectionally
  target_index: Array  # (b, l_tgt) where the output predicting each decoder target is


def prefix_lm_row(encoder_input_tokens: Array, decoder_input_tokens: Array,
                  encoder_segment_ids: Optional[Array] = None,
                  decoder_segment_ids: Optional[Array] = None) -> PrefixLMRow:
  """Concatenates each segment's inputs and decoder inputs into T5X's prefix-LM row
  [0, x_1..x_n, y_1..y_m-1] = shift_right(inputs + targets): the decoder's start token first,
  then the inputs, then the rest of its decoder inputs; segments in order, padding last.

  On the device, so the batch format (packing, the pipeline, losses, scoring) stays the
  encoder-decoder's. Each segment is contiguous, so index distances are position distances.
  Target 0 of a segment is predicted where its last input is (start + n); target k >= 1 where
  decoder input k landed. Unpacked rows (no segment ids): inputs where tokens > 0, targets all
  segment 1 (their padding comes after them, so causal attention keeps it out).
  """
  b, inputs_length = encoder_input_tokens.shape
  length = inputs_length + decoder_input_tokens.shape[1]
  if encoder_segment_ids is None:
    encoder_segment_ids = _unpacked_segment_ids(encoder_input_tokens)
    decoder_segment_ids = jnp.ones_like(decoder_input_tokens)
  # A segment's first decoder input: its start token.
  starts = jnp.concatenate([jnp.ones((b, 1), bool),
                            decoder_segment_ids[:, 1:] != decoder_segment_ids[:, :-1]], axis=1)
  starts = starts & (decoder_segment_ids > 0)  # (b, l_tgt)
  segment_ids = jnp.concatenate([encoder_segment_ids, decoder_segment_ids], axis=1)  # (b, l)
  part = jnp.concatenate([jnp.ones_like(encoder_segment_ids),  # start 0, inputs 1, rest 2
                          jnp.where(starts, 0, 2)], axis=1)
  segment_rank = jnp.where(segment_ids > 0, segment_ids, length + 1)  # padding last
  # Sort keys (segment, part, column) below 3 * (l + 2) * l: int32 up to l of about 26,000.
  order = jnp.argsort((segment_rank * 3 + part) * length + jnp.arange(length), axis=1)  # (b, l)
  landed = jnp.argsort(order, axis=1)[:, inputs_length:]  # (b, l_tgt): each decoder input's index

  def arrange(x):
    return jnp.take_along_axis(x, order, axis=1)

  # Inputs of each decoder input's segment: (b, l_tgt, l_in) -> (b, l_tgt).
  same_segment = encoder_segment_ids[:, None, :] == decoder_segment_ids[:, :, None]
  num_inputs = jnp.sum(same_segment & (decoder_segment_ids[:, :, None] > 0), axis=-1)
  return PrefixLMRow(
      tokens=arrange(jnp.concatenate([encoder_input_tokens, decoder_input_tokens], axis=1)),
      segment_ids=arrange(segment_ids),
      prefix=arrange(jnp.concatenate([encoder_segment_ids > 0, starts], axis=1)),
      target_index=landed + jnp.where(starts, num_inputs, 0).astype(landed.dtype))


class Transformer(nn.Module):
  """T5 encoder-decoder, or its decoder-only prefix LM (model.architecture). `__call__` gives
  logits (b, l_targets, vocab), or with return_hidden=True the decoder output
  (b, l_targets, d) they are projected from, for either."""

  config: ModelConfig
  sharding: Optional[ActivationSharding] = None

  def setup(self):
    cfg = self.config
    self.token_embedder = Embed(cfg)
    if cfg.architecture == "encoder_decoder":
      self.encoder = Encoder(cfg, self.sharding)
    self.decoder = Decoder(cfg, self.sharding)
    if not cfg.tie_logits:
      self.logits_dense = self.param(
          "logits_dense", nn.with_logical_partitioning(_kernel_init(0, 1), ("embed", "vocab")),
          (cfg.d_model, cfg.vocab_size), jnp.dtype(cfg.param_dtype))

  def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Optional[Array] = None, *,
             deterministic: bool = True) -> Array:
    """(b, l_in) tokens -> (b, l_in, d) encodings."""
    if encoder_segment_ids is None:
      mask = AttentionMask(_unpacked_segment_ids(encoder_input_tokens))
    else:
      mask = AttentionMask(encoder_segment_ids, encoder_segment_ids)
    embedded = self.token_embedder(encoder_input_tokens)
    return self.encoder(embedded, mask, deterministic=deterministic)

  def decode(self, encoded: Array, encoder_input_tokens: Array, decoder_input_tokens: Array,
             encoder_segment_ids: Optional[Array] = None, decoder_segment_ids: Optional[Array] = None,
             *, deterministic: bool = True, decode: bool = False, return_hidden: bool = False) -> Array:
    """Decoder logits (b, l_tgt, v), or the decoder output (b, l_tgt, d) with
    return_hidden=True. With decode=True, one step with a cache."""
    if encoder_segment_ids is None:
      encoder_segment_ids = _unpacked_segment_ids(encoder_input_tokens)
    embedded = self.token_embedder(decoder_input_tokens)
    x = self.decoder(embedded, encoded, encoder_segment_ids, decoder_segment_ids,
                     deterministic=deterministic, decode=decode)
    if return_hidden:
      return x
    return project_logits(x, *self.logits_kernel(), self.sharding)

  def logits_kernel(self) -> tuple[Array, float]:
    """(kernel (d, v), scale) of the output projection: the transposed embedding scaled
    by d_model**-0.5 when tied (T5.1.0), else logits_dense."""
    if self.config.tie_logits:
      return self.token_embedder.embedding.T, self.config.d_model ** -0.5
    return self.logits_dense, 1.0

  def prefix_lm(self, tokens: Array, segment_ids: Array, prefix: Optional[Array] = None, *,
                deterministic: bool = True, decode: bool = False) -> Array:
    """A decoder-only model's stack: (b, l) tokens -> (b, l, d) outputs; the arguments are
    `prefix_lm_row`'s, or with decode=True what `Decoder` says."""
    embedded = self.token_embedder(tokens)
    return self.decoder(embedded, None, None, segment_ids, deterministic=deterministic,
                        decode=decode, prefix=prefix)

  def prefix_lm_next_logits(self, tokens: Array, segment_ids: Array) -> Array:
    """Decoding a prefix LM with the cache: feeds (b, q) tokens and returns the float32
    logits (b, v) of the token after the last."""
    x = self.prefix_lm(tokens, segment_ids, decode=True)
    return project_logits(x[:, -1:], *self.logits_kernel(), self.sharding)[:, 0]

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               encoder_segment_ids: Optional[Array] = None, decoder_segment_ids: Optional[Array] = None,
               *, deterministic: bool = True, return_hidden: bool = False) -> Array:
    """Packed rows need only segment ids: positions restart with each segment, so index
    distances are position distances wherever attention is allowed. Without segment ids a
    row is one example with its padding (token 0) last, which fused attention takes as
    lengths rather than as a dense mask. A decoder-only model runs on the same batch
    (`prefix_lm_row`) and gives the same layout."""
    if self.config.architecture == "decoder_only":
      row = prefix_lm_row(encoder_input_tokens, decoder_input_tokens, encoder_segment_ids,
                          decoder_segment_ids)
      x = self.prefix_lm(row.tokens, row.segment_ids, row.prefix, deterministic=deterministic)
      x = jnp.take_along_axis(x, row.target_index[:, :, None], axis=1)  # (b, l_tgt, d)
      x = constrain(x, self.sharding, BATCH_LENGTH_EMBED)
      return x if return_hidden else project_logits(x, *self.logits_kernel(), self.sharding)
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids, deterministic=deterministic)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens, encoder_segment_ids,
                       decoder_segment_ids, deterministic=deterministic, return_hidden=return_hidden)


# ----------------------------------------------------------------------------
# Parameters without allocation
# ----------------------------------------------------------------------------


def _dummy_batch(batch_size: int = 1, inputs_length: int = 8, targets_length: int = 8) -> dict[str, Any]:
  return {
      "encoder_input_tokens": jnp.ones((batch_size, inputs_length), jnp.int32),
      "decoder_input_tokens": jnp.ones((batch_size, targets_length), jnp.int32),
  }


def init_variables(model: Transformer, rng: Array) -> Any:
  """Boxed variables (nn.LogicallyPartitioned leaves); use under jax.eval_shape."""
  return model.init(rng, **_dummy_batch())


def abstract_params(config: ModelConfig) -> tuple[Any, Any]:
  """(ShapeDtypeStruct params, logical PartitionSpecs) without allocating anything."""
  model = Transformer(config)
  boxed = jax.eval_shape(functools.partial(init_variables, model), jax.random.key(0))
  specs = nn.get_partition_spec(boxed)["params"]
  return nn.meta.unbox(boxed)["params"], specs


def init_params(config: ModelConfig, rng: Array) -> Any:
  """Plain (unboxed) parameter pytree, allocated on the default device. Jitted: run eagerly,
  every initialiser op compiles on its own (11 s for a 2-layer model on a CPU, 6.5 s jitted)."""
  return jax.jit(lambda key: nn.meta.unbox(init_variables(Transformer(config), key))["params"])(rng)


def count_params(config: ModelConfig) -> int:
  # Counted on the scanned form: the same parameters, one layer per stack to trace.
  params, _ = abstract_params(dataclasses.replace(config, scan_layers=True, remat_policy="none"))
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
