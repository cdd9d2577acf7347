"""DVC stage `import`: precomputed MuSe-style CSV features (params.yaml `import`) → data/features/import.parquet."""

from pipeline.extract.stage import extract_stage
from pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(lambda: extract_stage("import"))
