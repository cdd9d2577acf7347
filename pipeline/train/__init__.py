"""Training: one run's loop (loop.py), recipes (optimiser, schedule, early stopping), the grid of
models × strategies (grid.py) and a family's runs over seeds × folds × rates (families.py)."""
