"""DVC stage `corpus`: generate the demo corpus → data/corpus/{manifest,labels}.parquet + media/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import CORPUS_DIR, LABELS, MANIFEST, load_section  # noqa: E402
from pipeline.corpus.demo import generate_demo  # noqa: E402
from pipeline.corpus.manifest import write_labels, write_manifest  # noqa: E402
from pipeline.stage import run_stage  # noqa: E402


def main() -> None:
    params = load_section("corpus")
    info, clips, labels = generate_demo(params, CORPUS_DIR)
    keep = {Path(c.media_path).name for c in clips}
    for stale in (CORPUS_DIR / "media").glob("*.mp4"):  # clips no longer in the corpus
        if stale.name not in keep:
            stale.unlink()
    write_labels(LABELS, labels)
    write_manifest(MANIFEST, info, clips)
    print(f"corpus: {len(clips)} clips of {params.seconds:g} s from {params.speakers} speakers → {MANIFEST}")


if __name__ == "__main__":
    run_stage(main)
