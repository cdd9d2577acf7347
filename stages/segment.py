"""DVC stage `segment`: feature tables → aligned, partitioned, normalised sequences."""

from pipeline.config import load_section
from pipeline.corpus.manifest import read_manifest
from pipeline.paths import LABELS, MANIFEST, SEGMENTS_DIR
from pipeline.segment import segment_corpus
from pipeline.stage import run_stage


def main() -> None:
    params = load_section("segment")
    info, clips = read_manifest(MANIFEST)
    segments = segment_corpus(info, clips, params, labels_path=LABELS)
    segments.save(SEGMENTS_DIR)
    counts = {p: int((segments.partition == p).sum()) for p in ("train", "devel", "test")}
    print(f"segment: {segments.n} sequences of {segments.t.shape[1]} steps at {params.rate_hz} Hz; {counts}")


if __name__ == "__main__":
    run_stage(main)
