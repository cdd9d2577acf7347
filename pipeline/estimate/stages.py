"""The figures of every stage `dvc repro` would run: the corpus stage and each extraction stage from the
measured rates × media seconds and analytic byte counts, the stages after extraction from
after_extraction.py, and a line for each stage that cannot fit this machine."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from pipeline.core.paths import REPO_ROOT
from pipeline.estimate.after_extraction import _post_extraction
from pipeline.estimate.inputs import CorpusSize
from pipeline.estimate.rates import Machine, nearest_kind
from pipeline.estimate.result import PROCESS_BASE_MB, SHARED, Estimate, StageEstimate
from pipeline.estimate.shapes import backbone_factor, feature_dim, feature_rate

#: The extraction stages in dvc.yaml's order: stage -> (feature table, params section).
EXTRACTION = {
    "faces": ("faces", "faces"),
    "face_embed": ("vggface", "face_embed"),
    "resnet50": ("resnet50", "resnet50"),
    "lld": ("egemaps", "lld"),
    "compare": ("compare", "compare"),
    "wav2vec2": ("wav2vec2", "wav2vec2"),
    "bert": ("bert", "bert"),
    "import": ("import", "import"),
}
POST = ("segment", "train", "importance", "train_eliminate", "evaluate", "evaluate_eliminate", "report")


def dvc_stage_names(dvc_file: str | Path = REPO_ROOT / "dvc.yaml") -> list[str]:
    """The stage names of dvc.yaml, unexpanded (read as YAML: cheap, no DVC)."""
    try:
        return list((yaml.safe_load(Path(dvc_file).read_text()) or {}).get("stages") or {})
    except (OSError, yaml.YAMLError):
        return list(EXTRACTION) + ["corpus", *POST]


# ---- the estimate --------------------------------------------------------------------------------


def estimate(params: dict, corpus: CorpusSize, rates: dict, machine: Machine, rehearsal: dict | None = None,
             stage_names: list[str] | None = None, workers: int | None = None) -> Estimate:
    """The figures of every stage. `workers` (default: MER_WORKERS, else one per usable core, as the
    stages run): the rates are one process's, so a stage whose work the workers share takes its time
    ÷ workers (the ideal; two workers ran the demo's stages 1.2-1.9× faster, docs/benchmarks.md) and
    holds its peak × workers (each worker process holds its own model and batch)."""
    notes: list[str] = []
    warnings: list[str] = []
    kinds = rates.get("kinds") or {}
    rk = nearest_kind(machine.kind, [k for k in kinds if k != "gpu"])
    kr = kinds.get(rk, {}) if rk else {}
    if rk is None:
        notes.append("no rates in benchmarks/rates.json: extraction times are not estimated (run `mer estimate --calibrate`)")
    elif rk != machine.kind:
        notes.append(f"no rates for this CPU kind ({machine.kind}): using the nearest kind's, {rk}")
    if kr.get("measured"):
        notes.append(f"rates of {rk}: measured {kr['measured']} on {kr.get('clips', '?')} demo clips, "
                     f"{kr.get('cpus', '?')} CPUs at load average {kr.get('load_average', '?')}; the load now: "
                     f"{os.getloadavg()[0]:.1f} (times scale with the share of the cores a stage gets; "
                     "`mer estimate --calibrate` remeasures)")
    if not (kinds.get("gpu") or {}).get("extract"):
        notes.append("GPU: no measured figures (benchmarks/rates.json has no `gpu` entry): the GPU column stays empty")
    names = stage_names if stage_names is not None else dvc_stage_names()
    stages: list[StageEstimate] = []

    # corpus
    cr = kr.get("corpus") or {}
    if corpus.name == "demo":
        t = cr.get("demo_s_per_media_s")
        stages.append(StageEstimate(
            "corpus", 1, None if t is None else t * corpus.media_s + cr.get("startup_s", 0.0), None,
            corpus.media_s * cr.get("demo_bytes_per_media_s", 43_600),
            PROCESS_BASE_MB + cr.get("demo_mb_above_base", 750),
            "measured generation s per media s × media s" if t is not None else "not measured",
            "demo's media bytes per media s (measured) × media s", "measured peak of the demo's corpus stage"))
    else:
        t = cr.get("s_per_clip")
        stages.append(StageEstimate(
            "corpus", 1, None if t is None else t * corpus.clips, None, corpus.clips * 400.0,
            PROCESS_BASE_MB + corpus.clips * 2e-3,
            "measured s per clip (probe of each file) × clips" if t is not None else "not measured (probes every file's header)",
            "analytic: manifest ≈ 400 B per clip (media stay in corpus.root)", "analytic: process base + manifest rows"))

    # extraction
    er = kr.get("extract") or {}
    faces_rate = feature_rate("faces", params)
    crop = int((params.get("faces") or {}).get("crop_size", 224))
    clip_crops_mb = corpus.max_clip_s * faces_rate * crop * crop * 3 / 2**20
    for stage, (feature, section) in EXTRACTION.items():
        if stage not in names:
            continue
        used = feature in ((params.get("segment") or {}).get("modalities") or {}).values()
        r = er.get(feature) or {}
        how, notes_s = [], []
        cpu = None
        if stage == "import":  # the section's folder and each of its sources (import/<name>)
            tables = ["import"] + [f"import/{n}" for n in ((params.get("import") or {}).get("sources") or {})]
            used = any(t in ((params.get("segment") or {}).get("modalities") or {}).values() for t in tables)
            disk = sum(corpus.media_s * feature_rate(t, params) * (feature_dim(t, params) + 2) * 4 for t in tables)
            stages.append(StageEstimate(stage, 1, r.get("startup_s", 5.0) + len(tables) * corpus.clips * r.get("s_per_clip", 0.005),
                                        None, disk, PROCESS_BASE_MB + 100,
                                        f"analytic: reads one small CSV per clip and folder ({len(tables)}; ≈ 5 ms each) + start-up",
                                        "analytic: rows × (dim + t) × 4 B", "analytic: process base + one clip's CSV",
                                        [] if used else ["its tables are not in segment.modalities (dvc repro runs it anyway)"]))
            continue
        if corpus.feature_only:  # the extract stage gives a media extractor no clip (pipeline/extract/stage.py)
            startup, peak = r.get("startup_s"), r.get("peak_rss_mb")
            stages.append(StageEstimate(
                stage, 1, startup, None, 0.0, peak if peak is not None else PROCESS_BASE_MB,
                "the corpus has no media (feature-only): the measured start-up only" if startup is not None
                else "the corpus has no media (feature-only): its start-up, not measured", "an empty table",
                "measured peak of the stage on the demo (an upper bound: no clip is read)" if peak is not None
                else "analytic: process base (the model's size not measured)",
                ["its table has no rows: the corpus is feature-only"]))
            continue
        if r.get("rtf") is not None:
            factor, why = backbone_factor(feature, params, r)
            scale = 1.0
            if feature in ("faces", "vggface", "resnet50"):
                scale = faces_rate / float(r.get("faces_rate_hz", faces_rate))
                if scale != 1:
                    how.append(f"× {scale:g} for faces.rate_hz {faces_rate:g} (calibrated at {r.get('faces_rate_hz'):g} Hz)")
            if feature == "faces" and corpus.frame_pixels and r.get("frame_pixels"):
                px = params.get("faces", {}).get("downscale")
                pixels = corpus.frame_pixels if not px else min(corpus.frame_pixels, int(px) ** 2 * 3 // 4)
                scale *= pixels / float(r["frame_pixels"])
                how.append(f"× {pixels / float(r['frame_pixels']):.2g} for the frame size (MTCNN's pyramid ∝ pixels)")
            if why:
                notes_s.append(why)
            cpu = r["rtf"] * factor * scale * corpus.media_s + r.get("startup_s", 0.0)
            how.insert(0, f"measured real-time factor {r['rtf']:.3g} × {corpus.media_s:,.0f} media s + start-up {r.get('startup_s', 0.0):.1f} s")
        else:
            how.append("not measured on any CPU kind (run `mer estimate --calibrate`)")
        if feature == "faces":
            frames = corpus.media_s * faces_rate
            disk = frames * float(r.get("bytes_per_step", 12_000))
            how_disk = f"{frames:,.0f} detection steps × {r.get('bytes_per_step', 12_000):,.0f} B (measured on the demo: crops stored)"
        else:
            rows = corpus.media_s * feature_rate(feature, params)
            disk = rows * (feature_dim(feature, params) + 3) * 4
            how_disk = f"analytic: {rows:,.0f} rows × ({feature_dim(feature, params)} dims + t, present) × 4 B, before Parquet compression"
        peak = r.get("peak_rss_mb")
        how_mem = "measured peak of the stage on the demo (flat in the clip count: benchmarks/extract.py memory ratio 0.99)"
        if peak is None:
            peak, how_mem = PROCESS_BASE_MB + 500, "analytic: process base + model (not measured)"
        if feature in ("faces", "vggface", "resnet50"):
            peak += clip_crops_mb
            how_mem += f" + one clip's crops ({corpus.max_clip_s:.0f} s × {faces_rate:g} Hz × {crop}² × 3 B = {clip_crops_mb:,.0f} MB)"
        if not used:
            notes_s.append("its table is not in segment.modalities (dvc repro runs it anyway)")
        gpu = None
        g = (kinds.get("gpu") or {}).get("extract", {}).get(feature)
        if cpu is not None and g and g.get("rtf") is not None:
            gpu = g["rtf"] * corpus.media_s + g.get("startup_s", 0.0)
        stages.append(StageEstimate(stage, 1, cpu, gpu, disk, peak, "; ".join(how), how_disk, how_mem, notes_s,
                                    fixed_s=r.get("startup_s", 0.0) if cpu is not None else 0.0))

    stages += _post_extraction(params, corpus, kr, rehearsal, names, notes)

    if workers is None:
        from pipeline.core.compute import stage_workers

        workers = stage_workers()
    if workers > 1:
        notes.append(f"{workers} workers (MER_WORKERS, default one per core): the stages that share their work "
                     f"({', '.join(s.stage for s in stages if s.stage in SHARED)}) take their one-process time ÷ {workers} "
                     f"(a start-up once: every worker pays its own at the same time) "
                     f"and hold {workers} × its peak memory; MER_WORKERS=1 gives the one-process figures")
        for s in stages:
            if s.stage in SHARED:
                s.cpu_s = None if s.cpu_s is None else s.fixed_s + (s.cpu_s - s.fixed_s) / workers
                s.peak_mb = None if s.peak_mb is None else s.peak_mb * workers
                s.how_time += f"; ÷ {workers} workers" + (" (the start-up once)" if s.fixed_s else "")
                s.how_memory += f"; × {workers} worker processes"

    for s in stages:
        if s.peak_mb is not None and s.peak_mb * 2**20 > machine.ram_bytes:
            warnings.append(f"{s.stage}: peak memory ≈ {s.peak_mb / 1024:,.1f} GB > this machine's RAM "
                            f"{machine.ram_bytes / 2**30:,.1f} GB: it cannot run here")
    est = Estimate(corpus, machine.kind, rk, machine, stages, notes, warnings)
    disk = est.totals()["disk_bytes"] or 0
    if disk > machine.disk_free_bytes:
        warnings.append(f"disk: the run writes ≈ {disk / 2**30:,.1f} GB, {machine.disk_path} has "
                        f"{machine.disk_free_bytes / 2**30:,.1f} GB free: it cannot finish here")
    return est
