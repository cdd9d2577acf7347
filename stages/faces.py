"""DVC stage `faces`: MTCNN face detection and crops on every clip (params.yaml `faces`)
→ data/faces/detections.parquet, data/errors/faces.csv. Clips already detected under the same
params are read from the per-clip cache (data/cache/faces, `MER_CACHE_DIR`)."""

from pipeline.config import CACHE_DIR, FACES, MANIFEST, load_section
from pipeline.corpus.manifest import read_manifest
from pipeline.extract.faces import detect_corpus, read_detections
from pipeline.stage import run_stage


def main() -> None:
    params = load_section("faces")
    _, clips = read_manifest(MANIFEST)
    out = detect_corpus(clips, params, out=FACES, cache_root=CACHE_DIR)
    meta, detections = read_detections(out)
    steps = sum(len(d) for d in detections.values())
    found = sum(int(d.present.sum()) for d in detections.values())
    print(f"faces: {len(detections)} clips, {found}/{steps} steps with a face, {len(meta['skipped'])} skipped → {out}")


if __name__ == "__main__":
    run_stage(main)
