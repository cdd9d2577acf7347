"""DVC stage `wav2vec2`: manifest → data/features/wav2vec2.parquet (see pipeline/extract/wav2vec2.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import MANIFEST, load_section  # noqa: E402
from pipeline.corpus.manifest import read_manifest  # noqa: E402
from pipeline.extract.wav2vec2 import Wav2Vec2Hidden  # noqa: E402
from pipeline.extract.runner import extract_corpus  # noqa: E402
from pipeline.stage import run_stage  # noqa: E402


def main() -> None:
    params = load_section("wav2vec2")
    _, clips = read_manifest(MANIFEST)
    extractor = Wav2Vec2Hidden(params)
    out = extract_corpus(extractor, clips, on_error=params.on_error)
    print(f"wav2vec2: {len(clips)} clips → {out} ({extractor.meta().weights_statement})")


if __name__ == "__main__":
    run_stage(main)
