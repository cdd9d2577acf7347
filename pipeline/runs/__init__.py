"""One trained run: its params, its files (model.pt, history), feeding it (splits, tensors, forward,
predict) and its metrics."""
