"""DVC stage `lld`: openSMILE eGeMAPSv02 low-level descriptors (params.yaml `lld`) → data/features/egemaps.parquet."""

from pipeline.core.stage import run_stage
from pipeline.extract.stage import extract_stage

if __name__ == "__main__":
    run_stage(lambda: extract_stage("egemaps"))
