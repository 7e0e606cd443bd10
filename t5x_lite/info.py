"""`t5x-lite info`: what a configuration costs before anything is allocated.

By default from counts and a rough activation estimate; with --target, from XLA's own
accounting of the train step compiled for that device (t5x_lite.aot: a GPU need not be
present), which settles whether a batch, remat policy and attention implementation fit.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from t5x_lite import config as config_lib
from t5x_lite import flops, model, optimizers, partitioning, train_state


def parameter_breakdown(params) -> dict[str, int]:
  """Parameters per top-level module: embeddings, encoder, decoder, logits."""
  names = {"token_embedder": "embeddings", "encoder": "encoder", "decoder": "decoder",
           "logits_dense": "logits"}
  counts = dict.fromkeys(names.values(), 0)
  for key, subtree in params.items():
    counts[names[key]] += sum(int(np.prod(p.shape)) for p in jax.tree.leaves(subtree))
  return counts


def activation_bytes_estimate(cfg: config_lib.ModelConfig, batch: int, inputs_length: int,
                              targets_length: int) -> int:
  """Rough bytes of activations kept for the backward pass (one device's batch).

  Counts per token and layer the tensors a layer saves (norm outputs, q/k/v,
  attention output, FFN hidden) plus float32 attention weights; remat keeps
  only layer inputs plus one layer's worth. An estimate, not a measurement.
  """
  itemsize = np.dtype(model.activation_dtype(cfg)).itemsize
  d, inner, ff = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff
  ffn = 3 * ff if cfg.gated_ffn else 2 * ff
  enc_token = (4 * d + 4 * inner + ffn) * itemsize + cfg.num_heads * inputs_length * 6
  dec_length = targets_length
  dec_token = ((6 * d + 6 * inner + ffn) * itemsize
               + cfg.num_heads * (targets_length + inputs_length) * 6)
  if cfg.architecture == "decoder_only":
    # One stack over inputs and targets together; a token keeps what an encoder layer's does.
    dec_length = inputs_length + targets_length
    dec_token = (4 * d + 4 * inner + ffn) * itemsize + cfg.num_heads * dec_length * 6
  per_layer = {"encoder": batch * inputs_length * enc_token if cfg.num_encoder_layers else 0,
               "decoder": batch * dec_length * dec_token}
  logits = batch * targets_length * cfg.vocab_size * (itemsize + 4)
  if cfg.remat_policy in ("none", "minimal", "compiler"):  # "minimal" saves less; an upper bound
    layers = cfg.num_encoder_layers * per_layer["encoder"] + cfg.num_decoder_layers * per_layer["decoder"]
  else:
    inputs_kept = batch * (cfg.num_encoder_layers * inputs_length + cfg.num_decoder_layers * dec_length)
    layers = inputs_kept * d * itemsize + max(per_layer.values())
  return int(layers + logits)


def _gib(num_bytes: float) -> str:
  return f"{num_bytes / 2**30:.3f} GiB"


def _flop(count: float) -> str:
  """Four significant digits in the largest unit the count is 0.1 of ("0.4259 TFLOP",
  "0.5123 GFLOP"): a fixed TFLOP scale rounds small models to nothing."""
  for unit, scale in (("T", 1e12), ("G", 1e9)):
    if count >= scale / 10:
      return f"{count / scale:.4g} {unit}FLOP"
  return f"{count / 1e6:.4g} MFLOP"


def describe(experiment: config_lib.ExperimentConfig, num_devices: int) -> dict:
  cfg = dataclasses.replace(experiment.model)
  if cfg.vocab_size is None:
    cfg.vocab_size = resolved_vocab_size(experiment.data)
  params, param_specs = model.abstract_params(cfg)
  rules = partitioning.logical_rules(experiment.mesh)
  mesh_shape = partitioning.resolve_mesh_shape(experiment.mesh, num_devices)
  axis_sizes = dict(zip(experiment.mesh.axes, mesh_shape))
  optimizer = optimizers.make_optimizer(experiment.optimizer, experiment.train.steps, param_specs)
  opt_shapes = jax.eval_shape(optimizer.init, params)
  opt_specs = train_state.opt_state_logical_axes(optimizer, param_specs, params)
  param_bytes = partitioning.per_device_bytes(params, param_specs, axis_sizes, rules)
  opt_bytes = partitioning.per_device_bytes(opt_shapes, opt_specs, axis_sizes, rules)
  data_ways = partitioning.batch_ways(rules, axis_sizes)
  per_device_batch = -(-experiment.train.batch_size // experiment.train.grad_accum_steps // data_ways)
  data = experiment.data
  activations = activation_bytes_estimate(cfg, per_device_batch, data.inputs_length, data.targets_length)
  counts = parameter_breakdown(params)
  return {
      "experiment": experiment.name,
      "parameters": counts,
      "total_parameters": sum(counts.values()),
      "train_flops_per_sequence": flops.train_flops_per_sequence(
          cfg, data.inputs_length, data.targets_length),
      "mesh": dict(axis_sizes),
      "rules_preset": experiment.mesh.rules_preset,
      "memory_per_device_bytes": {
          "parameters": param_bytes,
          "gradients": param_bytes,
          "optimizer_state": opt_bytes,
          "activations_estimate": activations,
          "total_estimate": 2 * param_bytes + opt_bytes + activations,
      },
      "per_device_microbatch": per_device_batch,
      "activation_dtype": np.dtype(model.activation_dtype(cfg)).name,
  }


def resolved_vocab_size(data: config_lib.DataConfig) -> int:
  """The model's vocabulary size when model.vocab_size is None: that of data.vocabulary,
  or of the vocabulary a run would train (pieces + extra ids, padded to 128)."""
  from t5x_lite.data import vocabulary  # SentencePiece, only when needed.
  if data.vocabulary:
    return vocabulary.load_vocabulary(data.vocabulary, data.vocab_extra_ids).vocab_size
  return vocabulary.padded_size(data.vocab_train_size + data.vocab_extra_ids)


def format_report(report: dict) -> str:
  lines = [f"experiment: {report['experiment']}", "parameters:"]
  for name, count in report["parameters"].items():
    lines.append(f"  {name:<12} {count:>16,}")
  lines.append(f"  {'total':<12} {report['total_parameters']:>16,}")
  lines.append(f"model FLOPs per training sequence: {_flop(report['train_flops_per_sequence'])}")
  mesh = " x ".join(f"{k}={v}" for k, v in report["mesh"].items())
  lines.append(f"mesh: {mesh} (rules: {report['rules_preset']}), "
               f"per-device microbatch {report['per_device_microbatch']}")
  lines.append(f"training memory per device (activations in {report['activation_dtype']}):")
  for name, value in report["memory_per_device_bytes"].items():
    lines.append(f"  {name:<22} {_gib(value):>14}")
  if "compiled" in report:
    lines.extend(_format_compiled(report["compiled"]))
  return "\n".join(lines)


def _format_compiled(compiled: dict) -> list[str]:
  where = f"{compiled['devices']} x {compiled['device_kind']}"
  if "compiler_message" in compiled:
    return [f"compiled train step for {where}: does NOT fit: {compiled['compiler_message']}"]
  lines = [f"compiled train step per device, {where} "
           f"({compiled['compile_s']:.1f} s to compile on this machine):"]
  for name, value in compiled["memory_per_device_bytes"].items():
    lines.append(f"  {name:<22} {_gib(value):>14}")
  lines.append(f"  {'fused attention calls':<22} {compiled['fused_attention_calls']:>14}")
  if compiled.get("xla_flops_ratio"):
    lines.append(f"  XLA's FLOPs of the step: {compiled['xla_flops_ratio']:.3f} x the model FLOPs "
                 f"(recomputation included)")
  if "device_memory_bytes" in compiled:
    usable = compiled["memory_fraction"] * compiled["device_memory_bytes"]
    budget = (f"the {_gib(usable)} jax may use ({compiled['memory_fraction']:.0%} of "
              f"{_gib(compiled['device_memory_bytes'])}, XLA_PYTHON_CLIENT_MEM_FRACTION)")
    if compiled["fits"]:
      lines.append(f"  fits in {budget}")
    else:
      needed = compiled["needed_fraction"]
      remedy = f"XLA_PYTHON_CLIENT_MEM_FRACTION={needed + 0.02:.2f}, or " if needed <= 0.93 else ""
      lines.append(f"  does NOT fit in {budget}; try {remedy}model.remat_policy=dots or full, "
                   f"model.attention_impl=cudnn, a smaller batch or more devices")
  elif compiled.get("fits"):
    lines.append("  fits (the TPU compiler checked it against the chip's memory)")
  return lines


