"""DVC stage `segment`: feature tables → aligned, partitioned, normalised sequences."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import LABELS, MANIFEST, SEGMENTS_DIR, load_section  # noqa: E402
from pipeline.corpus.manifest import read_manifest  # noqa: E402
from pipeline.segment import segment_corpus  # noqa: E402
from pipeline.stage import run_stage  # noqa: E402


def main() -> None:
    params = load_section("segment")
    info, clips = read_manifest(MANIFEST)
    segments = segment_corpus(info, clips, params, labels_path=LABELS)
    segments.save(SEGMENTS_DIR)
    counts = {p: int((segments.partition == p).sum()) for p in ("train", "devel", "test")}
    print(f"segment: {segments.n} sequences of {segments.t.shape[1]} steps at {params.rate_hz} Hz; {counts}")


if __name__ == "__main__":
    run_stage(main)
