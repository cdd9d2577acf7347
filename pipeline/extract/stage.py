"""The body of every extraction stage: params section → extractor → every clip of the manifest →
data/features/<feature>.parquet (+ data/errors/<feature>.csv), through the one runner."""

from __future__ import annotations

from functools import partial


def extract_stage(feature: str, clips: list | None = None) -> None:
    """Extract `feature` for the corpus's clips (or `clips`, e.g. none) and print a summary."""
    from pipeline.core.config import load_section
    from pipeline.core.paths import CACHE_DIR, MANIFEST
    from pipeline.corpus.manifest import read_manifest
    from pipeline.extract.registry import EXTRACTORS, build_extractor
    from pipeline.extract.runner import RunStats, extract_corpus

    entry = EXTRACTORS[feature]
    section = load_section(entry.section)
    on_error = section.on_error
    if clips is None:
        info, clips = read_manifest(MANIFEST)  # before the model loads: a missing manifest fails fast
        if feature != "import" and info.params.get("feature_only"):
            print(f"{feature}: the corpus '{info.name}' has no media (feature-only: its features come through the "
                  "`import` stage): the table has no rows")
            clips = []
    extractor = build_extractor(feature)
    stats = RunStats()
    # Ray workers (MER_BACKEND=ray) each build their own extractor from the same section
    out = extract_corpus(extractor, clips, on_error=on_error, cache_dir=CACHE_DIR, stats=stats, factory=partial(entry.build, section))
    meta = extractor.meta()
    rate = "per word" if meta.rate_hz is None else f"at {meta.rate_hz:g} Hz"
    print(
        f"{feature}: {len(clips)} clips ({stats.extracted} extracted, {stats.cached} from the cache "
        f"{CACHE_DIR}, {len(stats.errors)} skipped), {meta.dim}-d {rate} → {out}"
    )
    print(f"{feature}: {meta.weights_statement}")
