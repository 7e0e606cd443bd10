"""Training: the sharded steps (step.py), the loop with resume and preemption (loop.py),
and the hooks it reports through (callbacks.py)."""
