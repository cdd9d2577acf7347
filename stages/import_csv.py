"""DVC stage `import`: precomputed MuSe-style CSV features (params.yaml `import`) → data/features/import.parquet.

A corpus that ships no such features (import.dir holds no file matching import.pattern: CREMA-D,
IEMOCAP, …) gets a table without rows, and the stage says so: the `import` feature is then missing for
every clip (a modality built on it in segment.modalities is absent throughout).
"""

from pipeline.core.config import load_section
from pipeline.core.stage import run_stage
from pipeline.extract.stage import extract_stage


def main() -> None:
    from pipeline.extract.csv_import import no_feature_files

    if no_feature_files(load_section("import")):
        extract_stage("import", clips=[])
        params = load_section("import")
        print(f"import: {params.dir} holds no file matching '{params.pattern}': this corpus has no precomputed "
              "features, the table has no rows")
        return
    extract_stage("import")


if __name__ == "__main__":
    run_stage(main)
