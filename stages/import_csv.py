"""DVC stage `import`: precomputed MuSe-style CSV features (params.yaml `import`) → data/features/import.parquet."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.stage import extract_stage, run_stage  # noqa: E402

if __name__ == "__main__":
    run_stage(lambda: extract_stage("import"))
