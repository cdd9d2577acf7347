"""DVC stage `compare`: openSMILE ComParE_2016 LLDs + deltas (params.yaml `compare`) → data/features/compare.parquet."""

from pipeline.core.stage import run_stage
from pipeline.extract.stage import extract_stage

if __name__ == "__main__":
    run_stage(lambda: extract_stage("compare"))
