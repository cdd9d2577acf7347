"""What every stage script shares: run its main, turning pipeline errors into one clear line."""

from __future__ import annotations

import os
import sys
from typing import Callable

from pipeline.errors import PipelineError


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's main; a PipelineError prints `error: <message>` and exits 1 (no traceback)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def extract_stage(feature: str) -> None:
    """The body of an extraction stage: params section → extractor → every clip of the manifest →
    data/features/<feature>.parquet (+ data/errors/<feature>.csv)."""
    from pipeline.config import CACHE_DIR, MANIFEST, load_section
    from pipeline.corpus.manifest import read_manifest
    from pipeline.extract.registry import EXTRACTORS, build_extractor
    from pipeline.extract.runner import RunStats, extract_corpus

    on_error = load_section(EXTRACTORS[feature].section).on_error
    _, clips = read_manifest(MANIFEST)  # before the model loads: a missing manifest fails fast
    extractor = build_extractor(feature)
    stats = RunStats()
    out = extract_corpus(extractor, clips, on_error=on_error, cache_dir=CACHE_DIR, stats=stats)
    meta = extractor.meta()
    rate = "per word" if meta.rate_hz is None else f"at {meta.rate_hz:g} Hz"
    print(
        f"{feature}: {len(clips)} clips ({stats.extracted} extracted, {stats.cached} from the cache "
        f"{CACHE_DIR}, {len(stats.errors)} skipped), {meta.dim}-d {rate} → {out}"
    )
    print(f"{feature}: {meta.weights_statement}")
