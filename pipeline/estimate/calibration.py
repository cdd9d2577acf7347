"""`mer estimate --calibrate`: this machine's rates measured and written under its CPU kind into
benchmarks/rates.json: each extractor's real-time factor on a few demo clips, run in-process as
benchmarks/extract.py does, and the training step of each grid model."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

from pipeline.core.compute import ComputeSettings
from pipeline.core.errors import PipelineError
from pipeline.core.stage import pin_threads
from pipeline.estimate.inputs import (
    KNOWN_CORPORA,
    EstimateError,
    corpus_size,
    load_params,
)
from pipeline.estimate.rates import RATES_FILE, cpu_kind, load_rates
from pipeline.estimate.shapes import _recipe, _sequences, backbone_config

# ---- calibration ---------------------------------------------------------------------------------


#: The module each extractor's stage imports (its backbone library with it).
EXTRACTOR_MODULES = {"faces": "pipeline.extract.faces", "vggface": "pipeline.extract.vggface", "resnet50": "pipeline.extract.resnet50",
                     "egemaps": "pipeline.extract.opensmile_lld", "compare": "pipeline.extract.opensmile_lld",
                     "wav2vec2": "pipeline.extract.wav2vec2", "bert": "pipeline.extract.bert"}


def calibrate(n_clips: int = 3, params_file: str | Path = "params.yaml", rates_file: str | Path = RATES_FILE,
              log=print, preset: str | None = None, extractors: bool = True) -> dict:
    """Measure this machine's rates and write them under its CPU kind into `rates_file`: every
    extractor's real-time factor on `n_clips` demo clips (unless `extractors` is False; in-process,
    models built outside the per-clip timing, the sections of `params_file`: an extractor whose weights
    are missing is skipped with one line), and the training step of each grid model of `params_file`
    (or of `preset`: its models, sizes and sequence shapes). What this run does not measure is kept."""
    if extractors and n_clips < 2:
        raise EstimateError("--calibrate needs at least 2 clips (one warms the models up)")
    kind = cpu_kind()
    params = load_params(params_file)
    rates = load_rates(rates_file)
    old = rates["kinds"].get(kind, {})
    entry = copy.deepcopy(old)
    if extractors:
        measured = _calibrate_extractors(n_clips, params_file, params, log)
        # kept: other extractors, the stages' peak memory (measured per process: /usr/bin/time), the
        # demo corpus stage's memory
        for feature, rec in (old.get("extract") or {}).items():
            measured["extract"].setdefault(feature, rec)
            if "peak_rss_mb" in rec:
                measured["extract"][feature].setdefault("peak_rss_mb", rec["peak_rss_mb"])
        measured["corpus"] = {**(old.get("corpus") or {}), **measured["corpus"]}
        entry.update(measured)
    label = preset or Path(params_file).name
    pin_threads(stage="train")  # as the training stages run
    steps = measure_train_steps(load_params(params_file, preset) if preset else params, log=log, label=label)
    entry["train_step_s"] = {}
    for model in {**(old.get("train_step_s") or {}), **steps}:  # one record per model and label
        kept = (old.get("train_step_s") or {}).get(model) or []
        kept = [kept] if isinstance(kept, dict) else kept
        entry["train_step_s"][model] = [r for r in kept if r.get("label") != label] + ([steps[model]] if model in steps else [])
    rates["kinds"][kind] = entry
    from pipeline.core.store import write_json

    write_json(rates_file, rates)
    return entry


def _calibrate_extractors(n_clips: int, params_file: str | Path, params: dict, log) -> dict:
    """{"measured", "clips", "cpus", "threads", "process_import_s", "load_average", "corpus", "extract"}
    of this machine: the extractors run on `n_clips` generated demo clips of 4 s (see `calibrate`)."""
    import importlib
    import subprocess
    import sys
    import tempfile

    from pipeline.core.config import load_section
    from pipeline.corpus.demo import generate_demo
    from pipeline.corpus.demo.params import CorpusParams
    from pipeline.extract.registry import build_extractor
    from pipeline.extract.runner import RunStats, extract_corpus

    def process_s(module: str) -> float:
        """Wall s of a fresh process importing what a stage imports before its first clip: the runner,
        the manifest reader and the extractor's module (its backbone library: transformers, opensmile…)."""
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import torch, pipeline.extract.runner, pipeline.corpus.manifest, {module}"], check=True)
        return time.perf_counter() - t0

    import_s = process_s("pipeline.extract.stage")
    entry: dict[str, Any] = {"measured": time.strftime("%Y-%m-%d"), "clips": n_clips,
                             "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                             "threads": os.environ.get("MER_THREADS", "stage default"), "process_import_s": round(import_s, 2),
                             "load_average": round(os.getloadavg()[0], 2),  # a shared machine's rates are slower: say so
                             "extract": {}}
    with tempfile.TemporaryDirectory(prefix="mer-calibrate-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("MER_PRECISION_CACHE", str(work / "precision.json"))
        cp = CorpusParams(speakers=max(3, n_clips), clips_per_speaker=1, seconds=4.0, seed=7)
        t0 = time.perf_counter()
        _, clips, _ = generate_demo(cp, work / "corpus", progress=False)
        gen_s = time.perf_counter() - t0
        clips = sorted(clips, key=lambda c: c.clip_id)
        gen_media = sum(c.duration for c in clips)
        media_bytes = sum(Path(c.media_path).stat().st_size for c in clips if Path(c.media_path).exists())
        entry["corpus"] = {"demo_s_per_media_s": round(gen_s / gen_media, 4),
                           "demo_bytes_per_media_s": round(media_bytes / gen_media) if media_bytes else 43_600}
        clips = clips[:n_clips]
        warm, rest = clips[:1], clips[1:]
        media_s = sum(c.duration for c in rest)
        faces_meta = detections = None
        for module in set(EXTRACTOR_MODULES.values()):  # the build times below are then the models' alone
            importlib.import_module(module)
        for feature, section in [("faces", "faces"), ("vggface", "face_embed"), ("resnet50", "resnet50"),
                                 ("egemaps", "lld"), ("compare", "compare"), ("wav2vec2", "wav2vec2"), ("bert", "bert")]:
            try:
                pin_threads(stage=section)  # the threads its stage runs on (a rate on torch's default is not a stage's)
                t0 = time.perf_counter()
                if feature == "faces":
                    from pipeline.extract.faces import FacesExtractor

                    ex = FacesExtractor(load_section("faces", params_file), device="cpu")
                    ex.detector
                elif feature in ("vggface", "resnet50"):
                    if detections is None:
                        raise EstimateError("no detections (the faces calibration failed)")
                    ex = build_extractor(feature, params_file, detections=detections, faces_meta=faces_meta)
                else:
                    ex = build_extractor(feature, params_file)
                build_s = time.perf_counter() - t0
                # one process: the rates are one process's (the estimate divides by the workers), and a
                # built extractor is not always picklable for a helper process (wav2vec2, BERT)
                kw = dict(errors_dir=work / "err", cache_dir=None, settings=ComputeSettings(workers=1))
                first = RunStats()
                extract_corpus(ex, warm, out=work / f"{feature}_warm.parquet", stats=first, **kw)
                stats = RunStats()
                out = extract_corpus(ex, rest, out=work / f"{feature}.parquet", stats=stats, **kw)
            except (PipelineError, OSError, ImportError) as e:
                log(f"{feature}: skipped ({e})")
                continue
            rtf = stats.seconds / media_s
            # start-up: a fresh process's imports + the model build + the warm-up clip's time beyond its share
            imports = process_s(EXTRACTOR_MODULES[feature])
            rec = {"rtf": round(rtf, 4), "startup_s": round(imports + build_s + max(0.0, first.seconds - rtf * warm[0].duration), 2),
                   "config": backbone_config(feature, params)}
            if feature in ("faces", "vggface", "resnet50"):
                rec["faces_rate_hz"] = float(params.get("faces", {}).get("rate_hz", 5.0))
            if feature == "faces":
                from pipeline.extract.faces import read_detections

                faces_meta, detections = read_detections(out)
                detections = {**read_detections(work / "faces_warm.parquet")[1], **detections}  # the warm-up clip's too
                rec["frame_pixels"] = cp.width * cp.height
                rec["bytes_per_step"] = round(out.stat().st_size / (media_s * rec["faces_rate_hz"]))
            entry["extract"][feature] = rec
            log(f"{feature}: real-time factor {rtf:.3f} (start-up {rec['startup_s']:.1f} s)")
    return entry


def measure_train_steps(params: dict, n_steps: int = 3, log=print, label: str = "params.yaml") -> dict[str, dict]:
    """s per optimisation step (forward, backward, Adam) of each grid model at `params`' sequence shapes
    and its recipe's batch, on random inputs: {model: {"s", "batch", "steps" (Σ steps per sample)}}.
    The best of `n_steps` after one warm-up step. A model that cannot be built is skipped with one line."""
    import torch

    from pipeline.models.registry import build_model, fit_modalities, forward

    corpus = (params.get("corpus") or {}).get("name", "demo")
    size = corpus_size(params, None, clips=None if corpus in KNOWN_CORPORA or corpus == "demo" else 1)
    _, shapes, _ = _sequences(params, size)
    train = params.get("train") or {}
    task = train.get("task", "classification")
    n_out = 4 if task == "classification" else len(train.get("targets") or [1])
    out: dict[str, dict] = {}
    for name in dict.fromkeys((params.get("grid") or {}).get("models") or []):
        rec = _recipe(params, name)
        batch = int(rec.get("batch_size", 16))
        try:
            dims = fit_modalities(name, {m: d for m, (_, d) in shapes.items() if m in (train.get("modalities") or shapes)})
            torch.manual_seed(0)
            model = build_model(name, dims, n_out, task, ((params.get("model") or {}).get(name) or {}).get("params") or {})
            optim = torch.optim.Adam(model.parameters(), lr=1e-4)
            x = {m: torch.randn(batch, shapes[m][0], d) for m, d in dims.items()}
            mask = {m: torch.ones(batch, shapes[m][0], dtype=torch.bool) for m in dims}
            best = float("inf")
            for i in range(n_steps + 1):
                t0 = time.perf_counter()
                optim.zero_grad(set_to_none=True)
                forward(model, x, mask).float().pow(2).mean().backward()
                optim.step()
                if i:  # the first step warms up
                    best = min(best, time.perf_counter() - t0)
        except Exception as e:  # any model error: this model is not calibrated
            log(f"train step {name}: skipped ({type(e).__name__}: {e})")
            continue
        out[name] = {"s": round(best, 5), "batch": batch, "steps": sum(shapes[m][0] for m in dims), "label": label,
                     "params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
        log(f"train step {name}: {best * 1000:.1f} ms at batch {batch}, {out[name]['steps']} steps per sample")
    return out
