"""DVC stage `import`: precomputed MuSe-style CSV features (params.yaml `import`) → data/features/import.parquet,
and one table per `import.sources` entry → data/features/import/<name>.parquet (feature `import/<name>`).

A corpus that ships no such features (import.dir holds no file matching import.pattern: CREMA-D,
IEMOCAP, …) gets a table without rows, and the stage says so: the `import` feature is then missing for
every clip (a modality built on it in segment.modalities is absent throughout).
"""

from pipeline.core.stage import run_stage
from pipeline.extract.stage import import_stage

if __name__ == "__main__":
    run_stage(import_stage)
