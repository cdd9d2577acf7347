"""DVC stage `segment`: feature tables → aligned, partitioned, normalised sequences."""

from pipeline.core.config import load_section
from pipeline.core.paths import LABELS, MANIFEST, SEGMENTS_DIR
from pipeline.core.stage import run_stage
from pipeline.corpus.manifest import read_manifest
from pipeline.segment.stage import segment_to


def main() -> None:
    params = load_section("segment")
    info, clips = read_manifest(MANIFEST)
    segments = segment_to(SEGMENTS_DIR, info, clips, params, labels_path=LABELS)  # streamed: bounded memory
    counts = {p: int((segments.partition == p).sum()) for p in ("train", "devel", "test")}
    if params.layout == "aligned":
        shape = f"{segments.n} sequences of {segments.t.shape[1]} steps at {params.rate_hz} Hz"
    elif params.layout == "native":
        steps = ", ".join(f"{m} {v.shape[1]}" for m, v in segments.x.items())
        shape = f"{segments.n} sequences, each modality at its own rate (steps: {steps})"
    else:
        what = "windows" if params.layout == "windows" else "samples"
        stacked = "".join(f"; {m} stacks {k} rows per frame" for m, k in segments.extra.get("stack", {}).items())
        shape = (f"{segments.n} {what} of {segments.t.shape[1]} steps at {params.rate_hz} Hz from "
                 f"{len(set(segments.clip_id.tolist()))} clips{stacked}")
    layout = "" if params.layout == "aligned" else f"layout {params.layout}: "
    print(f"segment: {layout}{shape}; {counts}")
    if "continuous_labels" in segments.extra:
        print(f"segment: the corpus's arousal/valence are {segments.extra['continuous_labels']}")


if __name__ == "__main__":
    run_stage(main)
