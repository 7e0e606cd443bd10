"""Data pipeline: TFDS array_record sources, SentencePiece vocabulary, T5 objectives, packing, loader."""

from t5x_lite.data.errors import DataError
from t5x_lite.data.loader import Loader, make_eval_loader, make_train_loader
from t5x_lite.data.objectives import span_corruption, span_corruption_raw_length
from t5x_lite.data.packing import KEYS as BATCH_KEYS
from t5x_lite.data.vocabulary import Vocabulary, get_vocabulary, train_vocabulary

__all__ = [
    "BATCH_KEYS", "DataError", "Loader", "Vocabulary", "get_vocabulary", "make_eval_loader",
    "make_train_loader", "span_corruption", "span_corruption_raw_length", "train_vocabulary",
]
