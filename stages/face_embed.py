"""DVC stage `face_embed`: VGG-Face fc6 of the face crops (params.yaml `face_embed`)
→ data/features/vggface.parquet, data/errors/vggface.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import FACES, MANIFEST, ConfigError, load_section  # noqa: E402
from pipeline.corpus.manifest import read_manifest  # noqa: E402
from pipeline.extract.base import ExtractionError  # noqa: E402
from pipeline.extract.runner import StageError, extract_corpus  # noqa: E402
from pipeline.extract.vggface import VggFaceExtractor  # noqa: E402
from pipeline.media import MediaError  # noqa: E402
from pipeline.store import StoreError  # noqa: E402


def main() -> int:
    try:
        params = load_section("face_embed")
        _, clips = read_manifest(MANIFEST)
        extractor = VggFaceExtractor(params, detections=FACES)
        out = extract_corpus(extractor, clips, on_error=params.on_error)
    except (ConfigError, StoreError, MediaError, ExtractionError, StageError) as e:
        print(f"face_embed: error: {e}", file=sys.stderr)
        return 1
    meta = extractor.meta()
    print(f"face_embed: {len(clips)} clips, {meta.dim}-d at {meta.rate_hz} Hz ({extractor.precision}) → {out}")
    print(f"face_embed: {meta.weights_statement}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
