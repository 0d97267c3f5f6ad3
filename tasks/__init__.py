"""Downstream evaluation of our checkpoints (lm-evaluation-harness: eval_harness.py)."""
