"""DVC stage `wav2vec2`: wav2vec 2.0 features (CNN output or hidden states) (params.yaml `wav2vec2`) → data/features/wav2vec2.parquet."""

from pipeline.core.stage import run_stage
from pipeline.extract.stage import extract_stage

if __name__ == "__main__":
    run_stage(lambda: extract_stage("wav2vec2"))
