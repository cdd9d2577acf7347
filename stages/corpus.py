"""DVC stage `corpus`: generate the demo corpus (params.yaml `corpus`)
→ data/corpus/media/<clip_id>.mp4, data/corpus/manifest.parquet, data/corpus/labels.parquet."""

from pathlib import Path

from pipeline.config import load_section
from pipeline.corpus.demo import CorpusError, generate_demo
from pipeline.corpus.manifest import write_labels, write_manifest
from pipeline.paths import CORPUS_DIR, LABELS, MANIFEST
from pipeline.stage import run_stage


def remove_stale_media(media_dir: Path, keep: set[str]) -> list[Path]:
    """Delete clips no longer in the corpus (and temporary files a killed run left behind)."""
    removed = []
    for f in sorted(media_dir.glob("*")):
        if f.is_file() and (f.name.startswith(".") or f.name not in keep):
            f.unlink()
            removed.append(f)
    return removed


def main() -> None:
    params = load_section("corpus")
    info, clips, labels = generate_demo(params, CORPUS_DIR)
    try:
        removed = remove_stale_media(CORPUS_DIR / "media", {Path(c.media_path).name for c in clips})
        write_labels(LABELS, labels)
        write_manifest(MANIFEST, info, clips)
    except OSError as e:
        raise CorpusError(f"{e.filename or CORPUS_DIR}: cannot write ({e.strerror or e})") from None
    print(
        f"corpus: {len(clips)} clips of {params.seconds:g} s from {params.speakers} speakers "
        f"({sum(c.transcript is None for c in clips)} without transcript, "
        f"{len(removed)} stale files removed) → {MANIFEST}"
    )


if __name__ == "__main__":
    run_stage(main)
