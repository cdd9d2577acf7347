"""Corpora: the manifest contract every corpus writes (manifest.py) and the corpora themselves (demo/)."""
