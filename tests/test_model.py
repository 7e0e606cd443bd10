"""The T5 model: shapes, masking, packing, position buckets, parameter counts, and the
decoder output + logits kernel that the chunked loss projects."""

import functools
import itertools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_batch, relative_difference, tiny_model
from jax.sharding import PartitionSpec

from t5x_lite import config as config_lib
from t5x_lite import model as model_lib

# Exact T5.1.1 parameter counts from docs/reference.md (vocabulary 32128), and the
# public T5.1.0 (t5-small, t5-base) counts.
REFERENCE_COUNTS = {
    "t5_1_1_small": 76_961_152,
    "t5_1_1_base": 247_577_856,
    "t5_1_1_large": 783_150_080,
    "t5_1_1_xl": 2_849_757_184,
    "t5_1_0_small": 60_506_624,
    "t5_1_0_base": 222_903_552,
}


@pytest.mark.parametrize("preset", sorted(REFERENCE_COUNTS))
def test_parameter_counts_match_reference(preset):
  assert model_lib.count_params(config_lib.MODEL_PRESETS[preset]()) == REFERENCE_COUNTS[preset]


def test_xxl_is_about_eleven_billion():
  count = model_lib.count_params(config_lib.t5_1_1("xxl"))
  assert 11.0e9 < count < 11.2e9


# The decoder-only prefix LM (model.architecture), as tiny_model changes.
DECODER_ONLY = {"architecture": "decoder_only", "num_encoder_layers": 0, "num_decoder_layers": 3}
ARCHITECTURES = {"encoder_decoder": {}, "decoder_only": DECODER_ONLY}


def _apply(cfg, params, batch, deterministic=True, rngs=None, return_hidden=False):
  """Jitted forward pass (eager dispatch of every op is far slower on the CPU)."""
  keys = ("encoder_input_tokens", "decoder_input_tokens", "encoder_segment_ids",
          "decoder_segment_ids")
  args = [batch.get(key) for key in keys]

  @jax.jit
  def forward(params, args, rngs):
    return model_lib.Transformer(cfg).apply({"params": params}, *args, deterministic=deterministic,
                                            rngs=rngs, return_hidden=return_hidden)
  return forward(params, args, rngs)


def _apply_plain(cfg, params, encoder_input_tokens, decoder_input_tokens):
  return _apply(cfg, params, {"encoder_input_tokens": encoder_input_tokens,
                              "decoder_input_tokens": decoder_input_tokens})


def test_shapes_and_dtypes():
  cfg = tiny_model(dtype="bfloat16")
  params = model_lib.init_params(cfg, jax.random.key(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  batch = random_batch(np.random.default_rng(0), 3, 16, 8, cfg.vocab_size)
  logits = _apply(cfg, params, batch)
  assert logits.shape == (3, 8, cfg.vocab_size)
  assert logits.dtype == jnp.float32  # The output projection is float32 in any dtype (T5X).
  hidden = _apply(cfg, params, batch, return_hidden=True)
  assert hidden.dtype == jnp.bfloat16


def test_every_parameter_has_logical_axes():
  for cfg in (tiny_model(), tiny_model(scan_layers=True), tiny_model(tie_logits=True, norm="layernorm")):
    params, specs = model_lib.abstract_params(cfg)
    flat_params = jax.tree.leaves(params)
    flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    assert len(flat_params) == len(flat_specs)
    for param, spec in zip(flat_params, flat_specs):
      assert isinstance(spec, PartitionSpec) and len(spec) == param.ndim
      assert all(isinstance(name, str) for name in spec)
    if cfg.scan_layers:
      assert specs["encoder"]["layers"]["mlp"]["wi_0"] == PartitionSpec("layers", "embed", "mlp")


def test_decoder_is_causal():
  cfg = tiny_model()
  params = model_lib.init_params(cfg, jax.random.key(1))
  rng = np.random.default_rng(1)
  enc = rng.integers(2, cfg.vocab_size, (2, 12))
  dec = rng.integers(2, cfg.vocab_size, (2, 10))
  logits = _apply_plain(cfg, params, enc, dec)
  changed = dec.copy()
  changed[:, 6:] = rng.integers(2, cfg.vocab_size, (2, 4))
  logits_changed = _apply_plain(cfg, params, enc, changed)
  np.testing.assert_allclose(logits[:, :6], logits_changed[:, :6], rtol=1e-6, atol=1e-6)
  assert not np.allclose(logits[:, 6:], logits_changed[:, 6:])


@pytest.mark.parametrize("scan, architecture", [
    (False, "encoder_decoder"), (True, "encoder_decoder"), (False, "decoder_only")])
def test_packed_row_equals_examples_alone(scan, architecture):
  cfg = tiny_model(scan_layers=scan, **ARCHITECTURES[architecture])
  params = model_lib.init_params(cfg, jax.random.key(2))
  batch = random_batch(np.random.default_rng(2), 1, 24, 12, cfg.vocab_size, segments=3)
  packed = np.asarray(_apply(cfg, params, batch))[0]
  for segment in (1, 2, 3):
    enc = batch["encoder_input_tokens"][0][batch["encoder_segment_ids"][0] == segment]
    dec_mask = batch["decoder_segment_ids"][0] == segment
    dec = batch["decoder_input_tokens"][0][dec_mask]
    alone = np.asarray(_apply_plain(cfg, params, enc[None], dec[None]))[0]
    np.testing.assert_allclose(packed[dec_mask], alone, rtol=1e-5, atol=1e-5)


def test_padding_does_not_change_logits():
  cfg = tiny_model()
  params = model_lib.init_params(cfg, jax.random.key(3))
  rng = np.random.default_rng(3)
  enc = rng.integers(2, cfg.vocab_size, (1, 9))
  dec = rng.integers(2, cfg.vocab_size, (1, 5))
  plain = _apply_plain(cfg, params, enc, dec)
  padded = _apply_plain(cfg, params, np.pad(enc, ((0, 0), (0, 7))), np.pad(dec, ((0, 0), (0, 3))))
  np.testing.assert_allclose(plain, padded[:, :5], rtol=1e-5, atol=1e-5)


# Hand-computed from T5's definition: num_buckets=32, max_distance=128.
# Bidirectional: 16 buckets per direction, exact below 8, keys after the query +16.
BIDIRECTIONAL = {0: 0, -1: 1, -7: 7, -8: 8, -12: 9, -16: 10, -32: 12, -64: 14, -127: 15, -128: 15,
                 -1000: 15, 1: 17, 7: 23, 8: 24, 16: 26, 200: 31}
# Causal: 32 buckets, exact below 16, keys after the query share bucket 0.
CAUSAL = {5: 0, 1: 0, 0: 0, -1: 1, -15: 15, -16: 16, -32: 21, -64: 26, -127: 31, -128: 31, -500: 31}


@pytest.mark.parametrize("bidirectional,table", [(True, BIDIRECTIONAL), (False, CAUSAL)])
def test_relative_position_buckets(bidirectional, table):
  relative = np.array(list(table), np.int32)
  buckets = model_lib.relative_position_bucket(relative, bidirectional=bidirectional)
  np.testing.assert_array_equal(np.asarray(buckets), np.array(list(table.values())))


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_scan_matches_unrolled_layers(architecture):
  cfg = tiny_model(**ARCHITECTURES[architecture])
  params = model_lib.init_params(cfg, jax.random.key(4))
  stacked = dict(params)
  for stack, n in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
    if not n:
      continue
    layers = [params[stack][f"layers_{i}"] for i in range(n)]
    stacked[stack] = {k: v for k, v in params[stack].items() if not k.startswith("layers_")}
    stacked[stack]["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  batch = random_batch(np.random.default_rng(4), 2, 16, 8, cfg.vocab_size)
  unrolled = _apply(cfg, params, batch)
  cfg_scan = tiny_model(scan_layers=True, **ARCHITECTURES[architecture])
  scanned = _apply(cfg_scan, stacked, batch)
  np.testing.assert_allclose(unrolled, scanned, rtol=1e-5, atol=1e-5)


def _remat_loss(cfg, batch):
  def loss(params):
    logits = model_lib.Transformer(cfg).apply({"params": params}, batch["encoder_input_tokens"],
                                              batch["decoder_input_tokens"])
    return jnp.mean(logits ** 2)
  return loss


@functools.lru_cache(maxsize=None)
def _params_batch_and_grads(changes: tuple) -> tuple:
  """Parameters, a batch and the gradient without remat: one for every policy compared."""
  cfg = tiny_model(**dict(changes))
  params = model_lib.init_params(cfg, jax.random.key(5))
  batch = random_batch(np.random.default_rng(5), 2, 16, 8, cfg.vocab_size)
  return params, batch, jax.jit(jax.grad(_remat_loss(cfg, batch)))(params)


@pytest.mark.parametrize("policy, changes", [
    ("full", {}), ("dots", {}), ("dots_no_batch", {}), ("minimal", {}), ("compiler", {}),
    ("minimal", {"norm": "layernorm", "ffn_activation": "relu", "scan_layers": True}),
    ("dots", {"scan_layers": True, **DECODER_ONLY}),
])
def test_remat_keeps_values_and_gradients(policy, changes):
  params, batch, grads = _params_batch_and_grads(tuple(sorted(changes.items())))
  cfg = tiny_model(remat_policy=policy, **changes)
  remat_grads = jax.jit(jax.grad(_remat_loss(cfg, batch)))(params)
  assert relative_difference(jax.tree.leaves(remat_grads)[0], jax.tree.leaves(grads)[0]) < 1e-5
  for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_remat_policies_keep_less_in_order_and_scan_keeps_only_the_named():
  """XLA's accounting of the compiled gradient in bfloat16: each policy from none to full
  keeps less than the one before it (scanned, where XLA adds nothing of its own), minimal
  no more than none unrolled, and a scanned stack under none keeps far less than one
  without remat, whose every autodiff residual (float32 norm intermediates included) the
  scan would stack over the layers."""
  batch = random_batch(np.random.default_rng(14), 16, 64, 16, 128)

  def scratch_bytes(policy, scan):
    # Built without validation: a scanned stack without remat ("compiler") is refused there.
    cfg = tiny_model(remat_policy=policy, scan_layers=scan, dtype="bfloat16", num_encoder_layers=2,
                     num_decoder_layers=2)
    params = jax.eval_shape(lambda: model_lib.init_params(cfg, jax.random.key(14)))
    compiled = jax.jit(jax.grad(_remat_loss(cfg, batch))).lower(params).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  policies = ("none", "minimal", "dots", "dots_no_batch", "full")
  scanned = [scratch_bytes(policy, True) for policy in policies]
  assert all(later < 0.98 * earlier for earlier, later in itertools.pairwise(scanned)), scanned
  assert scanned[-1] < 0.5 * scanned[0], scanned  # full keeps only the layers' inputs
  assert scanned[0] < 0.8 * scratch_bytes("compiler", True), scanned
  unrolled = {policy: scratch_bytes(policy, False) for policy in ("none", "minimal")}
  assert unrolled["minimal"] < 1.05 * unrolled["none"], unrolled


_NEEDS_GPU = pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")


@pytest.mark.parametrize("impl, packed, architecture", [
    ("auto", True, "encoder_decoder"), ("auto", False, "encoder_decoder"),
    *(pytest.param("cudnn", packed, architecture, marks=_NEEDS_GPU)
      for packed in (True, False) for architecture in ARCHITECTURES),
])
def test_fused_attention_path_matches_reference(impl, packed, architecture):
  """attention_impl='auto' (jax.nn.dot_product_attention: XLA here, cuDNN on GPU) and
  'cudnn' compute the same function and gradients as the einsum reference with the
  relative-position bias, whose gradient must survive the fused kernel (cuDNN returns a
  bias gradient only in some layouts): on packed rows (segment masks) and on unpacked rows
  (lengths and a causal flag), including a row of padding alone, whose outputs nothing
  reads. A decoder-only model's mask reaches them dense, as packed rows' do."""
  cfg = tiny_model(dtype="bfloat16", **ARCHITECTURES[architecture])
  params = model_lib.init_params(cfg, jax.random.key(6))
  batch = random_batch(np.random.default_rng(6), 3, 16, 8, cfg.vocab_size, segments=2 if packed else 1)
  keys = ("encoder_input_tokens", "decoder_input_tokens", "encoder_segment_ids",
          "decoder_segment_ids")
  args = [batch[key] for key in keys] if packed else [batch[key] for key in keys[:2]]
  if not packed:
    args[0][2] = 0  # A filler row, as the last partial batch of an evaluation has.
  live_rows = np.array([1.0, 1.0, 0.0 if not packed else 1.0])[:, None, None]
  cotangent = jax.random.normal(jax.random.key(60), (3, 8, cfg.vocab_size)) * live_rows

  def logits_and_grads(cfg):
    def score(params):
      logits = model_lib.Transformer(cfg).apply({"params": params}, *args)
      return jnp.sum(logits.astype(jnp.float32) * cotangent), logits
    return jax.jit(jax.grad(score, has_aux=True))(params)

  reference_grads, reference = logits_and_grads(cfg)
  grads, fused = logits_and_grads(
      tiny_model(dtype="bfloat16", attention_impl=impl, **ARCHITECTURES[architecture]))
  assert bool(jnp.all(jnp.isfinite(fused)))
  assert relative_difference(fused * live_rows, reference * live_rows) < 2e-2
  flat_reference = flax.traverse_util.flatten_dict(reference_grads, sep="/")
  for name, grad in flax.traverse_util.flatten_dict(grads, sep="/").items():
    assert relative_difference(grad, flat_reference[name]) < 5e-2, name


def test_attention_mask_forms():
  """The dense mask each form stands for, and the lengths the fused path is given."""
  segments = jnp.array([[1, 1, 2, 0], [1, 1, 1, 1]])
  packed = model_lib.AttentionMask(segments, segments, causal=True).dense(4, 4)
  assert packed.shape == (2, 1, 4, 4)
  np.testing.assert_array_equal(packed[0, 0], [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(packed[1, 0], np.tril(np.ones((4, 4))))

  padded = jnp.array([[1, 1, 1, 0], [0, 0, 0, 0]])
  unpacked = model_lib.AttentionMask(padded)
  assert not unpacked.packed and unpacked.dense(3, 4).shape == (2, 1, 1, 4)
  np.testing.assert_array_equal(unpacked.dense(3, 4)[:, 0, 0], padded > 0)
  np.testing.assert_array_equal(unpacked.key_lengths(2), [3, 1])  # never 0: no 0/0 in softmax
  np.testing.assert_array_equal(model_lib.AttentionMask(padded[:1]).key_lengths(4), [3] * 4)

  causal = model_lib.AttentionMask(causal=True)
  np.testing.assert_array_equal(causal.dense(3, 3)[0, 0], np.tril(np.ones((3, 3))))
  assert causal.key_lengths(2) is None and model_lib.AttentionMask().dense(3, 3) is None


# Each switch once, two to a model where they can share one (each model is a compile:
# seconds on the CPU).
@pytest.mark.parametrize("changes", [
    {"ffn_activation": "relu", "tie_logits": True}, {"ffn_activation": "gelu", "norm": "layernorm"},
    {"ffn_activation": "swiglu", "position_scheme": "none"},
    {"ffn_activation": "gated-relu", "position_scheme": "relative_per_layer"},
    {"num_heads": 2, "d_kv": 16, "num_encoder_layers": 3},
])
def test_architecture_switches(changes):
  cfg = tiny_model(**changes)
  params = model_lib.init_params(cfg, jax.random.key(7))
  batch = random_batch(np.random.default_rng(7), 2, 16, 8, cfg.vocab_size)
  logits = _apply(cfg, params, batch)
  assert logits.shape == (2, 8, cfg.vocab_size) and bool(jnp.all(jnp.isfinite(logits)))
  mlp = params["encoder"]["layers_0"]["mlp"]
  if changes.get("ffn_activation") in ("relu", "gelu"):
    assert "wi" in mlp and "wi_1" not in mlp
  if changes.get("ffn_activation") in ("swiglu", "gated-relu"):
    assert {"wi_0", "wi_1", "wo"} == set(mlp)
  if changes.get("tie_logits"):
    assert "logits_dense" not in params
  if changes.get("norm") == "layernorm":
    assert set(params["encoder"]["encoder_norm"]) == {"scale", "bias"}
  if changes.get("position_scheme") == "none":
    assert not [path for path in flax.traverse_util.flatten_dict(params) if "relpos_bias" in path]
  if changes.get("position_scheme") == "relative_per_layer":
    assert "relpos_bias" not in params["encoder"] and "relpos_bias" not in params["decoder"]
    assert "relpos_bias" in params["encoder"]["layers_1"] and "relpos_bias" in params["decoder"]["layers_0"]


def test_dropout_needs_rng_and_changes_outputs():
  cfg = tiny_model(dropout_rate=0.3)
  params = model_lib.init_params(cfg, jax.random.key(8))
  batch = random_batch(np.random.default_rng(8), 2, 16, 8, cfg.vocab_size)
  deterministic = _apply(cfg, params, batch)
  noisy = _apply(cfg, params, batch, deterministic=False, rngs={"dropout": jax.random.key(0)})
  again = _apply(cfg, params, batch, deterministic=False, rngs={"dropout": jax.random.key(0)})
  assert not np.allclose(deterministic, noisy)
  np.testing.assert_array_equal(noisy, again)


def test_attention_dropout_drops_weights_and_takes_the_einsum_path():
  """Dropout hits the softmax weights, as in T5X, so the fused kernel (which cannot drop
  them) steps aside: 'auto' with dropout computes exactly what 'xla' does."""
  rng = np.random.default_rng(12)
  query, key, value = (jnp.asarray(rng.normal(size=(2, 5, 3, 4)), jnp.float32) for _ in range(3))
  keep = jnp.asarray(rng.random((2, 3, 1, 5)) < 0.7, jnp.float32)  # shared by the queries
  got = model_lib.dot_product_attention(query, key, value, None, model_lib.AttentionMask(), impl="auto",
                                        weights_dropout=lambda weights: weights * keep)
  weights = jax.nn.softmax(np.einsum("bqhk,bshk->bhqs", query, key), axis=-1) * keep
  np.testing.assert_allclose(got, np.einsum("bhqs,bshk->bqhk", weights, value), rtol=1e-5, atol=1e-6)

  batch = random_batch(np.random.default_rng(12), 2, 16, 8, 128)
  params = model_lib.init_params(tiny_model(dropout_rate=0.3), jax.random.key(12))
  noisy = {impl: _apply(tiny_model(dropout_rate=0.3, attention_impl=impl), params, batch,
                        deterministic=False, rngs={"dropout": jax.random.key(1)})
           for impl in ("xla", "auto")}
  np.testing.assert_array_equal(noisy["auto"], noisy["xla"])


@pytest.mark.parametrize("tie_logits", [False, True])
def test_hidden_and_logits_kernel_give_the_logits(tie_logits):
  cfg = tiny_model(tie_logits=tie_logits)
  params = model_lib.init_params(cfg, jax.random.key(9))
  batch = random_batch(np.random.default_rng(9), 2, 16, 8, cfg.vocab_size)
  hidden = _apply(cfg, params, batch, return_hidden=True)
  kernel, scale = model_lib.Transformer(cfg).apply({"params": params},
                                                   method=model_lib.Transformer.logits_kernel)
  assert hidden.shape == (2, 8, cfg.d_model) and kernel.shape == (cfg.d_model, cfg.vocab_size)
  np.testing.assert_allclose(model_lib.project_logits(hidden, kernel, scale), _apply(cfg, params, batch),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_attention_weights_gradient_matches_autodiff(dtype):
  """The attention weights' own backward pass (it keeps only the weights, in the activation
  dtype) gives autodiff's gradients of the float32 softmax: exactly in float32, to bfloat16
  rounding in bfloat16; the bias's gradient is reduced over the batch in float32."""
  rng = np.random.default_rng(21)
  query, key = (jnp.asarray(rng.normal(size=(3, 5, 2, 4)), dtype) for _ in range(2))
  bias = jnp.asarray(rng.normal(size=(1, 2, 5, 5)), jnp.float32)
  mask = jnp.asarray(rng.random((3, 1, 5, 5)) < 0.8).at[:, :, :, 0].set(True)
  cotangent = jnp.asarray(rng.normal(size=(3, 2, 5, 5)), jnp.float32)

  def reference(query, key, bias):
    logits = jnp.einsum("bqhk,bshk->bhqs", query.astype(jnp.float32), key.astype(jnp.float32)) + bias
    return jax.nn.softmax(jnp.where(mask, logits, -1e10), axis=-1)

  def loss(fn):
    return lambda *args: jnp.sum(fn(*args).astype(jnp.float32) * cotangent)

  got = jax.jit(jax.grad(loss(lambda q, k, b: model_lib.attention_weights(q, k, b, mask)),
                         argnums=(0, 1, 2)))(query, key, bias)
  want = jax.jit(jax.grad(loss(reference), argnums=(0, 1, 2)))(query, key, bias)
  tolerance = 1e-6 if dtype == "float32" else 2e-2
  for name, g, w in zip(("query", "key", "bias"), got, want):
    assert g.dtype == (jnp.float32 if name == "bias" else jnp.dtype(dtype)), name
    assert relative_difference(g, w) < tolerance, name
  np.testing.assert_allclose(model_lib.attention_weights(query, key, bias, mask).astype(jnp.float32),
                             reference(query, key, bias), atol=1e-2 if dtype == "bfloat16" else 1e-6)


def test_logits_are_projected_in_float32_from_bfloat16_states():
  """T5X computes the logits in float32: a bfloat16 projection of states of size ~1 onto
  kernels giving |logits| of 20-40 errs by a tenth of a nat; the float32 one does not."""
  rng = np.random.default_rng(22)
  hidden = jnp.asarray(rng.normal(size=(2, 3, 512)), jnp.bfloat16)
  kernel = jnp.asarray(rng.normal(size=(512, 64)) * 1.3, jnp.float32)
  exact = np.asarray(hidden, np.float64) @ np.asarray(kernel, np.float64)
  logits = model_lib.project_logits(hidden, kernel, 1.0)
  assert logits.dtype == jnp.float32 and np.abs(exact).max() > 20
  assert np.abs(np.asarray(logits) - exact).max() < 1e-3
  in_bfloat16 = jnp.einsum("bld,dv->blv", hidden, kernel.astype(jnp.bfloat16))
  assert np.abs(np.asarray(in_bfloat16, np.float64) - exact).max() > 0.03


@pytest.mark.parametrize("shared", [True, False])
def test_dropout_masks_shared_along_the_length_as_t5x(shared):
  """T5X's dropout keeps one mask per (batch, feature) for all positions; the elementwise
  form (Hugging Face's) is the option."""
  cfg = tiny_model(dropout_rate=0.5, dropout_shared_over_length=shared)
  ones = jnp.ones((2, 16, 32))
  dropped = model_lib.dropout(cfg).apply({}, ones, deterministic=False,
                                         rngs={"dropout": jax.random.key(3)})
  same_along_length = bool(jnp.all(dropped == dropped[:, :1]))
  assert same_along_length == shared
  assert 0.3 < float(jnp.mean(dropped == 0)) < 0.7


def test_dropout_in_the_model_follows_the_mask_shape():
  """With shared masks the model's outputs differ from the elementwise form's under the
  same key, and each is reproducible."""
  batch = random_batch(np.random.default_rng(23), 2, 16, 8, 128)
  params = model_lib.init_params(tiny_model(dropout_rate=0.3), jax.random.key(23))
  outputs = {shared: _apply(tiny_model(dropout_rate=0.3, dropout_shared_over_length=shared), params,
                            batch, deterministic=False, rngs={"dropout": jax.random.key(4)})
             for shared in (True, False)}
  assert not np.allclose(outputs[True], outputs[False])


# ----------------------------------------------------------------------------
# Decoder-only (prefix LM)
# ----------------------------------------------------------------------------


def test_prefix_lm_row_of_unpacked_rows():
  """T5X's shift_right(inputs + targets) with the inputs' padding last; a row without
  inputs starts at its start token."""
  row = model_lib.prefix_lm_row(jnp.array([[5, 6, 7, 0], [0, 0, 0, 0]]),
                                jnp.array([[0, 8, 9], [0, 4, 0]]))
  np.testing.assert_array_equal(row.tokens, [[0, 5, 6, 7, 8, 9, 0], [0, 4, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(row.segment_ids, [[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(row.prefix, [[1, 1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]])
  # Target 0 comes from the last input (or the start token), target k from decoder input k.
  np.testing.assert_array_equal(row.target_index, [[3, 4, 5], [0, 1, 2]])


def test_prefix_lm_row_of_a_packed_row():
  """Each segment [0, inputs, rest of its decoder inputs], in order; padding of both last."""
  row = model_lib.prefix_lm_row(jnp.array([[5, 6, 7, 3, 0]]), jnp.array([[0, 8, 0, 9, 4, 0]]),
                                jnp.array([[1, 1, 2, 2, 0]]), jnp.array([[1, 1, 2, 2, 2, 0]]))
  np.testing.assert_array_equal(row.tokens, [[0, 5, 6, 8, 0, 7, 3, 9, 4, 0, 0]])
  np.testing.assert_array_equal(row.segment_ids, [[1, 1, 1, 1, 2, 2, 2, 2, 2, 0, 0]])
  np.testing.assert_array_equal(row.prefix, [[1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(row.target_index, [[2, 3, 6, 7, 8, 10]])


def test_prefix_lm_mask_is_bidirectional_over_the_prefix_and_causal_after_it():
  row = model_lib.prefix_lm_row(jnp.array([[5, 6, 3]]), jnp.array([[0, 8, 0, 9]]),
                                jnp.array([[1, 1, 2]]), jnp.array([[1, 1, 2, 2]]))
  np.testing.assert_array_equal(row.tokens, [[0, 5, 6, 8, 0, 3, 9]])
  mask = model_lib.AttentionMask(row.segment_ids, row.segment_ids, causal=True,
                                 prefix_keys=row.prefix).dense(7, 7)
  np.testing.assert_array_equal(mask[0, 0], [
      [1, 1, 1, 0, 0, 0, 0],
      [1, 1, 1, 0, 0, 0, 0],
      [1, 1, 1, 0, 0, 0, 0],
      [1, 1, 1, 1, 0, 0, 0],
      [0, 0, 0, 0, 1, 1, 0],
      [0, 0, 0, 0, 1, 1, 0],
      [0, 0, 0, 0, 1, 1, 1]])


def test_prefix_lm_parameters_logits_and_hidden_states():
  """One stack named as T5X's decoder-only network's, every parameter with logical axes;
  logits in the decoder-target layout, projected from the hidden states."""
  for scan in (False, True):
    cfg = tiny_model(scan_layers=scan, **DECODER_ONLY)
    params, specs = model_lib.abstract_params(cfg)
    assert set(params) == {"token_embedder", "decoder", "logits_dense"}
    assert set(params["decoder"]) == {"relpos_bias", "decoder_norm"} | (
        {"layers"} if scan else {f"layers_{i}" for i in range(3)})
    layer = params["decoder"]["layers" if scan else "layers_0"]
    assert set(layer) == {"pre_self_attention_layer_norm", "self_attention", "pre_mlp_layer_norm", "mlp"}
    flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    assert [len(spec) for spec in flat_specs] == [p.ndim for p in jax.tree.leaves(params)]

  cfg = tiny_model(**DECODER_ONLY)
  d, v, inner = cfg.d_model, cfg.vocab_size, cfg.num_heads * cfg.d_kv
  per_layer = 2 * d + 4 * d * inner + 3 * d * cfg.d_ff  # norms, attention, gated FFN
  assert model_lib.count_params(cfg) == 2 * v * d + cfg.num_heads * 32 + d + 3 * per_layer
  params = jax.jit(lambda key: model_lib.init_params(cfg, key))(jax.random.key(15))
  batch = random_batch(np.random.default_rng(15), 2, 16, 8, cfg.vocab_size)
  logits = _apply(cfg, params, batch)
  assert logits.shape == (2, 8, cfg.vocab_size) and bool(jnp.all(jnp.isfinite(logits)))
  hidden = _apply(cfg, params, batch, return_hidden=True)
  kernel, scale = model_lib.Transformer(cfg).apply({"params": params},
                                                   method=model_lib.Transformer.logits_kernel)
  assert hidden.shape == (2, 8, cfg.d_model)
  np.testing.assert_allclose(model_lib.project_logits(hidden, kernel, scale), logits, rtol=1e-6, atol=1e-6)
