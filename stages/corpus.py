"""DVC stage `corpus`: the corpus named by params.yaml `corpus.name` → data/corpus/manifest.parquet,
data/corpus/labels.parquet and data/errors/corpus.csv (pipeline/corpus/stage.py)."""

from pipeline.core.stage import run_stage
from pipeline.corpus.stage import main

if __name__ == "__main__":
    run_stage(main)
