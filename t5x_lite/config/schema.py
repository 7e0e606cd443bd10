"""The experiment configuration's sections: one dataclass each, and ExperimentConfig holding them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class ModelConfig:
  """Architecture of the encoder-decoder. Defaults are T5.1.1-base."""

  # encoder_decoder (T5) | decoder_only (T5's prefix LM: one stack over the inputs and targets
  # concatenated, attending bidirectionally over the inputs and causally over the targets; its
  # layers are num_decoder_layers, and num_encoder_layers must be 0)
  architecture: str = "encoder_decoder"
  # None: taken from the vocabulary (SentencePiece pieces + extra ids, padded to 128).
  vocab_size: Optional[int] = 32128
  d_model: int = 768
  d_ff: int = 2048
  num_heads: int = 12
  d_kv: int = 64
  num_encoder_layers: int = 12
  num_decoder_layers: int = 12
  # relu | gelu | gated-gelu | gated-relu | swiglu
  ffn_activation: str = "gated-gelu"
  # T5.1.0 style: logits from the input embedding, scaled by d_model**-0.5.
  tie_logits: bool = False
  # rmsnorm (scale only, T5) | layernorm (scale and bias)
  norm: str = "rmsnorm"
  norm_eps: float = 1e-6
  # relative (T5's bucketed bias, one table per stack) | relative_per_layer (one table in every
  # layer's self-attention, as umT5) | none
  position_scheme: str = "relative"
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  # None: 0.1 when fine-tuning (checkpoint.init_from set), else 0.0 as in T5.1.1 pretraining.
  dropout_rate: Optional[float] = None
  # True: one dropout mask per (batch, feature) shared along the length, as T5X and Mesh
  # TensorFlow; False: one per element, as Hugging Face's T5.
  dropout_shared_over_length: bool = True
  # Stack layers with nn.scan: one compiled layer, stacked parameters.
  scan_layers: bool = False
  # What the backward pass keeps: none (everything; no recomputation) | minimal (every
  # matmul output and the attention weights: norms and activation functions recomputed) |
  # dots (matmul outputs: attention weights recomputed) | dots_no_batch (weight matmuls'
  # outputs: all of attention recomputed) | full (layer inputs only) | compiler (no jax
  # remat: XLA keeps what autodiff saves and may rematerialise on its own, as the TPU compiler
  # does to fit a chip; unrolled layers only)
  remat_policy: str = "none"
  # Activation dtype: auto = bfloat16 on GPU/TPU, float32 on CPU.
  dtype: str = "auto"
  param_dtype: str = "float32"
  # Attention implementation: xla (einsum reference) | cudnn (fused, GPU only) | auto.
  attention_impl: str = "xla"

  @property
  def gated_ffn(self) -> bool:
    """Gated FFNs multiply the activation by a second linear branch (three matrices)."""
    return self.ffn_activation.startswith("gated") or self.ffn_activation == "swiglu"


@dataclass
class DataConfig:
  """Where text comes from and how it becomes fixed-shape batches."""

  # TFDS dataset name ("c4/en:3.1.0"), "python_docs" for the built-in corpus, or a registered
  # task or mixture (t5x_lite.data.register_task / register_mixture) with its own objective.
  dataset: str = "python_docs"
  # The Python file (or module) that registers data.dataset's task or mixture, imported before
  # it is looked up; set to the experiment file when that is where the name was registered, so
  # eval, infer and resume from config.json find it too.
  tasks_module: str = ""
  # TFDS data_dir; None = ~/tensorflow_datasets (or $TFDS_DATA_DIR).
  data_dir: Optional[str] = None
  text_feature: str = "text"
  train_split: str = "train"
  eval_split: str = "validation"
  # For seq2seq datasets: the input and target text features.
  inputs_feature: str = "inputs"
  targets_feature: str = "targets"
  # Path to a SentencePiece .model, "bytes" for UTF-8 bytes (ByT5's), or "" to train one on the training split.
  vocabulary: str = ""
  # Pieces of a vocabulary trained here (before the extra ids).
  vocab_train_size: int = 32000
  vocab_extra_ids: int = 100
  # span_corruption | prefix_lm | ul2 (UL2's mixture of denoisers, docs/ul2.md) | seq2seq
  objective: str = "span_corruption"
  inputs_length: int = 512
  targets_length: int = 114
  noise_density: float = 0.15
  mean_noise_span_length: float = 3.0
  # Pretraining objectives read T5's stream: a random chunk of at most max_document_tokens of
  # each document, documents concatenated and cut into full-length examples (False: each
  # document cut on its own, the short pieces packed together).
  concatenate_documents: bool = True
  max_document_tokens: int = 65536
  pack: bool = True
  # SentencePiece's threads tokenizing each block of documents (-1: one per CPU core).
  num_workers: int = 2
  # grain worker processes reading and tokenizing blocks ahead (0: in the loader's thread).
  worker_processes: int = 0
  prefetch: int = 4
  # Independent training streams the global batch is split into (0 = one per
  # process). A multiple of every process count you use gives the same batches
  # on any number of processes, and lets a checkpoint resume on another count.
  shards: int = 0
  # Documents of the eval split used per evaluation (None = all of it).
  max_eval_examples: Optional[int] = None
  # Metrics after decoding, for seq2seq tasks: exact_match (always), bleu, rouge.
  eval_metrics: tuple[str, ...] = ("exact_match",)


@dataclass
class OptimizerConfig:
  # adafactor | adamw
  name: str = "adafactor"
  # rsqrt (T5: lr/sqrt(max(step, warmup))) | cosine | constant
  schedule: str = "rsqrt"
  learning_rate: float = 1.0
  warmup_steps: int = 10000
  # For cosine: fraction of the peak the schedule decays to.
  final_learning_rate_fraction: float = 0.0
  # Global-norm clipping; 0 disables it.
  grad_clip_norm: float = 0.0
  weight_decay: float = 0.0
  # Adafactor (T5 defaults).
  decay_rate: float = 0.8
  clipping_threshold: float = 1.0
  multiply_by_parameter_scale: bool = True
  factored: bool = True
  min_dim_size_to_factor: int = 128
  epsilon1: float = 1e-30
  epsilon2: float = 1e-3
  # AdamW.
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8


@dataclass
class TrainConfig:
  steps: int = 1000
  batch_size: int = 128
  seed: int = 0
  eval_every: int = 500
  log_every: int = 50
  # Microbatches per step (gradient accumulation); the batch must divide by it.
  grad_accum_steps: int = 1
  z_loss: float = 1e-4
  label_smoothing: float = 0.0
  # Target positions per chunk of the output projection and loss (0 = all at once): the
  # full (batch, length, vocab) logits then never exist, at the cost of recomputing each
  # chunk's in the backward pass. Must divide data.targets_length.
  loss_chunk_size: int = 0
  # Peak FLOP/s of one device for MFU; 0 = known devices only.
  peak_flops_per_device: float = 0.0
  # Where metrics go besides WORKDIR/metrics.jsonl (always written): any of tensorboard
  # (WORKDIR/tensorboard) | wandb (Weights & Biases: pip install "t5x-lite[wandb]"; it obeys
  # WANDB_MODE, e.g. offline). () = metrics.jsonl only.
  loggers: tuple[str, ...] = ("tensorboard",)
  # The W&B project, and entity (user or team; "" = your default, or $WANDB_ENTITY).
  wandb_project: str = "t5x-lite"
  wandb_entity: str = ""


@dataclass
class MeshConfig:
  """Named device mesh; -1 in shape means "all remaining devices"."""

  axes: tuple[str, ...] = ("data", "model")
  shape: tuple[int, ...] = (-1, 1)
  # data_parallel | fsdp | model_parallel | 2d, or "custom" with `rules` below.
  rules_preset: str = "data_parallel"
  # Custom logical-axis rules, e.g. (("batch", "data"), ("mlp", "model")).
  rules: tuple[tuple[str, Any], ...] = ()


@dataclass
class CheckpointConfig:
  every_steps: int = 1000
  keep: int = 3
  # Also keep the best checkpoint by this validation metric ("" = off).
  keep_best_metric: str = ""
  async_save: bool = True
  # Start from the parameters of this checkpoint (a workdir or checkpoints dir).
  init_from: str = ""
  init_from_step: Optional[int] = None


@dataclass
class ExperimentConfig:
  model: ModelConfig = field(default_factory=ModelConfig)
  data: DataConfig = field(default_factory=DataConfig)
  optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  mesh: MeshConfig = field(default_factory=MeshConfig)
  checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
  # Free-form name shown in logs and comparisons.
  name: str = ""
