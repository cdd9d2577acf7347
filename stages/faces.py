"""DVC stage `faces`: MTCNN face detection and crops on every clip (params.yaml `faces`)
→ data/faces/detections.parquet, data/errors/faces.csv. Runs `FacesExtractor` on the one extraction
runner: clips already detected under the same params are read from the per-clip cache
(data/cache/faces, `MER_CACHE_DIR`)."""

from pipeline.core.config import load_section
from pipeline.core.paths import CACHE_DIR, FACES, MANIFEST
from pipeline.core.stage import run_stage
from pipeline.core.store import read_table
from pipeline.corpus.manifest import read_manifest
from pipeline.extract.faces import FacesExtractor
from pipeline.extract.runner import RunStats, extract_corpus


def main() -> None:
    params = load_section("faces")
    info, clips = read_manifest(MANIFEST)
    if info.params.get("feature_only"):  # e.g. Ulm-TSST without its videos: nothing to detect faces in
        print(f"faces: the corpus '{info.name}' has no media (feature-only): the table has no rows")
        clips = []
    stats = RunStats()
    out = extract_corpus(FacesExtractor(params), clips, out=FACES, on_error=params.on_error, cache_dir=CACHE_DIR, stats=stats)
    present = read_table(out, columns=["present"]).column("present")
    found = sum(int(c.to_numpy(zero_copy_only=False).sum()) for c in present.chunks)
    print(
        f"faces: {len(clips) - len(stats.errors)} clips ({stats.extracted} detected, {stats.cached} from the cache), "
        f"{found}/{len(present)} steps with a face, {len(stats.errors)} skipped → {out}"
    )


if __name__ == "__main__":
    run_stage(main)
