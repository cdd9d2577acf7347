"""Ray backend benchmark (issue 14): 2 Ray workers against the local backend, on this machine, with
identical outputs. Ends by printing ONE JSON line of named figures.

    python benchmarks/ray.py            # 48 demo clips of 4 s + a 4-seed grid (about 10 min on 2 cores)
    python benchmarks/ray.py --quick    # 3 clips of 2 s, a 2-seed grid of 2 epochs: a smoke run
    python benchmarks/ray.py --clips-per-speaker 8 --only extract   # the demo's full 96 clips
    python benchmarks/ray.py --clips-per-speaker 8 --only extract --ceiling   # and the naive 2-process bound

Figures (targets from issue 14; run it on a quiet machine: other processes on the cores skew both sides):
- extract.<stage>: seconds of the whole `extract_corpus` call, local (this process, 1 thread, the
  extractor built before the timing) and on 2 Ray workers of 1 CPU each (`MER_BACKEND=ray`,
  `MER_WORKERS=2`, timing everything the stage pays: the actors start, import and build their own
  extractor from the same params section), their ratio, and whether the two tables are byte-identical.
  Each side runs `--repeat` times, alternating (local, ray, local, ray, ...), and its fastest run
  counts (`*_runs` lists them all): on shared cores one run can be 30 % slower than the next.
  With `--ceiling`, the naive baseline of the machine: the extractor's `process_clips` on half the
  clips in each of 2 forked processes against all of them in one (no cache, no table, no Ray) — the
  most 2 workers can give on these cores; `efficiency` is the Ray ratio over it.
  Stages: the CPU-bound ones of the demo corpus — faces (MTCNN), egemaps and compare (openSMILE), vggface
  (face embedding; the local faces table gives its detections). No cache (`cache_dir=None`), so every
  clip is computed on both sides. `extract.total`: the summed seconds and their ratio (target >= 1.6).
- train: a grid of seeds of the cross-modal transformer on synthetic sequences (train_all), local vs
  2 Ray workers, each run a task; the ratio (target >= 1.6) and whether every model.pt, history.csv and
  summary is identical.
- score: the evaluation grid over those runs (evaluate_all, 5 condition families, each run a work item
  on 2 actors) against the local loop, and whether every table it writes is identical.
- load_before: the 1-minute load average before the run.

Ray is started once (a local instance of 2 CPUs, no dashboard) outside the timings; its start-up
seconds are reported as ray_init_s.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# this file is named ray.py: its folder must not be on the path, or `import ray` (here and in the
# Ray workers, which get this process's sys.path) finds it instead of Ray
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402

from pipeline.core.compute import ComputeSettings, ray_runtime, shutdown  # noqa: E402
from pipeline.core.config import load_section  # noqa: E402
from pipeline.core.stage import pin_threads  # noqa: E402
from pipeline.corpus.demo import generate_demo  # noqa: E402
from pipeline.corpus.demo.params import CorpusParams  # noqa: E402
from pipeline.extract.registry import EXTRACTORS  # noqa: E402
from pipeline.extract.runner import RunStats, extract_corpus  # noqa: E402

PARAMS = REPO / "params.yaml"
LOCAL = ComputeSettings(backend="local")
RAY2 = ComputeSettings(backend="ray", workers=2, cpus_per_worker=1)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


_CEILING_EXTRACTOR = None  # the extractor the forked processes inherit


def _process_half(clips) -> float:
    pin_threads(1)
    t0 = time.perf_counter()
    for _ in _CEILING_EXTRACTOR.process_clips(clips, Path(".")):
        pass
    return time.perf_counter() - t0


def naive_ceiling(ex, clips) -> dict:
    """One process on all clips against two forked ones on half each (even and odd positions): what
    two workers give on these cores with nothing in between."""
    import multiprocessing as mp

    global _CEILING_EXTRACTOR
    _CEILING_EXTRACTOR = ex
    one_s = _process_half(clips)
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_process_half, [clips[::2], clips[1::2]])
    two_s = time.perf_counter() - t0
    return {"naive_one_process_s": one_s, "naive_two_processes_s": two_s, "ceiling": one_s / two_s}


def bench_extract(clips, work: Path, repeat: int = 1, ceiling: bool = False) -> dict:
    from pipeline.extract.faces import FacesExtractor, read_detections

    res: dict[str, dict] = {}

    def one(name: str, build, factory) -> Path:
        ex = build()  # this process's extractor (as a stage builds it), outside both timings
        outs, secs = {}, {"local": [], "ray": []}
        for i in range(repeat):
            for backend, settings in (("local", LOCAL), ("ray", RAY2)):
                d = work / name / f"{backend}{i}"
                outs[backend, i], t = timed(
                    extract_corpus, ex, clips, out=d / "out.parquet", errors_dir=d, stats=RunStats(),
                    settings=settings, factory=factory if backend == "ray" else None)
                secs[backend].append(t)
        local_s, ray_s = min(secs["local"]), min(secs["ray"])
        first = outs["local", 0]
        res[name] = {"local_s": local_s, "ray_s": ray_s, "speedup": local_s / ray_s,
                     "identical": all(filecmp.cmp(first, o, shallow=False) for o in outs.values()),
                     "local_runs": secs["local"], "ray_runs": secs["ray"]}
        if ceiling:
            res[name].update(naive_ceiling(ex, clips))
            res[name]["efficiency"] = res[name]["speedup"] / res[name]["ceiling"]
        log(f"{name}: {res[name]}")
        return first

    faces_params = load_section("faces", PARAMS)
    # the faces extractor has no registry entry: it travels to the actors pickled (MTCNN loads lazily)
    faces_out = one("faces", partial(FacesExtractor, faces_params, device="cpu"), None)
    for feature in ("egemaps", "compare"):
        entry = EXTRACTORS[feature]
        build = partial(entry.build, load_section(entry.section, PARAMS))
        one(feature, build, build)
    meta, det = read_detections(faces_out)
    entry = EXTRACTORS["vggface"]
    build = partial(entry.build, load_section(entry.section, PARAMS), detections=det, faces_meta=meta, device="cpu")
    one("vggface", build, build)
    local_s = sum(r["local_s"] for r in res.values())
    ray_s = sum(r["ray_s"] for r in res.values())
    res["total"] = {"local_s": local_s, "ray_s": ray_s, "speedup": local_s / ray_s,
                    "identical": all(r["identical"] for r in res.values()), "target_met": local_s / ray_s >= 1.6}
    if ceiling:
        one_s = sum(r["naive_one_process_s"] for k, r in res.items() if k != "total")
        two_s = sum(r["naive_two_processes_s"] for k, r in res.items() if k != "total")
        res["total"].update(ceiling=one_s / two_s, efficiency=res["total"]["speedup"] * two_s / one_s)
    return res


def synthetic_segments(n: int, t: int, seed: int = 0):
    """A 4-class task over three modalities (one carries each bit of the label, one is noise)."""
    from pipeline.segment.contract import ModalityInfo, Segments

    dims = {"a": 25, "b": 64, "c": 128}
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 4
    length = rng.integers(t // 2, t + 1, size=n)
    in_clip = np.arange(t)[None, :] < length[:, None]
    x, mask = {}, {}
    for i, (m, d) in enumerate(dims.items()):
        present = in_clip & (rng.random((n, t)) < 0.8)
        present[:, 0] = True
        v = rng.normal(0, 0.5, size=(n, t, d)).astype(np.float32)
        if i < 2:
            v[..., 0] += (2 * ((label >> (1 - i)) & 1) - 1)[:, None]
        v[~present] = 0
        x[m], mask[m] = v, present
    partition = np.array(["train"] * int(n * 0.6) + ["devel"] * int(n * 0.2) + ["test"] * (n - int(n * 0.8)))
    return Segments(
        clip_id=np.array([f"clip{i:04d}" for i in range(n)]), partition=partition, label=label.astype(np.int64),
        length=length, t=np.tile((np.arange(t) + 0.5) / 5.0, (n, 1)), x=x, mask=mask,
        mean={m: np.zeros(d, np.float32) for m, d in dims.items()}, std={m: np.ones(d, np.float32) for m, d in dims.items()},
        classes=["neutral", "happy", "angry", "sad"], rate_hz=5.0,
        modalities={m: ModalityInfo(feature=f"feat_{m}", dim=d, backbone="synthetic", pretrained=False,
                                    weights_statement=f"{m}: synthetic") for m, d in dims.items()},
    ), list(dims)


def bench_train(work: Path, n: int, t: int, seeds: int, epochs: int) -> dict:
    from pipeline.runs.files import HISTORY_FILE, MODEL_FILE, run_dir
    from pipeline.runs.params import TrainParams
    from pipeline.train.families import train_all

    segments, mods = synthetic_segments(n, t)
    params = TrainParams(modalities=mods, models=["crossmodal"], strategies=["standard"], seeds=list(range(seeds)),
                         epochs=epochs, batch_size=16, patience=epochs, lr=1e-3,
                         model_params={"crossmodal": {"d_model": 64, "layers": 2, "heads": 4}})
    summaries, secs = {}, {}
    for backend in ("local", "ray"):
        os.environ["MER_BACKEND"], os.environ["MER_WORKERS"] = backend, "2"
        summaries[backend], secs[backend] = timed(train_all, segments, params, work / "train" / backend, device="cpu", progress=False)
    os.environ.pop("MER_BACKEND"), os.environ.pop("MER_WORKERS")
    same_files = all(
        filecmp.cmp(run_dir(work / "train/local", "crossmodal", "standard", s) / f,
                    run_dir(work / "train/ray", "crossmodal", "standard", s) / f, shallow=False)
        for s in params.seeds for f in (MODEL_FILE, HISTORY_FILE))
    out = {"runs": seeds, "epochs": epochs, "local_s": secs["local"], "ray_s": secs["ray"],
           "speedup": secs["local"] / secs["ray"], "identical": same_files and summaries["local"] == summaries["ray"]}
    out["target_met"] = out["speedup"] >= 1.6
    log(f"train: {out}")
    return out


def bench_score(work: Path, n: int, t: int, seeds: int, **_) -> dict:
    """The evaluation grid over the trained runs of `bench_train` (each run a work item), local vs 2 Ray workers."""
    from pipeline.evaluate.grid import evaluate_all
    from pipeline.evaluate.params import EvaluateParams

    segments, _ = synthetic_segments(n, t)
    params = EvaluateParams(conditions=["all_present", "each_missing", "clip_zero_grid", "frame_zero_grid", "burst_grid"])
    secs = {}
    for backend in ("local", "ray"):
        os.environ["MER_BACKEND"], os.environ["MER_WORKERS"] = backend, "2"
        _, secs[backend] = timed(evaluate_all, segments, work / "train" / "local", params, work / "score" / backend,
                                 device="cpu", progress=False)
    os.environ.pop("MER_BACKEND"), os.environ.pop("MER_WORKERS")
    files = sorted(p.name for p in (work / "score" / "local").iterdir())
    out = {"runs": seeds, "local_s": secs["local"], "ray_s": secs["ray"], "speedup": secs["local"] / secs["ray"],
           "identical": all(filecmp.cmp(work / "score/local" / f, work / "score/ray" / f, shallow=False) for f in files)}
    log(f"score: {out}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 clips of 2 s and a tiny grid: a smoke run")
    ap.add_argument("--speakers", type=int, default=12, help="demo corpus speakers (params.yaml's demo: 12)")
    ap.add_argument("--clips-per-speaker", type=int, default=4, help="params.yaml's demo: 8")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--only", default="extract,train", help="extract, train or both")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each extraction side, alternating; the fastest counts")
    ap.add_argument("--ceiling", action="store_true", help="also time the naive 2-process baseline of each stage")
    ap.add_argument("--seeds", type=int, default=4, help="runs in the training grid")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--sequences", type=int, default=240, help="synthetic sequences (60 %% train) of 24 steps")
    args = ap.parse_args()
    if args.quick:
        args.speakers, args.clips_per_speaker, args.seconds = 3, 1, 2.0
        args.seeds, args.epochs, args.sequences, args.repeat = 2, 2, 48, 1
    grid = dict(n=args.sequences, t=12 if args.quick else 24, seeds=args.seeds, epochs=args.epochs)
    pin_threads(1)  # the local side runs as a stage does (MER_THREADS=1); each Ray worker pins to its 1 CPU
    load = os.getloadavg()[0]
    result: dict = {"workers": 2, "quick": args.quick, "load_before": load}
    with tempfile.TemporaryDirectory(prefix="mer-bench-ray-") as tmp:
        work = Path(tmp)
        _, ray_init_s = timed(ray_runtime, RAY2)
        result["ray_init_s"] = ray_init_s
        try:
            if "extract" in args.only:
                params = CorpusParams(speakers=args.speakers, clips_per_speaker=args.clips_per_speaker, seconds=args.seconds, seed=7)
                _, clips, _ = generate_demo(params, work / "corpus", progress=False)
                clips = sorted(clips, key=lambda c: c.clip_id)
                result["clips"] = len(clips)
                result["extract"] = bench_extract(clips, work, repeat=args.repeat, ceiling=args.ceiling)
            if "train" in args.only:
                result["train"] = bench_train(work, **grid)
                result["score"] = bench_score(work, **grid)
        finally:
            shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
