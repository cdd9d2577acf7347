"""Evaluation: the condition grid over trained runs (grid.py), streamed scoring, per-clip scores,
robustness summaries, statistics and 000's importance search."""
