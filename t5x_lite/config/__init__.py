"""Typed experiment configuration: dataclasses, experiment files and --set overrides.

An experiment is a plain Python file defining ``get_config() -> ExperimentConfig``.
Everything a run needs is in that object; it is passed explicitly, never global.

One job per module: schema (the dataclasses), presets (model sizes), validation
(validate() and its tables), overrides (dotted keys and --set), experiments (loading an
experiment file or a run's config.json) and serialization (JSON). This package re-exports
their public names, so ``from t5x_lite.config import ...`` needs no submodule.
"""

from t5x_lite.config.experiments import load_experiment, resolve_experiment_path
from t5x_lite.config.overrides import all_keys, apply_overrides, get_field
from t5x_lite.config.presets import MODEL_PRESETS, byt5, flan_t5, mt5, t5_1_0, t5_1_1, tiny, ul2, umt5
from t5x_lite.config.schema import (
                                    CheckpointConfig,
                                    DataConfig,
                                    ExperimentConfig,
                                    MeshConfig,
                                    ModelConfig,
                                    OptimizerConfig,
                                    TrainConfig,
)
from t5x_lite.config.serialization import from_dict, load_json, save_json, to_dict, to_json
from t5x_lite.config.validation import (
                                    EVAL_METRICS,
                                    LOGGERS,
                                    ROUGE_TYPES,
                                    TEXT_METRICS,
                                    check_metric_names,
                                    check_types,
                                    resolve_dropout,
                                    validate,
                                    validation_metric_names,
)
from t5x_lite.errors import ConfigError, UserError

__all__ = [
    # Errors (defined in t5x_lite.errors).
    "ConfigError", "UserError",
    # Schema.
    "CheckpointConfig", "DataConfig", "ExperimentConfig", "MeshConfig", "ModelConfig",
    "OptimizerConfig", "TrainConfig",
    # Presets.
    "MODEL_PRESETS", "byt5", "flan_t5", "mt5", "t5_1_0", "t5_1_1", "tiny", "ul2", "umt5",
    # Validation.
    "EVAL_METRICS", "LOGGERS", "ROUGE_TYPES", "TEXT_METRICS", "check_metric_names", "check_types",
    "resolve_dropout", "validate", "validation_metric_names",
    # Dotted keys and overrides.
    "all_keys", "apply_overrides", "get_field",
    # Experiment files.
    "load_experiment", "resolve_experiment_path",
    # JSON.
    "from_dict", "load_json", "save_json", "to_dict", "to_json",
]
