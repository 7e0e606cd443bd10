"""Data pipeline: TFDS array_record sources, SentencePiece vocabulary, T5 objectives,
packing and the loader.

The names below are imported on first use (PEP 562), so importing one submodule (say the
pure-NumPy packing code) does not load the loader, TFDS or SentencePiece.
"""

from t5x_lite import _lazy

_EXPORTS = {
    "BATCH_KEYS": ("t5x_lite.data.packing", "KEYS"),
    "DataError": ("t5x_lite.data.errors", "DataError"),
    "Loader": ("t5x_lite.data.loader", "Loader"),
    "make_eval_loader": ("t5x_lite.data.loader", "make_eval_loader"),
    "make_train_loader": ("t5x_lite.data.loader", "make_train_loader"),
    "span_corruption": ("t5x_lite.data.objectives", "span_corruption"),
    "span_corruption_raw_length": ("t5x_lite.data.objectives", "span_corruption_raw_length"),
    "Vocabulary": ("t5x_lite.data.vocabulary", "Vocabulary"),
    "get_vocabulary": ("t5x_lite.data.vocabulary", "get_vocabulary"),
    "train_vocabulary": ("t5x_lite.data.vocabulary", "train_vocabulary"),
}

__all__ = ["BATCH_KEYS", "DataError", "Loader", "Vocabulary", "get_vocabulary", "make_eval_loader",
           "make_train_loader", "span_corruption", "span_corruption_raw_length", "train_vocabulary"]


__getattr__, __dir__ = _lazy.exports(__name__, _EXPORTS)
