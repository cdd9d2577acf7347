"""DVC stage `lld`: openSMILE eGeMAPSv02 low-level descriptors (params.yaml `lld`) → data/features/egemaps.parquet."""

from pipeline.stage import extract_stage, run_stage

if __name__ == "__main__":
    run_stage(lambda: extract_stage("egemaps"))
