"""DVC stage `wav2vec2`: wav2vec 2.0 features (CNN output or hidden states) (params.yaml `wav2vec2`) → data/features/wav2vec2.parquet."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.stage import extract_stage, run_stage  # noqa: E402

if __name__ == "__main__":
    run_stage(lambda: extract_stage("wav2vec2"))
