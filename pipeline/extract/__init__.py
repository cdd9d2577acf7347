"""Feature extraction: one extractor protocol (base.py), one runner with the per-clip cache (runner.py,
cache.py), a registry by feature name (registry.py), and one module per extractor."""
