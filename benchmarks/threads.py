"""Threads under contention: a training workload with the stages' pinned threads vs torch's default.

Every stage runs torch on `MER_THREADS` threads (default 1; pipeline/core/stage.py). This benchmark
measures why: the same training steps of the demo's cross-modal transformer (d_model 128, batch 16,
4 modalities, 64 steps) timed in a fresh process

    pinned    pin_threads() as a stage does (MER_THREADS=1)
    default   torch's own choice (one thread per core)

each once on a quiet machine and once while one other process keeps a core busy (a Python loop, as
another stage, a test run or a colleague's job would). The naive baseline is `default`, measured in
the same run. Printed last, one JSON line: seconds per condition and the slowdowns under contention.

    python benchmarks/threads.py [--steps 40]

`--stages` measures instead what the per-stage defaults of `pipeline.core.stage.STAGE_THREADS` rest on:
every extraction stage (faces, face_embed, resnet50, lld, compare, wav2vec2, bert) with its
extractor from params.yaml on the same small generated demo corpus, in a fresh process pinned to
1 and to 2 torch/OpenMP threads (`pin_threads(n)`), once quiet and once while one other process keeps
a core busy. Models are built and warmed up on one clip outside the timing (the face embedders'
`bf16: auto` decision is measured there too, per thread count, in a private decision file). Printed
last, one JSON line: seconds per stage, thread count and condition, the speedup of 2 threads over 1
(>1: 2 is faster) in each condition, and the load average before the run (a busy machine skews the
quiet figures).

    python benchmarks/threads.py --stages [--clips 3 --seconds 2] [--only faces,bert]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKLOAD = r"""
import os, sys, time
mode, steps = sys.argv[1], int(sys.argv[2])
import torch
if mode == "pinned":
    from pipeline.core.stage import pin_threads
    pin_threads()
from pipeline.models.registry import build_model
torch.manual_seed(0)
dims = {"face": 512, "acoustic": 25, "speech": 64, "text": 384}
model = build_model("crossmodal", dims, 4, "classification", {"d_model": 128})
opt = torch.optim.Adam(model.parameters(), 1e-4)
x = {m: torch.randn(16, 64, d) for m, d in dims.items()}
mask = {m: torch.ones(16, 64, dtype=torch.bool) for m in dims}
y = torch.randint(0, 4, (16,))
def step():
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x, mask), y)
    loss.backward()
    opt.step()
step()  # warm-up
t0 = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"seconds": time.perf_counter() - t0, "threads": torch.get_num_threads()}))
""".replace("import os, sys, time", "import json, os, sys, time")


def run(mode: str, steps: int, busy: bool) -> dict:
    env = dict(os.environ)
    env.pop("MER_THREADS", None)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(name, None)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if hog is not None:
            time.sleep(0.5)
        out = subprocess.run([sys.executable, "-c", WORKLOAD, mode, str(steps)], env=env, capture_output=True,
                             text=True, check=True).stdout
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(out.strip().splitlines()[-1])


STAGES = {  # DVC stage (pipeline/core/stage.py's table) → the feature it writes
    "faces": "faces", "face_embed": "vggface", "resnet50": "resnet50", "lld": "egemaps",
    "compare": "compare", "wav2vec2": "wav2vec2", "bert": "bert",
}

STAGE_WORKLOAD = r"""
import json, os, sys, tempfile, time
from pathlib import Path
stage, feature, n, corpus, det = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
from pipeline.core.stage import pin_threads
pin_threads(n)
import torch
from pipeline.corpus.manifest import read_manifest
from pipeline.extract.runner import extract_corpus
from pipeline.extract.registry import build_extractor
_, clips = read_manifest(corpus / "manifest.parquet")
root = corpus.parent
if stage == "faces":
    from pipeline.core.config import load_section
    from pipeline.extract.faces import FacesExtractor
    ex = FacesExtractor(load_section("faces", "params.yaml"), device="cpu")
elif feature in ("vggface", "resnet50"):
    from pipeline.extract.faces import read_detections
    meta, detections = read_detections(det)
    ex = build_extractor(feature, "params.yaml", detections=detections, faces_meta=meta)
else:
    ex = build_extractor(feature, "params.yaml")
with tempfile.TemporaryDirectory() as tmp:
    kw = dict(root=root, errors_dir=Path(tmp) / "e", **({"out": Path(tmp) / "o.parquet"} if stage == "faces" else {"out_dir": Path(tmp)}))
    extract_corpus(ex, clips[:1], **kw)  # warm-up (models built, first-call costs, precision decision)
    t0 = time.perf_counter()
    extract_corpus(ex, clips, **kw)
    seconds = time.perf_counter() - t0
media = sum(c.duration for c in clips)
print(json.dumps({"seconds": seconds, "rtf": seconds / media, "threads": torch.get_num_threads(),
                  "precision": getattr(ex, "precision", None)}))
"""


def run_stage_once(stage: str, n: int, corpus: str, det: str, busy: bool, env: dict) -> dict:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if hog is not None:
            time.sleep(0.5)
        res = subprocess.run([sys.executable, "-c", STAGE_WORKLOAD, stage, STAGES[stage], str(n), corpus, det],
                             env=env, capture_output=True, text=True, cwd=REPO)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if res.returncode != 0:
        raise SystemExit(f"{stage} on {n} thread(s) failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_stages(clips: int, seconds: float, only: list[str]) -> dict:
    """Each stage's extraction time on 1 and 2 threads, quiet and with one busy core."""
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(REPO))
    from pipeline.core.stage import pin_threads
    from pipeline.corpus.demo import generate_demo
    from pipeline.corpus.demo.params import CorpusParams
    from pipeline.corpus.manifest import write_manifest

    load = os.getloadavg()[0]
    out: dict = {"cores": os.cpu_count(), "load_avg_1min_before": round(load, 2), "clips": clips, "clip_seconds": seconds}
    with tempfile.TemporaryDirectory(prefix="mer-threads-") as tmp:
        work = Path(tmp)
        pin_threads(1)
        info, cl, _ = generate_demo(CorpusParams(speakers=max(3, clips), clips_per_speaker=1, seconds=seconds, seed=7), work / "corpus", progress=False, workers=1)
        cl = sorted(cl, key=lambda c: c.clip_id)[:clips]  # the demo has at least 3 speakers
        write_manifest(work / "corpus" / "manifest.parquet", info, cl)
        env = {k: v for k, v in os.environ.items() if k not in ("MER_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MER_PRECISION_CACHE=str(work / "precision.json"),
                   PYTHONPATH=str(REPO))
        det = work / "det.parquet"
        if any(s in only for s in ("face_embed", "resnet50")):
            from pipeline.core.config import load_section
            from pipeline.extract.faces import FacesExtractor
            from pipeline.extract.runner import extract_corpus

            extract_corpus(FacesExtractor(load_section("faces", REPO / "params.yaml"), device="cpu"), cl, root=work,
                           out=det, errors_dir=work / "e")
        for stage in only:
            r = {}
            for busy in (False, True):
                for n in (1, 2):
                    key = f"{n}_{'busy' if busy else 'quiet'}"
                    r[key] = run_stage_once(stage, n, str(work / "corpus"), str(det), busy, env)
                    print(f"{stage:>10} {key:>8}: {r[key]['seconds']:.2f} s (RTF {r[key]['rtf']:.3f}, "
                          f"{r[key]['threads']} thread(s){', ' + r[key]['precision'] if r[key]['precision'] else ''})", flush=True)
            out[stage] = {
                **{f"{k}_s": round(v["seconds"], 3) for k, v in r.items()},
                "speedup_2_vs_1_quiet": round(r["1_quiet"]["seconds"] / r["2_quiet"]["seconds"], 2),
                "speedup_2_vs_1_busy": round(r["1_busy"]["seconds"] / r["2_busy"]["seconds"], 2),
                "precision": {k: v["precision"] for k, v in r.items() if v["precision"]} or None,
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--stages", action="store_true", help="time every extraction stage on 1 and 2 threads")
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--only", default=",".join(STAGES), help="comma-separated stages (with --stages)")
    args = ap.parse_args()
    if args.stages:
        only = [s for s in args.only.split(",") if s]
        unknown = sorted(set(only) - set(STAGES))
        if unknown:
            raise SystemExit(f"--only: unknown stage(s) {unknown}; expected some of {sorted(STAGES)}")
        print(json.dumps(bench_stages(args.clips, args.seconds, only)))
        return
    r = {}
    for mode in ("pinned", "default"):
        for busy in (False, True):
            key = f"{mode}_{'busy' if busy else 'quiet'}"
            r[key] = run(mode, args.steps, busy)
            print(f"{key:>14}: {r[key]['seconds']:.2f} s on {r[key]['threads']} thread(s)", flush=True)
    figures = {
        "cores": os.cpu_count(),
        **{f"{k}_s": round(v["seconds"], 3) for k, v in r.items()},
        "default_threads": r["default_quiet"]["threads"],
        "slowdown_under_contention_pinned": round(r["pinned_busy"]["seconds"] / r["pinned_quiet"]["seconds"], 2),
        "slowdown_under_contention_default": round(r["default_busy"]["seconds"] / r["default_quiet"]["seconds"], 2),
        "pinned_vs_default_under_contention": round(r["default_busy"]["seconds"] / r["pinned_busy"]["seconds"], 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
