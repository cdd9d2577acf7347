"""The body of every extraction stage: params section → extractor → every clip of the manifest →
data/features/<feature>.parquet (+ data/errors/<feature>.csv), through the one runner. The `import`
stage runs it once per CSV folder (`import_stage`)."""

from __future__ import annotations

from functools import partial
from typing import Callable


def extract_stage(feature: str, clips: list | None = None) -> None:
    """Extract `feature` for the corpus's clips (or `clips`, e.g. none) and print a summary."""
    from pipeline.core.config import load_section
    from pipeline.extract.registry import EXTRACTORS

    entry = EXTRACTORS[feature]
    section = load_section(entry.section)
    if clips is None:
        info, clips = _manifest()
        if feature != "import" and info.params.get("feature_only"):
            print(f"{feature}: the corpus '{info.name}' has no media (feature-only: its features come through the "
                  "`import` stage): the table has no rows")
            clips = []
    run_extractor(feature, partial(entry.build, section), clips, section.on_error)


def import_stage() -> None:
    """The `import` stage: the section's CSV folder (feature `import`) and each of its `sources` (feature
    `import/<name>`), each its own table. A folder holding no matching file gives a table without rows
    (a corpus without such features: the modality built on it is missing throughout), and says so."""
    from pipeline.core.config import load_section
    from pipeline.core.paths import ERRORS_DIR, FEATURES_DIR
    from pipeline.extract.csv_import import FEATURE, CsvImport, no_feature_files

    section = load_section("import")
    _, clips = _manifest()
    for folder in (FEATURES_DIR / FEATURE, ERRORS_DIR / FEATURE):  # the sources' tables (DVC outputs, maybe empty)
        folder.mkdir(parents=True, exist_ok=True)
    if not section.sources:
        print(f"{FEATURE}: no import.sources: {FEATURES_DIR / FEATURE} and {ERRORS_DIR / FEATURE} stay empty "
              "(DVC warns that they are)")
    for feature, params in section.features().items():
        empty = no_feature_files(params)
        if empty:
            print(f"{feature}: {params.dir} holds no file matching '{params.pattern}': this corpus has no precomputed "
                  "features there, the table has no rows")
        run_extractor(feature, partial(CsvImport, params, name=feature), [] if empty else clips, params.on_error)


def _manifest() -> tuple:
    from pipeline.core.paths import MANIFEST
    from pipeline.corpus.manifest import read_manifest

    return read_manifest(MANIFEST)  # before a model loads: a missing manifest fails fast


def run_extractor(feature: str, factory: Callable, clips: list, on_error: str) -> None:
    """Run the extractor `factory` builds over `clips` into its table and print a summary. Ray workers
    (MER_BACKEND=ray) and pool helpers each build their own extractor with `factory`."""
    from pipeline.core.paths import CACHE_DIR
    from pipeline.extract.runner import RunStats, extract_corpus

    extractor = factory()
    stats = RunStats()
    out = extract_corpus(extractor, clips, on_error=on_error, cache_dir=CACHE_DIR, stats=stats, factory=factory)
    meta = extractor.meta()
    rate = "per word" if meta.rate_hz is None else f"at {meta.rate_hz:g} Hz"
    print(
        f"{feature}: {len(clips)} clips ({stats.extracted} extracted, {stats.cached} from the cache "
        f"{CACHE_DIR}, {len(stats.errors)} skipped), {meta.dim}-d {rate} → {out}"
    )
    print(f"{feature}: {meta.weights_statement}")
