"""DVC stage `bert`: word-level BERT embeddings (params.yaml `bert`) → data/features/bert.parquet."""

from pipeline.core.stage import run_stage
from pipeline.extract.stage import extract_stage

if __name__ == "__main__":
    run_stage(lambda: extract_stage("bert"))
