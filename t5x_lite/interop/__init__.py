"""Checkpoint formats in and out of t5x-lite workdirs: Hugging Face folders (hf) and T5X's own
checkpoints (t5x)."""
