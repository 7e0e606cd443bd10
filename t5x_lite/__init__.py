"""t5x-lite: T5 pretraining, fine-tuning and evaluation in JAX, from Python or the shell.

    import t5x_lite

    config = t5x_lite.load_experiment("tiny_python_docs", ["train.steps=100"])
    result = t5x_lite.train(config, "runs/tiny")
    model = t5x_lite.load("runs/tiny")
    model.generate(["def add(a, b):"])

The names below are imported on first use (PEP 562): `import t5x_lite` loads no JAX.
"""

from typing import TYPE_CHECKING

from t5x_lite import _lazy

__version__ = "0.1.0"

_EXPORTS = {
    "load": ("t5x_lite.api", "load"),
    "Model": ("t5x_lite.api", "Model"),
    "train": ("t5x_lite.training.loop", "train"),
    "TrainResult": ("t5x_lite.training.loop", "TrainResult"),
    "Callback": ("t5x_lite.training.callbacks", "Callback"),
    "ProgressBarCallback": ("t5x_lite.training.callbacks", "ProgressBarCallback"),
    "load_experiment": ("t5x_lite.config.experiments", "load_experiment"),
    "ExperimentConfig": ("t5x_lite.config.schema", "ExperimentConfig"),
    "UserError": ("t5x_lite.errors", "UserError"),
    "ConfigError": ("t5x_lite.errors", "ConfigError"),
    "Task": ("t5x_lite.data.tasks", "Task"),
    "Mixture": ("t5x_lite.data.tasks", "Mixture"),
    "register_task": ("t5x_lite.data.tasks", "register_task"),
    "register_mixture": ("t5x_lite.data.tasks", "register_mixture"),
}

__all__ = ["Callback", "ConfigError", "ExperimentConfig", "Mixture", "Model", "ProgressBarCallback",
           "Task", "TrainResult", "UserError", "load", "load_experiment", "register_mixture",
           "register_task", "train"]
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:  # For type checkers and IDEs; at run time __getattr__ imports them.
  from t5x_lite.api import Model, load
  from t5x_lite.config.experiments import load_experiment
  from t5x_lite.config.schema import ExperimentConfig
  from t5x_lite.data.tasks import Mixture, Task, register_mixture, register_task
  from t5x_lite.errors import ConfigError, UserError
  from t5x_lite.training.callbacks import Callback, ProgressBarCallback
  from t5x_lite.training.loop import TrainResult, train


__getattr__, __dir__ = _lazy.exports(__name__, _EXPORTS)
