"""DVC stage `import`: precomputed MuSe-style CSV features (params.yaml `import`) → data/features/import.parquet."""

from pipeline.stage import extract_stage, run_stage

if __name__ == "__main__":
    run_stage(lambda: extract_stage("import"))
