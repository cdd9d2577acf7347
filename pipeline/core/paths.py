"""Where everything lives: every path under data/ once, relative to the repository root (the working
directory of `dvc repro` and of `mer`), plus the params file and the repository root itself."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = "params.yaml"

DATA = Path("data")
CORPUS_DIR = DATA / "corpus"
MANIFEST = CORPUS_DIR / "manifest.parquet"
LABELS = CORPUS_DIR / "labels.parquet"
FACES_DIR = DATA / "faces"
FACES = FACES_DIR / "detections.parquet"
FEATURES_DIR = DATA / "features"
SEGMENTS_DIR = DATA / "segments"
MODELS_DIR = DATA / "models"
IMPORTANCE_DIR = DATA / "importance"
EVALUATE_DIR = DATA / "evaluate"
REPORT_DIR = DATA / "report"
ERRORS_DIR = DATA / "errors"
# Per-clip extraction cache (pipeline/extract/cache.py): not a DVC output, survives stage reruns.
CACHE_DIR = Path(os.environ.get("MER_CACHE_DIR", DATA / "cache"))
