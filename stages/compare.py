"""DVC stage `compare`: openSMILE ComParE_2016 LLDs + deltas (params.yaml `compare`) → data/features/compare.parquet."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.stage import extract_stage, run_stage  # noqa: E402

if __name__ == "__main__":
    run_stage(lambda: extract_stage("compare"))
