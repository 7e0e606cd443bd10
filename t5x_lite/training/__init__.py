"""Training: the sharded steps (step.py), the loop with resume and preemption (loop.py),
what a resumed or fine-tuned run must share with its checkpoint (resume.py), and the hooks
the loop reports through (callbacks.py)."""
