"""Data: tasks and mixtures, TFDS array_record sources, the vocabularies (SentencePiece and
bytes), T5's and UL2's objectives, packing and the grain pipeline.

The names below are imported on first use (PEP 562), so importing one submodule (say the
pure-NumPy packing code) does not load the loader, TFDS or SentencePiece.
"""

from t5x_lite import _lazy

_EXPORTS = {
    "BATCH_KEYS": ("t5x_lite.data.packing", "KEYS"),
    "DataError": ("t5x_lite.data.errors", "DataError"),
    "DatasetSource": ("t5x_lite.data.tasks", "DatasetSource"),
    "Denoiser": ("t5x_lite.data.ul2", "Denoiser"),
    "Feature": ("t5x_lite.data.tasks", "Feature"),
    "GeneratorSource": ("t5x_lite.data.tasks", "GeneratorSource"),
    "Loader": ("t5x_lite.data.pipeline", "Loader"),
    "Mixture": ("t5x_lite.data.tasks", "Mixture"),
    "PrefixLM": ("t5x_lite.data.objectives", "PrefixLM"),
    "RateNumExamples": ("t5x_lite.data.tasks", "RateNumExamples"),
    "Seq2Seq": ("t5x_lite.data.objectives", "Seq2Seq"),
    "SpanCorruption": ("t5x_lite.data.objectives", "SpanCorruption"),
    "TOKENIZE": ("t5x_lite.data.tasks", "TOKENIZE"),
    "Task": ("t5x_lite.data.tasks", "Task"),
    "UL2": ("t5x_lite.data.objectives", "UL2"),
    "UL2_DENOISERS": ("t5x_lite.data.ul2", "UL2_DENOISERS"),
    "get_task": ("t5x_lite.data.tasks", "get"),
    "make_eval_loader": ("t5x_lite.data.pipeline", "make_eval_loader"),
    "make_train_loader": ("t5x_lite.data.pipeline", "make_train_loader"),
    "register_mixture": ("t5x_lite.data.tasks", "register_mixture"),
    "register_task": ("t5x_lite.data.tasks", "register_task"),
    "registered": ("t5x_lite.data.tasks", "registered"),
    "span_corruption": ("t5x_lite.data.objectives", "span_corruption"),
    "span_corruption_raw_length": ("t5x_lite.data.objectives", "span_corruption_raw_length"),
    "ByteVocabulary": ("t5x_lite.data.vocabulary", "ByteVocabulary"),
    "SentencePieceVocabulary": ("t5x_lite.data.vocabulary", "SentencePieceVocabulary"),
    "Vocabulary": ("t5x_lite.data.vocabulary", "Vocabulary"),
    "get_vocabulary": ("t5x_lite.data.vocabulary", "get_vocabulary"),
    "load_vocabulary": ("t5x_lite.data.vocabulary", "load_vocabulary"),
    "train_vocabulary": ("t5x_lite.data.vocabulary", "train_vocabulary"),
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = _lazy.exports(__name__, _EXPORTS)
