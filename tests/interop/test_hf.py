"""Parity with transformers' T5: small random HF models, converted both ways.

Lengths go past 128 so relative distances reach the log-bucket region and the
max_distance clamp, and the batch is padded so the masks matter.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pydoc_data import topics as pydoc_topics

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece as spm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

# pylint: disable=wrong-import-position
from t5x_lite import checkpoints
from t5x_lite.cli.main import main
from t5x_lite.config import ModelConfig, load_json
from t5x_lite.data import ByteVocabulary, load_vocabulary
from t5x_lite.interop import hf as hf_interop
from t5x_lite.interop.hf import InteropError
from t5x_lite.model import Transformer, abstract_params

_VOCAB = 100


def _hf_model(feed_forward_proj: str = "gated-gelu", tied: bool = False, encoder_layers: int = 1,
              decoder_layers: int = 2, d_model: int = 32, seed: int = 0, vocab_size: int = _VOCAB):
  """A random HF T5 whose every tensor differs (norms, lm_head included)."""
  torch.manual_seed(seed)
  config = transformers.T5Config(
      vocab_size=vocab_size, d_model=d_model, d_ff=2 * d_model, num_heads=4, d_kv=d_model // 4,
      num_layers=encoder_layers, num_decoder_layers=decoder_layers,
      relative_attention_num_buckets=32, relative_attention_max_distance=128,
      feed_forward_proj=feed_forward_proj, tie_word_embeddings=tied, dropout_rate=0.0)
  model = transformers.T5ForConditionalGeneration(config).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if "layer_norm" in name:
        param.uniform_(0.5, 1.5)
  if not tied:
    # transformers 5 ties lm_head to shared at init even when untied.
    model.lm_head.weight = torch.nn.Parameter(torch.randn(vocab_size, d_model))
  return model


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Encoder rows of 150, 97 and 40 tokens padded with 0; decoder rows of 140."""
  rng = np.random.default_rng(seed)
  encoder = rng.integers(2, _VOCAB, (3, 150))
  encoder[1, 97:] = 0
  encoder[2, 40:] = 0
  decoder = rng.integers(2, _VOCAB, (3, 140))
  decoder[:, 0] = 0  # decoder_start_token_id
  decoder[2, 60:] = 0
  return encoder, decoder


def _hf_logits(model, encoder: np.ndarray, decoder: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(input_ids=torch.tensor(encoder),
                 attention_mask=torch.tensor(encoder > 0).long(),
                 decoder_input_ids=torch.tensor(decoder)).logits.numpy()


def _t5x_logits(params, config: ModelConfig, encoder: np.ndarray,
                decoder: np.ndarray) -> np.ndarray:
  # Eager apply: per-op compiles are shared across tests, unlike one jit per config.
  logits = Transformer(config).apply({"params": params}, jnp.asarray(encoder), jnp.asarray(decoder))
  return np.asarray(logits)


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _import(folder: str, **overrides) -> tuple[dict, ModelConfig]:
  hf_config, state_dict = hf_interop.load_hf_folder(folder)
  config = dataclasses.replace(hf_interop.model_config_from_hf(hf_config), dtype="float32",
                               **overrides)
  return hf_interop.params_from_hf(state_dict, config, hf_interop.ties_lm_head(hf_config)), config


@pytest.mark.parametrize("feed_forward_proj,tied,encoder_layers,decoder_layers,d_model", [
    ("gated-gelu", False, 1, 2, 32),
    ("relu", True, 3, 2, 64),
    ("gated-relu", False, 2, 1, 32),
    ("gated-silu", True, 1, 1, 32),
    ("gelu_new", False, 1, 1, 32),
])
def test_logits_match_transformers_and_round_trip(tmp_path, feed_forward_proj, tied, encoder_layers,
                                                  decoder_layers, d_model):
  model = _hf_model(feed_forward_proj, tied, encoder_layers, decoder_layers, d_model)
  model.save_pretrained(tmp_path / "hf")
  encoder, decoder = _batch()
  expected = _hf_logits(model, encoder, decoder)

  params, config = _import(str(tmp_path / "hf"))
  assert config.tie_logits == tied
  assert _relative_error(_t5x_logits(params, config, encoder, decoder), expected) < 1e-5

  hf_interop.save_hf_folder(str(tmp_path / "out"), params, config)
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
  np.testing.assert_array_equal(_hf_logits(reloaded, encoder, decoder), expected)
  if not tied:
    assert not torch.equal(reloaded.lm_head.weight, reloaded.shared.weight)


def test_scan_layers_import_matches_unscanned(tmp_path):
  _hf_model("gated-gelu", False, 3, 2).save_pretrained(tmp_path)
  encoder, decoder = _batch()
  params, config = _import(str(tmp_path))
  scanned, scan_config = _import(str(tmp_path), scan_layers=True)
  assert scanned["encoder"]["layers"]["mlp"]["wo"].shape[0] == 3
  np.testing.assert_allclose(_t5x_logits(scanned, scan_config, encoder, decoder),
                             _t5x_logits(params, config, encoder, decoder), rtol=1e-5, atol=1e-5)
  exported = hf_interop.params_to_hf(scanned, scan_config)
  assert exported.keys() == hf_interop.params_to_hf(params, config).keys()
  _, state_dict = hf_interop.load_hf_folder(str(tmp_path))
  for key, value in exported.items():
    np.testing.assert_array_equal(value, state_dict[key], err_msg=key)


def _family_model(family: str, seed: int = 0):
  """A small random model of each family member, as today's transformers builds and saves it:
  mT5 (untied, and tied: saved without lm_head), umT5 (a bias table in every layer), ByT5's
  shape (384 byte ids, the encoder three times the decoder's depth), UL2's (gated-SiLU,
  heads x d_kv wider than d_model) and Flan-T5 (T5.1.1)."""
  torch.manual_seed(seed)
  shape = dict(d_model=32, d_ff=64, num_heads=4, d_kv=8, num_layers=2, num_decoder_layers=2,
               dropout_rate=0.0, vocab_size=_VOCAB, tie_word_embeddings=False)
  if family in ("mt5", "mt5_tied"):
    config = transformers.MT5Config(**{**shape, "tie_word_embeddings": family == "mt5_tied"})
    model = transformers.MT5ForConditionalGeneration(config)
  elif family == "umt5":
    model = transformers.UMT5ForConditionalGeneration(transformers.UMT5Config(**shape))
  else:
    shape.update({
        "byt5": dict(num_layers=3, num_decoder_layers=1, vocab_size=384),
        "ul2": dict(d_kv=16, feed_forward_proj="gated-silu"),
        "flan_t5": dict(feed_forward_proj="gated-gelu"),
    }[family])
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**shape))
  with torch.no_grad():
    for name, param in model.named_parameters():
      if "layer_norm" in name:
        param.uniform_(0.5, 1.5)
  if family != "mt5_tied":  # transformers 5 ties lm_head to shared at init even when untied.
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.config.vocab_size, 32))
  return model.eval()


@pytest.mark.parametrize("family,position_scheme", [
    ("mt5", "relative"), ("mt5_tied", "relative"), ("umt5", "relative_per_layer"),
    ("byt5", "relative"), ("ul2", "relative"), ("flan_t5", "relative")])
def test_family_logits_match_transformers_saved_by_today(tmp_path, family, position_scheme):
  """Each member saved by today's transformers imports with its logits (fp32, 1e-5), and
  exports to a folder transformers loads with the same logits. A tied mT5 is saved with
  tie_word_embeddings=true and no lm_head, and its logits are not scaled (transformers 5's
  mT5 never scales): read as T5.1.0's tied-and-scaled logits, they were 0.88 off."""
  model = _family_model(family)
  model.save_pretrained(tmp_path / "hf")
  encoder, decoder = _batch()
  expected = _hf_logits(model, encoder, decoder)
  params, config = _import(str(tmp_path / "hf"))
  assert config.position_scheme == position_scheme and not config.tie_logits
  assert _relative_error(_t5x_logits(params, config, encoder, decoder), expected) < 1e-5
  if family == "umt5":  # The per-layer tables stack under scan_layers like any layer parameter.
    scanned, scan_config = _import(str(tmp_path / "hf"), scan_layers=True)
    assert scanned["encoder"]["layers"]["relpos_bias"]["rel_embedding"].shape == (2, 4, 32)
    assert _relative_error(_t5x_logits(scanned, scan_config, encoder, decoder), expected) < 1e-5
  hf_interop.save_hf_folder(str(tmp_path / "out"), params, config)
  reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out").eval()
  assert type(reloaded).__name__ == ("UMT5ForConditionalGeneration" if family == "umt5"
                                     else "T5ForConditionalGeneration")
  np.testing.assert_allclose(_hf_logits(reloaded, encoder, decoder), expected, rtol=0, atol=1e-5)


def _assert_same_params(a, b) -> None:
  flat_a = flax.traverse_util.flatten_dict(a)
  flat_b = flax.traverse_util.flatten_dict(b)
  assert flat_a.keys() == flat_b.keys()
  for key, value in flat_a.items():
    np.testing.assert_array_equal(value, flat_b[key], err_msg="/".join(key))


def test_pytorch_bin_and_sharded_folders(tmp_path):
  model = _hf_model("relu", True, 2, 2)
  model.save_pretrained(tmp_path / "safetensors")
  reference, _ = _import(str(tmp_path / "safetensors"))

  # torch's own state dict keeps every tied copy (embed_tokens, lm_head).
  state_dict = model.state_dict()
  assert "encoder.embed_tokens.weight" in state_dict and "lm_head.weight" in state_dict
  single = tmp_path / "bin"
  model.config.save_pretrained(single)
  torch.save(state_dict, single / "pytorch_model.bin")
  _assert_same_params(_import(str(single))[0], reference)

  sharded = tmp_path / "bin_sharded"
  model.config.save_pretrained(sharded)
  keys = sorted(state_dict)
  weight_map = {}
  for i, part in enumerate((keys[:len(keys) // 2], keys[len(keys) // 2:])):
    name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
    torch.save({k: state_dict[k] for k in part}, sharded / name)
    weight_map.update(dict.fromkeys(part, name))
  (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
  _assert_same_params(_import(str(sharded))[0], reference)

  model.save_pretrained(tmp_path / "st_sharded", max_shard_size="20KB")
  assert (tmp_path / "st_sharded" / "model.safetensors.index.json").exists()
  assert not (tmp_path / "st_sharded" / "model.safetensors").exists()
  _assert_same_params(_import(str(tmp_path / "st_sharded"))[0], reference)


def test_bfloat16_checkpoint_loads(tmp_path):
  model = _hf_model("gated-gelu", False, 1, 1).to(torch.bfloat16)
  model.save_pretrained(tmp_path / "st")
  model.config.save_pretrained(tmp_path / "bin")
  torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
  from_st, config = _import(str(tmp_path / "st"))
  assert from_st["token_embedder"]["embedding"].dtype == np.float32
  _assert_same_params(_import(str(tmp_path / "bin"))[0], from_st)
  expected = model.shared.weight.detach().float().numpy()
  np.testing.assert_array_equal(from_st["token_embedder"]["embedding"], expected)
  assert config.ffn_activation == "gated-gelu"


@pytest.fixture(name="converted")
def _converted(tmp_path):
  """(state dict, config) of a small untied checkpoint."""
  _hf_model("gated-gelu", False, 1, 1).save_pretrained(tmp_path)
  hf_config, state_dict = hf_interop.load_hf_folder(str(tmp_path))
  return state_dict, hf_interop.model_config_from_hf(hf_config)


def test_unknown_tensor_is_an_error(converted):
  state_dict, config = converted
  state_dict["encoder.block.0.layer.0.SelfAttention.extra.weight"] = np.zeros((3, 4), np.float32)
  with pytest.raises(InteropError, match=r"unexpected tensor encoder\.block\.0\.layer\.0\."
                                         r"SelfAttention\.extra\.weight \(3, 4\)"):
    hf_interop.params_from_hf(state_dict, config)


def test_tensor_transformers_ignores_is_accepted(converted):
  state_dict, config = converted
  expected = hf_interop.params_from_hf(state_dict, config)
  key = "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"
  state_dict[key] = np.zeros((32, 4), np.float32)
  _assert_same_params(hf_interop.params_from_hf(state_dict, config), expected)


def test_missing_tensor_is_an_error(converted):
  state_dict, config = converted
  del state_dict["decoder.block.0.layer.1.EncDecAttention.k.weight"]
  with pytest.raises(InteropError,
                     match=r"missing tensor decoder\.block\.0\.layer\.1\.EncDecAttention\.k\.w"):
    hf_interop.params_from_hf(state_dict, config)


def test_wrong_shape_is_an_error(converted):
  state_dict, config = converted
  state_dict["encoder.block.0.layer.1.DenseReluDense.wo.weight"] = np.zeros((32, 63), np.float32)
  with pytest.raises(InteropError,
                     match=r"DenseReluDense\.wo\.weight has shape \(32, 63\), expected \(32, 64\)"):
    hf_interop.params_from_hf(state_dict, config)


def test_config_and_checkpoint_must_agree(converted):
  state_dict, config = converted
  deeper = dataclasses.replace(config, num_decoder_layers=2)
  with pytest.raises(InteropError,
                     match=r"missing tensor decoder\.block\.1\.layer\.0\.SelfAttention\.q\.weight"):
    hf_interop.params_from_hf(state_dict, deeper)


def test_differing_tied_copies_are_errors(converted):
  state_dict, config = converted
  state_dict["encoder.embed_tokens.weight"] = state_dict["shared.weight"] + 1
  with pytest.raises(InteropError,
                     match=r"encoder\.embed_tokens\.weight differs from shared\.weight"):
    hf_interop.params_from_hf(state_dict, config)
  del state_dict["encoder.embed_tokens.weight"]
  tied = dataclasses.replace(config, tie_logits=True)
  with pytest.raises(InteropError, match=r"lm_head\.weight differs from shared\.weight"):
    hf_interop.params_from_hf(state_dict, tied)
  state_dict["lm_head.weight"] = state_dict["shared.weight"].copy()
  hf_interop.params_from_hf(state_dict, tied)


def test_untied_without_lm_head_uses_the_embedding_if_tie_word_embeddings(converted):
  """transformers ties lm_head to shared.weight when a checkpoint lacks it and
  tie_word_embeddings holds (transformers 5 writes it for unscaled models too); else it
  would start lm_head at random (a T5Model save), which t5x-lite refuses."""
  state_dict, config = converted
  del state_dict["lm_head.weight"]
  assert hf_interop.ties_lm_head({}) and not hf_interop.ties_lm_head({"tie_word_embeddings": False})
  params = hf_interop.params_from_hf(state_dict, config, lm_head_is_embedding=True)
  np.testing.assert_array_equal(params["logits_dense"], state_dict["shared.weight"].T)
  with pytest.raises(InteropError, match=r"lm_head\.weight is missing and the config says "
                                         r"tie_word_embeddings=false.*T5Model"):
    hf_interop.params_from_hf(state_dict, config)


def test_import_of_a_t5model_folder_without_lm_head(tmp_path, capsys):
  model = _hf_model("gated-gelu", False, 1, 1)
  transformers.T5Model(model.config).save_pretrained(tmp_path / "hf")  # no lm_head
  config_path = tmp_path / "hf" / "config.json"
  hf_config = json.loads(config_path.read_text())
  assert hf_config["tie_word_embeddings"]  # transformers 5: it loads with lm_head = shared.
  assert main(["import-hf", str(tmp_path / "hf"), "--workdir", str(tmp_path / "w1")]) == 0
  config_path.write_text(json.dumps({**hf_config, "tie_word_embeddings": False}))
  assert main(["import-hf", str(tmp_path / "hf"), "--workdir", str(tmp_path / "w2")]) == 2
  assert "lm_head.weight is missing and the config says tie_word_embeddings=false" in (
      capsys.readouterr().err)


def test_params_to_hf_checks_the_tree(converted):
  state_dict, config = converted
  params = hf_interop.params_from_hf(state_dict, config)
  del params["decoder"]["decoder_norm"]
  with pytest.raises(InteropError, match=r"missing parameter decoder/decoder_norm/scale"):
    hf_interop.params_to_hf(params, config)


def test_configs():
  hf = {"model_type": "t5", "vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 2048,
        "num_layers": 12, "num_heads": 12, "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False, "dropout_rate": 0.1}
  config = hf_interop.model_config_from_hf(hf)
  assert config == dataclasses.replace(ModelConfig(), dropout_rate=0.1)
  back = hf_interop.hf_config_from_model(config)
  assert {k: back[k] for k in hf} == hf
  assert back["num_decoder_layers"] == 12 and back["decoder_start_token_id"] == 0
  # transformers 5 saves untied T5 as tie_word_embeddings=True, scale_decoder_outputs=False.
  assert not hf_interop.model_config_from_hf(
      {**hf, "tie_word_embeddings": True, "scale_decoder_outputs": False}).tie_logits
  assert hf_interop.model_config_from_hf({"feed_forward_proj": "relu"}).tie_logits
  for activation in ("relu", "gelu", "gated-gelu", "gated-relu", "swiglu"):
    roundtrip = hf_interop.model_config_from_hf(
        hf_interop.hf_config_from_model(dataclasses.replace(config, ffn_activation=activation)))
    assert roundtrip.ffn_activation == activation
    parsed = transformers.T5Config(**hf_interop.hf_config_from_model(
        dataclasses.replace(config, ffn_activation=activation)))
    assert hf_interop.model_config_from_hf(parsed.to_dict()).ffn_activation == activation
  with pytest.raises(InteropError, match="gelu"):
    hf_interop.model_config_from_hf({"feed_forward_proj": "gelu"})  # exact erf GELU
  with pytest.raises(InteropError, match="model_type"):
    hf_interop.model_config_from_hf({"model_type": "bart"})
  with pytest.raises(InteropError, match="layernorm"):
    hf_interop.hf_config_from_model(dataclasses.replace(config, norm="layernorm"))
  with pytest.raises(InteropError, match=r"architecture='decoder_only' \(HF's T5 is an encoder-"):
    hf_interop.hf_config_from_model(
        dataclasses.replace(config, architecture="decoder_only", num_encoder_layers=0))


def test_load_hf_folder_errors(tmp_path):
  with pytest.raises(InteropError, match="does not exist"):
    hf_interop.load_hf_folder(str(tmp_path / "nowhere"))
  with pytest.raises(InteropError, match="has no config.json"):
    hf_interop.load_hf_folder(str(tmp_path))
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(InteropError, match="is a file"):
    hf_interop.load_hf_folder(str(tmp_path / "config.json"))
  with pytest.raises(InteropError, match="holds no weights"):
    hf_interop.load_hf_folder(str(tmp_path))
  (tmp_path / "config.json").write_text('{"d_model": 32,')
  with pytest.raises(InteropError, match=r"config\.json is not valid JSON \(Expecting"):
    hf_interop.load_hf_folder(str(tmp_path))
  (tmp_path / "config.json").write_text("[1]")
  with pytest.raises(InteropError, match="holds no JSON object of T5Config fields"):
    hf_interop.load_hf_folder(str(tmp_path))


def test_damaged_weights_are_named(tmp_path):
  model = _hf_model("relu", True, 1, 1)
  model.save_pretrained(tmp_path / "st")
  weights = tmp_path / "st" / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:1000])
  with pytest.raises(InteropError, match=r"model\.safetensors cannot be read as safetensors .* may be "
                                         r"truncated"):
    hf_interop.load_hf_folder(str(tmp_path / "st"))

  model.config.save_pretrained(tmp_path / "bin")
  torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
  weights = tmp_path / "bin" / "pytorch_model.bin"
  weights.write_bytes(weights.read_bytes()[:1000])
  with pytest.raises(InteropError, match=r"pytorch_model\.bin cannot be read as a PyTorch checkpoint"):
    hf_interop.load_hf_folder(str(tmp_path / "bin"))

  model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
  index = tmp_path / "sharded" / "model.safetensors.index.json"
  shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
  (tmp_path / "sharded" / shards[-1]).unlink()
  with pytest.raises(InteropError, match=rf"lists shards the folder lacks: {shards[-1]}"):
    hf_interop.load_hf_folder(str(tmp_path / "sharded"))
  index.write_text("{}")
  with pytest.raises(InteropError, match="has no weight_map"):
    hf_interop.load_hf_folder(str(tmp_path / "sharded"))


# ----------------------------------------------------------------------------
# Vocabularies: a folder's spiece.model, or its tokenizer.json converted
# ----------------------------------------------------------------------------

_TEXTS = [paragraph for topic in sorted(pydoc_topics.topics.values())[:60]
          for paragraph in topic.split("\n\n")] + [
              "Hello   world", "  leading and trailing  ", "tab\tand\nnew line", "ﬁne ＡＢＣ café",
              "naïve résumé ßtraße", "emoji 😀 here", "日本語のテキスト", "a\u00a0b x\u3000y", "",
              " ", "½ ①②", "x = [1, 2, 3]  # comment", "<0x41> literal"]


def _train_spiece(path, normalization: str = "nmt_nfkc"):
  """A 400-piece T5-style SentencePiece model: NFKC-normalized as T5's, or unnormalized
  with byte fallback as t5x-lite trains them."""
  stream = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter([line for line in _TEXTS if line.strip()]), model_writer=stream,
      vocab_size=400, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      normalization_rule_name=normalization, byte_fallback=normalization == "identity",
      minloglevel=2)
  path.write_bytes(stream.getvalue())
  return path


@pytest.fixture(name="spiece", scope="module", params=["nmt_nfkc", "identity"])
def _spiece(request, tmp_path_factory):
  return _train_spiece(tmp_path_factory.mktemp("spiece") / "spiece.model", request.param)


def _saved_by_transformers_5(spiece, folder) -> None:
  """tokenizer.json and tokenizer_config.json, without spiece.model, as transformers 5 saves."""
  source = folder.parent / (folder.name + "_source")
  source.mkdir()
  shutil.copy(spiece, source / "spiece.model")
  transformers.T5Tokenizer.from_pretrained(source).save_pretrained(folder)
  assert (folder / "tokenizer.json").exists() and not (folder / "spiece.model").exists()


def _score(processor, ids) -> float:
  return sum(processor.get_score(i) for i in ids)


def test_tokenizer_json_converts_to_the_same_ids(spiece, tmp_path):
  _saved_by_transformers_5(spiece, tmp_path / "hf")
  converted = spm.SentencePieceProcessor(
      model_proto=hf_interop.spiece_from_tokenizer_json(str(tmp_path / "hf" / "tokenizer.json")))
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  original = spm.SentencePieceProcessor(model_file=str(spiece))
  assert converted.get_piece_size() == original.get_piece_size()
  ties = 0
  for text in _TEXTS:
    ids = converted.encode(text)
    expected = tokenizer(text, add_special_tokens=False).input_ids
    if ids != expected:  # Only where both segmentations score the same.
      assert converted.decode(ids) == converted.decode(expected), text
      assert _score(converted, ids) == pytest.approx(_score(converted, expected)), text
      ties += 1
  assert ties <= len(_TEXTS) // 50
  if original.normalize("ﬁ") == "fi":  # T5-style (NFKC): exactly the original model.
    assert all(converted.encode(text) == original.encode(text) for text in _TEXTS)


def test_import_converts_tokenizer_json_or_says_there_is_no_vocabulary(spiece, tmp_path, capsys):
  model = _hf_model("gated-gelu", False, 1, 1, vocab_size=512)
  model.save_pretrained(tmp_path / "hf")
  _saved_by_transformers_5(spiece, tmp_path / "hf")
  assert main(["import-hf", str(tmp_path / "hf"), "--workdir", str(tmp_path / "w")]) == 0
  assert "its vocabulary was converted from tokenizer.json" in capsys.readouterr().out
  vocabulary = spm.SentencePieceProcessor(model_file=str(tmp_path / "w" / "vocabulary.model"))
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  text = "The assert statement is a convenient way to insert debugging assertions."
  assert vocabulary.encode(text) == tokenizer(text, add_special_tokens=False).input_ids

  for name in ("tokenizer.json", "tokenizer_config.json"):
    (tmp_path / "hf" / name).unlink()
  assert main(["import-hf", str(tmp_path / "hf"), "--workdir", str(tmp_path / "w2")]) == 0
  err = capsys.readouterr().err
  assert err.startswith("t5x-lite import-hf: warning: ") and err.count("\n") == 1
  assert "has no spiece.model or tokenizer.json" in err
  assert f"copy the model's spiece.model to {tmp_path / 'w2' / 'vocabulary.model'}" in err
  assert load_json(str(tmp_path / "w2" / "config.json")).data.vocabulary == ""


def test_sentinel_count_of_a_folder_travels_with_its_vocabulary(spiece, tmp_path):
  """umT5's tokenizers have 300 extra ids, which tokenizer_config.json records: import keeps
  them as data.vocab_extra_ids (sentinels at the tokenizer's ids) and export writes them back."""
  model = _hf_model("gated-gelu", False, 1, 1, vocab_size=768)
  model.save_pretrained(tmp_path / "hf")
  source = tmp_path / "source"
  source.mkdir()
  shutil.copy(spiece, source / "spiece.model")
  transformers.T5Tokenizer.from_pretrained(source, extra_ids=300).save_pretrained(tmp_path / "hf")
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  experiment = hf_interop.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))
  assert experiment.data.vocab_extra_ids == 300
  vocabulary = load_vocabulary(experiment.data.vocabulary, experiment.data.vocab_extra_ids)
  sentinels = tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_299>"])
  assert [vocabulary.sentinel(0), vocabulary.sentinel(299)] == sentinels
  hf_interop.export_hf(str(tmp_path / "w"), str(tmp_path / "out"))
  exported = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
  assert exported.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_299>"]) == sentinels
  (tmp_path / "hf" / "tokenizer_config.json").write_text('{"extra_ids": "many"}')
  with pytest.raises(InteropError, match=r"says extra_ids='many'; it must be a count"):
    hf_interop.import_hf(str(tmp_path / "hf"), str(tmp_path / "w2"))


def test_folder_vocabulary_errors(spiece, tmp_path):
  model = _hf_model("gated-gelu", False, 1, 1)  # vocab_size 100: too small for 400 pieces
  model.save_pretrained(tmp_path / "hf")
  shutil.copy(spiece, tmp_path / "hf" / "spiece.model")
  with pytest.raises(InteropError, match=r"spiece\.model has 400 pieces, which with 100 sentinels "
                                         r"need 500 ids, but the model's vocab_size is 100"):
    hf_interop.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))
  (tmp_path / "hf" / "spiece.model").write_bytes(b"not a model")
  with pytest.raises(InteropError, match=r"spiece\.model is not a SentencePiece model"):
    hf_interop.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))
  tokenizer = {"model": {"type": "BPE", "vocab": {}}}
  (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
  with pytest.raises(InteropError, match="is not a SentencePiece Unigram tokenizer"):
    hf_interop.spiece_from_tokenizer_json(str(tmp_path / "tokenizer.json"))
  vocab = [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0], ["▁a", -1.0]]
  tokenizer = {"model": {"type": "Unigram", "unk_id": 2, "vocab": vocab},
               "added_tokens": [{"content": "<sep>"}]}
  (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
  with pytest.raises(InteropError, match=r"its last 100 tokens are not <extra_id_99> down to "
                                         r"<extra_id_0>; .* no place for: <sep>\. Copy the model's "
                                         r"spiece\.model"):
    hf_interop.spiece_from_tokenizer_json(str(tmp_path / "tokenizer.json"))


def _restore(workdir: str, config: ModelConfig):
  """The workdir's latest parameters, read on one device as eval and infer would."""
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          abstract_params(config)[0])
  return checkpoints.restore_params(workdir, abstract)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_import_and_export_commands_round_trip(tmp_path, scan_layers):
  model = _hf_model("gated-gelu", False, 2, 1, vocab_size=512)
  model.save_pretrained(tmp_path / "hf")
  spiece = _train_spiece(tmp_path / "hf" / "spiece.model").read_bytes()
  work, out = tmp_path / "work", tmp_path / "out"
  assert main(["import-hf", str(tmp_path / "hf"), "--workdir", str(work)]
              + ["--scan-layers"] * scan_layers) == 0

  experiment = load_json(str(work / "config.json"))
  assert experiment.model.scan_layers == scan_layers and not experiment.model.tie_logits
  assert experiment.data.vocabulary == str(work / "vocabulary.model")
  assert (work / "vocabulary.model").read_bytes() == spiece
  assert checkpoints.all_steps(str(work)) == [0]
  assert checkpoints.read_config(str(work)) == experiment
  assert checkpoints.read_meta(str(work))["vocabulary"]["path"] == str(work / "vocabulary.model")
  encoder, decoder = _batch()
  expected = _hf_logits(model, encoder, decoder)
  config = dataclasses.replace(experiment.model, dtype="float32")
  params = _restore(str(work), config)
  if scan_layers:
    assert params["encoder"]["layers"]["attention"]["query"].shape[0] == 2
  assert _relative_error(_t5x_logits(params, config, encoder, decoder), expected) < 1e-5

  assert main(["export-hf", "--workdir", str(work), "--output", str(out), "--step", "0"]) == 0
  assert (out / "spiece.model").read_bytes() == spiece
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
  np.testing.assert_array_equal(_hf_logits(reloaded, encoder, decoder), expected)


def test_relative_workdir_and_one_line_errors(tmp_path, capsys, monkeypatch):
  _hf_model("relu", True, 1, 1).save_pretrained(tmp_path / "hf")
  monkeypatch.chdir(tmp_path)  # Orbax itself accepts only absolute paths.
  assert main(["import-hf", "nothing", "--workdir", "w"]) == 2
  assert "nothing does not exist" in capsys.readouterr().err
  assert main(["import-hf", "hf", "--workdir", "w"]) == 0
  assert checkpoints.all_steps("w") == [0]
  assert not (tmp_path / "w" / "vocabulary.model").exists()  # no spiece.model in the folder
  assert "has no spiece.model" in capsys.readouterr().err
  assert main(["import-hf", "hf", "--workdir", "w"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("t5x-lite import-hf: error: ") and "is not empty" in err


def test_import_and_export_destinations(tmp_path, capsys):
  """A file is no destination; export writes into a new or empty folder, and replaces a
  model folder (an earlier export or a save_pretrained one) only with --overwrite, whole:
  no file of the old model stays. A folder holding anything else is never touched."""
  _hf_model("relu", True, 1, 1).save_pretrained(tmp_path / "hf")
  (tmp_path / "file").write_text("mine")
  assert main(["import-hf", str(tmp_path / "hf"), "--workdir", str(tmp_path / "file")]) == 2
  assert "--workdir " + str(tmp_path / "file") + " is a file" in capsys.readouterr().err
  work = str(tmp_path / "w")
  assert main(["import-hf", str(tmp_path / "hf"), "--workdir", work]) == 0
  assert main(["export-hf", "--workdir", work, "--output", str(tmp_path / "file")]) == 2
  assert "--output " + str(tmp_path / "file") + " is a file" in capsys.readouterr().err

  before = sorted(p.name for p in (tmp_path / "hf").iterdir())
  assert main(["export-hf", "--workdir", work, "--output", str(tmp_path / "hf")]) == 2
  err = capsys.readouterr().err
  assert "holds a model already (config.json" in err and "pass --overwrite" in err
  assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == before
  (tmp_path / "hf" / "model-00002-of-00002.safetensors").write_bytes(b"a stale shard")
  assert main(["export-hf", "--workdir", work, "--output", str(tmp_path / "hf"), "--overwrite"]) == 0
  assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]

  out = tmp_path / "out"
  out.mkdir()
  assert main(["export-hf", "--workdir", work, "--output", str(out)]) == 0  # empty: fine
  assert main(["export-hf", "--workdir", work, "--output", str(out)]) == 2  # an earlier export
  (out / "spiece.model").write_bytes(b"an earlier export's vocabulary")
  assert main(["export-hf", "--workdir", work, "--output", str(out), "--overwrite"]) == 0
  assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
  transformers.T5ForConditionalGeneration.from_pretrained(out)
  (out / "notes.txt").write_text("mine")
  assert main(["export-hf", "--workdir", work, "--output", str(out), "--overwrite"]) == 2
  assert "holds files that are not a model's (config.json, model.safetensors, notes.txt)" in (
      capsys.readouterr().err)
  assert (out / "notes.txt").read_text() == "mine"


def _byt5_folder(folder, vocab_size: int = 384) -> None:
  """A tiny random model saved with transformers' ByT5Tokenizer, which writes a
  tokenizer_config.json naming it and no vocabulary file."""
  _hf_model("gated-gelu", False, 1, 1, vocab_size=vocab_size).save_pretrained(folder)
  transformers.ByT5Tokenizer().save_pretrained(folder)
  assert not (folder / "spiece.model").exists() and not (folder / "tokenizer.json").exists()


def test_import_and_export_of_a_byt5_folder(tmp_path, capsys):
  _byt5_folder(tmp_path / "hf")
  work, out = tmp_path / "work", tmp_path / "out"
  assert main(["import-hf", str(tmp_path / "hf"), "--workdir", str(work)]) == 0
  assert "The folder's tokenizer is ByT5's: its vocabulary is UTF-8 bytes, with 125 extra ids." in (
      capsys.readouterr().out)
  experiment = load_json(str(work / "config.json"))
  assert experiment.data.vocabulary == str(work / "vocabulary.model")
  assert experiment.data.vocab_extra_ids == 125
  vocabulary = load_vocabulary(experiment.data.vocabulary, experiment.data.vocab_extra_ids)
  assert isinstance(vocabulary, ByteVocabulary)
  assert vocabulary.vocab_size == experiment.model.vocab_size == 384

  assert main(["export-hf", "--workdir", str(work), "--output", str(out)]) == 0
  assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors",
                                                   "tokenizer_config.json"]
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  assert isinstance(tokenizer, transformers.ByT5Tokenizer) and len(tokenizer) == 384
  text = "Bytes: ASCII, Ünïcödé, 漢字 and 😀."
  assert tokenizer(text, add_special_tokens=False).input_ids == vocabulary.encode(text).tolist()
  assert tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(125)]) == (
      vocabulary.sentinel_ids.tolist())

  # The Hub's google/byt5-* folders name the tokenizer in config.json instead.
  (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 125}))
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "tokenizer_class": "ByT5Tokenizer"}))
  hf_interop.import_hf(str(tmp_path / "hf"), str(tmp_path / "hub"))
  assert (tmp_path / "hub" / "vocabulary.model").read_bytes() == vocabulary.serialized


def test_a_byt5_tokenizer_must_fit_the_model(tmp_path):
  _byt5_folder(tmp_path / "hf", vocab_size=300)
  with pytest.raises(InteropError, match=r"has a ByT5 tokenizer, whose 384 ids \(3 special, 256 bytes, "
                                         r"125 sentinels\) do not fit the model's vocab_size 300"):
    hf_interop.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))
