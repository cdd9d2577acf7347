"""Faces-stage benchmark (issue 15): the stage's frames/s (`FacesExtractor` on the runner, default
`faces` params, detect_every as in params.yaml) vs a naive loop calling facenet-pytorch's
`MTCNN.detect` on one frame at a time, on the same generated demo clips, in the same run, with the
detection counts of both (the target: ≥ 3× at equal detections).

    python benchmarks/faces.py                      # 4 clips of 2 s, 3 rounds
    python benchmarks/faces.py --clips 10 --rounds 5
    python benchmarks/faces.py --profile            # + cProfile of one stage round (top functions)

Each round times the stage and the naive loop back to back (models built and warmed up outside the
timings); the figures are the best round of each, in wall-clock seconds and in this process's CPU
seconds (less sensitive to other processes on a shared machine). Ends by printing ONE JSON line.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.core.config import load_section  # noqa: E402
from pipeline.corpus.demo import generate_demo  # noqa: E402
from pipeline.corpus.demo.params import CorpusParams  # noqa: E402
from pipeline.extract.faces import FacesExtractor, read_detections  # noqa: E402
from pipeline.extract.runner import extract_corpus  # noqa: E402
from pipeline.media import iter_video_frames  # noqa: E402

PARAMS = REPO / "params.yaml"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(fn, *a, **kw):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*a, **kw)
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()

    from facenet_pytorch import MTCNN

    params = load_section("faces", PARAMS)
    with tempfile.TemporaryDirectory(prefix="mer-bench-faces-") as tmp:
        work = Path(tmp)
        _, clips, _ = generate_demo(CorpusParams(speakers=a.clips, clips_per_speaker=1, seconds=a.seconds, seed=7), work / "corpus", progress=False)
        clips = sorted(clips, key=lambda c: c.clip_id)

        stage = FacesExtractor(params, device="cpu")
        mtcnn = MTCNN(min_face_size=params.min_face_size, select_largest=False, keep_all=True, device="cpu")

        def run_stage(tag: str) -> Path:
            return extract_corpus(stage, clips, out=work / f"{tag}.parquet", errors_dir=work / "err", on_error=params.on_error)

        def run_naive() -> tuple[int, int]:
            frames = found = 0
            for clip in clips:
                for _, frame in iter_video_frames(clip.media(), params.rate_hz):
                    _, probs = mtcnn.detect(frame)
                    frames += 1
                    p = np.asarray(probs if probs is not None else [], dtype=float)
                    found += int(np.any(p[np.isfinite(p)] >= params.min_probability))
            return frames, found

        run_stage("warm")  # builds and warms the detector
        mtcnn.detect(next(iter_video_frames(clips[0].media(), params.rate_hz))[1])
        stage_t, naive_t = [], []
        for r in range(a.rounds):
            out, w, c = timed(run_stage, f"r{r}")
            stage_t.append((w, c))
            (frames_n, naive_found), w, c = timed(run_naive)
            naive_t.append((w, c))
        _, det = read_detections(out)
        frames = sum(len(d) for d in det.values())
        stage_found = int(sum(int(d.present.sum()) for d in det.values()))
        sw, sc = min(w for w, _ in stage_t), min(c for _, c in stage_t)
        nw, nc = min(w for w, _ in naive_t), min(c for _, c in naive_t)
        figures = {
            "frames": frames,
            "torch_threads": torch.get_num_threads(),
            "stage_fps": frames / sw, "naive_fps": frames_n / nw,
            "speedup": (frames / sw) / (frames_n / nw),
            "speedup_cpu": (frames / sc) / (frames_n / nc),
            "stage_detections": stage_found, "naive_detections": naive_found,
            "target_met": (frames / sw) / (frames_n / nw) >= 3.0 and stage_found == naive_found,
        }
        if a.profile:
            pr = cProfile.Profile()
            pr.enable()
            run_stage("profile")
            pr.disable()
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(20)
            log(s.getvalue())
    print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in figures.items()}, sort_keys=True))


if __name__ == "__main__":
    main()
