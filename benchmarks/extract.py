"""Feature-extraction benchmark (issue 3): every figure against a naive baseline measured in the same
run, on the same generated demo clips. Ends by printing ONE JSON line of named figures.

    python benchmarks/extract.py                 # 40 + 1 clips of 3 s (about 10 minutes on 2 cores)
    python benchmarks/extract.py --quick         # 8 + 1 clips, fewer images: a smoke run
    python benchmarks/extract.py --only face_embed   # the MTCNN and face-embedding figures only

Figures (targets from issue 3):
- face_embed.<backbone>: the stage's img/s, run as `dvc repro` runs it (threads pinned, one per process,
  on its default workers, one per core; the extractor in the precision its `bf16: auto` chooses here;
  the face clips' crops `--embed-repeat` times over, so the pool's start is a small share) vs a naive
  per-image fp32 loop on torch's default threads (target: never below 1.0×) and
  vs the limit of this machine (target ≥ 80 %). The limit counts the best path: the fastest of the
  fp32 and bf16 GEMM rates measured now (over the FLOPs of one image, counted by torch's
  FlopCounterMode), the network's own batched forward in fp32 and in bf16, and the naive loop — so
  no measured rate can exceed it. Also the chosen precision with the chooser's timings, and the min
  cosine of the stage's embeddings vs fp32 (target ≥ 0.999).
- faces: the stage's frames/s (`FacesExtractor` on the runner) vs a loop calling `MTCNN.detect` on one frame at a
  time, each with its detection count (target ≥ 3× at equal detections).
- incremental: time to extract the corpus of N clips + 1 new clip with the cache of the N, over the
  time for that clip alone with an empty cache (target ≤ 1.5), per extractor and summed.
- memory: peak RSS of a fresh process extracting N clips over one extracting N/4 (target ≤ 1.2).
- rtf: whole-extraction real-time factors, wall seconds per second of media, of every extraction
  stage (faces, vggface, resnet50, egemaps, compare, wav2vec2, bert: the corpus extracted with an
  empty cache) and their total.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.core.compute import stage_workers  # noqa: E402
from pipeline.core.config import load_section  # noqa: E402
from pipeline.corpus.demo import generate_demo  # noqa: E402
from pipeline.corpus.demo.params import CorpusParams
from pipeline.corpus.manifest import Clip  # noqa: E402
from pipeline.extract.registry import EXTRACTORS, build_extractor  # noqa: E402
from pipeline.extract.runner import RunStats, extract_corpus  # noqa: E402

PARAMS = REPO / "params.yaml"
AUDIO_TEXT = ["egemaps", "compare", "wav2vec2", "bert"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_corpus(work: Path, n: int, seconds: float) -> list[Clip]:
    params = CorpusParams(speakers=n, clips_per_speaker=1, seconds=seconds, seed=7)
    _, clips, _ = generate_demo(params, work / "corpus", progress=False)
    return sorted(clips, key=lambda c: c.clip_id)


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def available(features: list[str]) -> list[str]:
    return [f for f in features if f in EXTRACTORS]


# ----------------------------------------------------------------------------------------------
# Faces: stage vs per-frame MTCNN.detect
# ----------------------------------------------------------------------------------------------


def bench_faces(clips: list[Clip], work: Path) -> dict:
    from facenet_pytorch import MTCNN

    from pipeline.extract.faces import FacesExtractor, read_detections
    from pipeline.media import iter_video_frames

    params = load_section("faces", PARAMS)
    # models are built and warmed up outside the timings, for the stage and the naive loop alike
    stage = FacesExtractor(params, device="cpu")
    extract_corpus(stage, clips[:1], out=work / "warm.parquet", errors_dir=work / "err", on_error=params.on_error)
    out, stage_s = timed(extract_corpus, stage, clips, out=work / "faces.parquet", errors_dir=work / "err", on_error=params.on_error)
    _, det = read_detections(out)
    frames = sum(len(d) for d in det.values())
    stage_found = int(sum(int(d.present.sum()) for d in det.values()))

    mtcnn = MTCNN(min_face_size=params.min_face_size, select_largest=False, keep_all=True, device="cpu")
    mtcnn.detect(next(iter_video_frames(clips[0].media(), params.rate_hz))[1])
    t0 = time.perf_counter()
    naive_frames = naive_found = 0
    for clip in clips:
        for _, frame in iter_video_frames(clip.media(), params.rate_hz):
            _, probs = mtcnn.detect(frame)
            naive_frames += 1
            p = np.asarray(probs if probs is not None else [], dtype=float)
            naive_found += int(np.any(p[np.isfinite(p)] >= params.min_probability))
    naive_s = time.perf_counter() - t0
    # the fast settings of the faces stage (README): detect every 3rd step, interpolate a steady face
    every3 = params.model_copy(update={"detect_every": 3})
    stage3 = FacesExtractor(every3, device="cpu")
    stage3.detector  # built outside the timing, as above
    out3, every3_s = timed(extract_corpus, stage3, clips, out=work / "faces3.parquet", errors_dir=work / "err", on_error=params.on_error)
    _, det3 = read_detections(out3)
    found3 = int(sum(int(d.present.sum()) for d in det3.values()))
    return {
        "detect_every_3_fps": frames / every3_s,
        "detect_every_3_speedup": (frames / every3_s) / (naive_frames / naive_s),
        "detect_every_3_detections": found3,
        "stage_fps": frames / stage_s,
        "naive_fps": naive_frames / naive_s,
        "speedup": (frames / stage_s) / (naive_frames / naive_s),
        "stage_detections": stage_found,
        "naive_detections": naive_found,
        "frames": frames,
        "target_met": (frames / stage_s) / (naive_frames / naive_s) >= 3.0 and stage_found == naive_found,
    }, out


# ----------------------------------------------------------------------------------------------
# Face embeddings: stage vs naive fp32 loop vs bf16 matmul bound
# ----------------------------------------------------------------------------------------------


def gemm_flops(dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Best GEMM rate (FLOP/s) in `dtype` of this machine now, over a few square sizes."""
    best = 0.0
    for n in (1024, 2048, 3072):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def image_flops(net: torch.nn.Module, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net(torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


def forward_rate(ex, precision: str, x: torch.Tensor, seconds: float) -> float:
    """img/s of the extractor's inference copy in `precision` on the batch `x` (best pass after a
    warm-up, passes until `seconds` are spent)."""
    net = ex._inference_copy(precision)
    ex._run(net, precision, x)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        ex._run(net, precision, x)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > t_end:
            return len(x) / best


def bench_face_embed(feature: str, clips: list[Clip], detections: Path, naive_images: int, forward_batch: int,
                     repeat: int) -> dict:
    """The stage as `dvc repro` runs it: its threads pinned (`pin_threads`: 1 per process), its default
    workers (one per core), each building its extractor with the registry's factory; on the crops of
    `clips` `repeat` times over (as many clips again under new ids), so that the pool's start is a small
    share, as in a real corpus. The naive loop runs on torch's default threads (every core), as a
    plain script would."""
    from pipeline.core.stage import pin_threads
    from pipeline.extract.faces import read_detections

    meta, det = read_detections(detections)
    det = {f"{c}~{k}": d for k in range(repeat) for c, d in det.items()}
    work_clips = [replace(c, clip_id=f"{c.clip_id}~{k}") for k in range(repeat) for c in clips]
    build = partial(build_extractor, feature, PARAMS, detections=det, faces_meta=meta)
    default_threads = torch.get_num_threads()
    pin_threads()
    ex = build()
    crops = np.stack([det[c].crop(int(i)) for c in sorted(det) for i in np.flatnonzero(det[c].present)])
    n = len(crops)

    # warm-up, not timed: the precision decision (bf16: auto, measured now in the run's own decision
    # file) and the fast copy of the network are made on first use; one full forward batch, so that
    # the stage, like the naive loop (warmed up on its one-image shape), is timed with its kernels made
    ex.embed(crops[: ex.settings.batch_size])
    decision = ex.precision_decision
    stats = RunStats()
    _, stage_s = timed(extract_corpus, ex, work_clips, out_dir=detections.parent / "feat", errors_dir=detections.parent / "err",
                       stats=stats, factory=build)
    stage_ips = n / stage_s
    torch.set_num_threads(default_threads)

    net, prep = ex.net, ex.preprocess
    net.eval()
    sub = crops[:naive_images]
    with torch.inference_mode():
        net(prep(sub[:1]))  # warm-up
        t0 = time.perf_counter()
        naive = [net(prep(c[None])).float() for c in sub]
        naive_s = time.perf_counter() - t0
    naive_ips = len(sub) / naive_s
    fp32 = torch.cat(naive).numpy()
    stage_out = ex.embed(sub)
    cos = (fp32 * stage_out).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(stage_out, axis=1) + 1e-12)

    flops = image_flops(net, crops.shape[1] if prep is None else prep(sub[:1]).shape[-1])
    rates = {f"{dt}_gemm": gemm_flops(getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dt])) / flops for dt in ("fp32", "bf16")}
    x = prep(crops[np.arange(forward_batch) % n])
    rates.update({f"{p}_forward": forward_rate(ex, p, x, 2.0) for p in ("fp32", "bf16")})
    rates["naive_fp32_loop"] = naive_ips
    source = max(rates, key=rates.get)
    limit = rates[source]
    share, ratio = stage_ips / limit, stage_ips / naive_ips
    log(f"{feature}: precision {ex.precision}" + (f" ({decision.summary()})" if decision else f" (forced: bf16={ex.settings.bf16})"))
    return {
        "images": n,
        "stage_workers": stage_workers(),
        "naive_threads": default_threads,
        "stage_img_s": stage_ips,
        "naive_fp32_img_s": naive_ips,
        "speedup_vs_naive": ratio,
        "limit_img_s": limit,
        "limit_source": source,
        "rates_img_s": rates,
        "share_of_limit": share,
        "gflop_per_image": flops / 1e9,
        "precision": ex.precision,
        "precision_choice": None if decision is None else {
            "reason": decision.reason, "fp32_s": decision.fp32_s, "bf16_s": decision.bf16_s, "measured": decision.measured,
        },
        "min_cosine_stage_fp32": float(cos.min()),
        "target_met": ratio >= 1.0 and share >= 0.8 and cos.min() >= 0.999,
    }


# ----------------------------------------------------------------------------------------------
# Incremental extraction, real-time factors
# ----------------------------------------------------------------------------------------------


def bench_incremental(features: list[str], clips: list[Clip], work: Path) -> tuple[dict, dict]:
    """clips[:-1] is the corpus, clips[-1] the added clip. Every stage of the extraction, faces
    first (the face embedders read its detections), timed on the corpus + 1 clip with the cache of the
    corpus, and on the one clip alone with an empty cache; models are built once, outside the timing."""
    from pipeline.extract.faces import FacesExtractor, read_detections

    corpus, new = clips[:-1], clips[-1]
    out, rtf = {}, {}
    fparams = load_section("faces", PARAMS)
    faces_ex = FacesExtractor(fparams, device="cpu")
    faces_ex.detector  # MTCNN built once, outside the timings

    def faces(cl, cache, dest):
        return extract_corpus(faces_ex, cl, out=dest, errors_dir=work / "e", on_error=fparams.on_error, cache_dir=cache)

    media_s = sum(c.duration for c in corpus)
    _, faces_s = timed(faces, corpus, work / "cache", work / "det_corpus.parquet")
    rtf["faces"] = faces_s / media_s
    _, inc_s = timed(faces, clips, work / "cache", work / "det_all.parquet")
    _, one_s = timed(faces, [new], work / "cache1", work / "det_one.parquet")
    out["faces"] = {"corpus_plus_one_s": inc_s, "one_clip_s": one_s, "ratio": inc_s / one_s}
    tot_inc, tot_one = inc_s, one_s
    log(f"incremental faces: {out['faces']}")
    faces_meta, detections = read_detections(work / "det_all.parquet")
    for feat in features:
        face = feat in ("vggface", "resnet50")
        # worker processes build their own extractor, as the stages do (a model with parametrised
        # modules, wav2vec2's weight norm, cannot be pickled to them)
        build = partial(build_extractor, feat, PARAMS, **({"detections": detections, "faces_meta": faces_meta} if face else {}))
        ex = build()
        full = RunStats()
        extract_corpus(ex, corpus, out_dir=work / "f", errors_dir=work / "e", cache_dir=work / "cache", stats=full, factory=build)
        inc = RunStats()
        extract_corpus(ex, clips, out_dir=work / "f", errors_dir=work / "e", cache_dir=work / "cache", stats=inc, factory=build)
        one = RunStats()
        extract_corpus(ex, [new], out_dir=work / "f1", errors_dir=work / "e", cache_dir=work / "cache1", stats=one, factory=build)
        assert inc.extracted == 1 and inc.cached == len(corpus), (feat, inc)
        out[feat] = {"corpus_plus_one_s": inc.seconds, "one_clip_s": one.seconds, "ratio": inc.seconds / one.seconds}
        tot_inc += inc.seconds
        tot_one += one.seconds
        rtf[feat] = full.seconds / media_s
        log(f"incremental {feat}: {out[feat]}")
    out["all"] = {"corpus_plus_one_s": tot_inc, "one_clip_s": tot_one, "ratio": tot_inc / tot_one, "target_met": tot_inc / tot_one <= 1.5}
    rtf["total"] = sum(rtf.values())
    return out, rtf


def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_child(n: int, corpus_dir: str, features: list[str]) -> None:
    """Prints the process's peak RSS and the peak while extracting (after the models are built: the
    peak is reset through /proc/self/clear_refs, Linux), both in bytes."""
    from pipeline.corpus.manifest import read_manifest

    _, clips = read_manifest(Path(corpus_dir) / "manifest.parquet")
    builds = [partial(build_extractor, feat, PARAMS) for feat in features]
    extractors = [build() for build in builds]
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    with tempfile.TemporaryDirectory() as tmp:
        for ex, build in zip(extractors, builds):
            extract_corpus(ex, clips[:n], out_dir=Path(tmp), errors_dir=Path(tmp), cache_dir=Path(tmp) / "c", factory=build)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, _vm_kb("VmHWM") * 1024)


def bench_memory(clips: list[Clip], work: Path, features: list[str], n_small: int) -> dict:
    from pipeline.corpus.manifest import CorpusInfo, write_manifest

    classes = sorted({c.label for c in clips if c.label})
    write_manifest(work / "corpus" / "manifest.parquet", CorpusInfo("demo", classes, 2.0, {}), clips)

    def peak(n: int) -> tuple[int, int]:
        cmd = [sys.executable, __file__, "--rss-child", str(n), str(work / "corpus"), ",".join(features)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        whole, extracting = res.stdout.strip().splitlines()[-1].split()
        return int(whole), int(extracting)

    (small_all, small), (large_all, large) = peak(n_small), peak(len(clips))
    return {
        "clips_small": n_small, "clips_large": len(clips),
        "peak_rss_extracting_small_mb": small / 2**20, "peak_rss_extracting_large_mb": large / 2**20,
        "ratio": large / small, "target_met": large / small <= 1.2,
        "peak_rss_process_small_mb": small_all / 2**20, "peak_rss_process_large_mb": large_all / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--naive-images", type=int, default=16)
    ap.add_argument("--forward-batch", type=int, default=32, help="batch of the limit's forward rates (the stages' batch_size)")
    ap.add_argument("--embed-repeat", type=int, default=4, help="the face embedders' stage runs on the face clips' crops this many times over")
    ap.add_argument("--only", choices=["faces", "face_embed"], help="only these figures (face_embed needs the faces run)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_child:
        return rss_child(int(a.rss_child[0]), a.rss_child[1], a.rss_child[2].split(","))
    if a.quick:
        a.clips, a.seconds, a.naive_images, a.forward_batch, a.embed_repeat = 8, 2.0, 4, 4, 1

    figures: dict = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                 "amx": torch.cpu._is_amx_tile_supported() if hasattr(torch.cpu, "_is_amx_tile_supported") else None,
                                 "avx512_bf16": torch.cpu._is_avx512_bf16_supported() if hasattr(torch.cpu, "_is_avx512_bf16_supported") else None}}
    with tempfile.TemporaryDirectory(prefix="mer-bench-") as tmp:
        work = Path(tmp)
        # the face embedders' bf16: auto is decided afresh in this run (unless the caller names a file)
        os.environ.setdefault("MER_PRECISION_CACHE", str(work / "precision.json"))
        clips, gen_s = timed(make_corpus, work, a.clips + 1, a.seconds)
        log(f"corpus: {len(clips)} clips of {a.seconds} s in {gen_s:.1f} s")
        face_clips = clips[: max(2, min(10, a.clips // 4))]
        figures["faces"], det = bench_faces(face_clips, work / "faces")
        log(f"faces: {figures['faces']}")
        figures["face_embed"] = {}
        for feat in available(["vggface", "resnet50"]):
            if a.only == "faces":
                break
            figures["face_embed"][feat] = bench_face_embed(feat, face_clips, det, a.naive_images, a.forward_batch, a.embed_repeat)
            log(f"face_embed {feat}: {figures['face_embed'][feat]}")
        if a.only:
            print(json.dumps(_rounded(figures), sort_keys=True))
            return
        feats = available(AUDIO_TEXT)
        figures["incremental"], figures["rtf"] = bench_incremental(available(["vggface", "resnet50"]) + feats, clips, work / "inc")
        figures["memory"] = bench_memory(clips[:-1], work, feats, max(1, a.clips // 4))
        log(f"memory: {figures['memory']}")
    print(json.dumps(_rounded(figures), sort_keys=True))


def _rounded(o):
    if isinstance(o, dict):
        return {k: _rounded(v) for k, v in o.items()}
    if isinstance(o, float):
        return float(f"{o:.6g}")
    if isinstance(o, (np.bool_, np.integer, np.floating)):
        return o.item()
    return o


if __name__ == "__main__":
    main()
