"""`mer estimate`: the expected wall time, disk written and peak memory of every stage `dvc repro` would
run, before a long run, so that a user knows whether to start it here or on a cluster (issue 20, 3).

Inputs:
- the corpus: data/corpus/manifest.parquet when the corpus stage has run (its clip count and each
  clip's duration), else the corpus's known size (`KNOWN_CORPORA`, sourced per entry), else `--clips`;
- the rates of this machine: `benchmarks/rates.json`, one entry per CPU kind (`cpu_kind()`, from the
  /proc/cpuinfo flags that decide the speed of our kernels: avx2 < avx512f < avx512_bf16 < amx),
  written by `mer estimate --calibrate` (the real extractors run in-process on a few demo clips, as
  benchmarks/extract.py does). A kind with no figures borrows the nearest kind's, and the output says so;
- the scale rehearsal's JSON lines `benchmarks/results/scale_<preset>_<fraction>.json` (benchmarks/
  scale.py) for the stages after extraction, when present.

Every figure carries how it was obtained (`how`): measured rate × media seconds, an analytic byte
count (rows × dim × 4), the rehearsal's measurement extrapolated linearly, or "not measured".
Nothing here reads the media or grows with the corpus beyond the manifest's duration column.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.paths import MANIFEST, REPO_ROOT

RATES_FILE = REPO_ROOT / "benchmarks" / "rates.json"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

#: CPU kinds, slowest first: the flags that change which kernels torch/oneDNN run (bf16 is chosen
#: by measurement only where avx512_bf16 or AMX exist; docs/precision-and-threads.md).
CPU_LEVELS = ("baseline", "avx2", "avx512f", "avx512_bf16", "amx")

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

#: A fresh stage process: Python, torch and the pipeline imported, before any model is built (MB).
#: Measured: `python -c "import torch, pipeline.extract.runner"` peaks at ≈ 350-450 MB RSS here.
PROCESS_BASE_MB = 400.0

#: The words per second of speech a BERT table has rows for: conversational English runs at about
#: 150 words per minute (Tauroza & Allison, 1990, Applied Linguistics 11(1): 90-105) ≈ 2.5 words/s.
WORDS_PER_SECOND = 2.5


class EstimateError(PipelineError):
    """A corpus whose size cannot be known, or an unreadable rates table."""


# ---- the corpora's known sizes --------------------------------------------------------------------


@dataclass(frozen=True)
class KnownCorpus:
    clips: int
    mean_seconds: float
    speakers: int
    frame_pixels: int | None  # pixels of one video frame the face detector sees (None: varies/unknown)
    source: str
    sessions: int | None = None


#: The corpora at their published sizes (clip count and mean duration; the speakers and sessions a
#: leave-one-group-out protocol folds over). Durations are approximate where the source gives only a total.
KNOWN_CORPORA: dict[str, KnownCorpus] = {
    # Cao et al. 2014, "CREMA-D", IEEE Trans. Affective Computing 5(4), §3: 7,442 clips of 91 actors,
    # 480×360 FLV video; clips last 1-5 s (mean ≈ 2.6 s, our reading of the released files' lengths)
    "crema_d": KnownCorpus(7442, 2.6, 91, 480 * 360, "Cao et al. 2014 (CREMA-D) §3: 7,442 clips, 91 actors; mean ≈ 2.6 s"),
    # Livingstone & Russo 2018, PLoS ONE 13(5): 24 actors × 60 audio-visual speech clips, 1280×720,
    # ≈ 3.7 s each
    "ravdess": KnownCorpus(1440, 3.7, 24, 1280 * 720, "Livingstone & Russo 2018 (RAVDESS): 1,440 AV speech clips, ≈ 3.7 s"),
    # Busso et al. 2008, "IEMOCAP", LRE 42(4): ≈ 12 h in 10,039 turns (mean ≈ 4.5 s), 5 sessions,
    # 720×480 video of both actors (our crop: the speaker's half, 360×480); 5,531 in the four-class set
    "iemocap": KnownCorpus(10039, 4.5, 10, 360 * 480, "Busso et al. 2008 (IEMOCAP): 10,039 turns, ≈ 12 h, 5 sessions", 5),
    # Busso et al. 2017, "MSP-IMPROV", IEEE TAC 8(1): 8,438 turns in ≈ 9 h (mean ≈ 3.9 s), 12 actors in 6 sessions
    "msp_improv": KnownCorpus(8438, 3.9, 12, None, "Busso et al. 2017 (MSP-IMPROV): 8,438 turns, ≈ 9 h, 12 actors", 6),
    # Stappen et al. 2021/2022 (MuSe-Stress, Ulm-TSST): 69 participants, ≈ 5 h 47 min in total
    "ulm_tsst": KnownCorpus(69, 302.0, 69, None, "Christ et al. 2022 (MuSe 2022, Ulm-TSST): 69 recordings, ≈ 5 h 47 min"),
    # Kollias & Zafeiriou 2019 (Aff-Wild2): ≈ 560 videos, ≈ 2.8 M frames at 30 fps ≈ 26 h (mean ≈ 167 s);
    # resolutions vary (YouTube), so no pixel scaling
    "aff_wild2": KnownCorpus(560, 167.0, 560, None, "Kollias & Zafeiriou 2019 (Aff-Wild2): ≈ 560 videos, ≈ 2.8 M frames at 30 fps"),
}


@dataclass
class CorpusSize:
    name: str
    clips: int
    media_s: float  # seconds of media in all
    max_clip_s: float  # the longest clip (bounds a stage's per-clip memory)
    speakers: int
    frame_pixels: int | None
    source: str
    sessions: int | None = None

    @property
    def mean_s(self) -> float:
        return self.media_s / max(self.clips, 1)


def corpus_size(params: dict, manifest: str | Path | None = MANIFEST, clips: int | None = None,
                mean_seconds: float | None = None) -> CorpusSize:
    """The corpus's clip count and seconds of media: the manifest's (when it exists and is the corpus
    named in `params`), else the demo's parameters or the corpus's known size; `clips` and
    `mean_seconds` override the count and the mean duration."""
    corpus = params.get("corpus") or {}
    name = corpus.get("name", "demo")
    size: CorpusSize | None = None
    if manifest is not None and Path(manifest).exists():
        size = _manifest_size(Path(manifest), name)
    if size is None and name == "demo":
        n = int(corpus.get("speakers", 8)) * int(corpus.get("clips_per_speaker", 8))
        sec = float(corpus.get("seconds", 4.0))
        size = CorpusSize("demo", n, n * sec, sec, int(corpus.get("speakers", 8)),
                          int(corpus.get("width", 320)) * int(corpus.get("height", 240)), "the demo's params (corpus section)")
    if size is None and name in KNOWN_CORPORA:
        k = KNOWN_CORPORA[name]
        n = k.clips
        if name == "iemocap" and corpus.get("classes", "four") == "four":
            n = 5531  # the four-class set (neutral, happy+excited, angry, sad): issue 20, Busso et al. 2008
        # the longest clip: 3 × the mean (no source gives the maximum; it bounds the per-clip memory)
        size = CorpusSize(name, n, n * k.mean_seconds, k.mean_seconds * 3, k.speakers, k.frame_pixels,
                          f"known size: {k.source}", k.sessions)
    if size is None:
        if clips is None:
            raise EstimateError(f"corpus '{name}': no manifest ({manifest}) and no known size; pass --clips N "
                                "(and --mean-seconds S)")
        sec = mean_seconds or 4.0
        size = CorpusSize(name, clips, clips * sec, sec, max(3, clips // 10), None, "--clips (speakers: clips / 10)")
    if clips is not None or mean_seconds is not None:
        n = clips if clips is not None else size.clips
        sec = mean_seconds if mean_seconds is not None else size.mean_s
        size = CorpusSize(size.name, n, n * sec, max(size.max_clip_s, sec), size.speakers, size.frame_pixels,
                          f"{size.source}; overridden: {n} clips × {sec:g} s", size.sessions)
    return size


def _manifest_size(path: Path, name: str) -> CorpusSize | None:
    """The manifest's size, reading only its columns `duration`, `speaker`, `session`; None when it
    belongs to another corpus than `name` (a manifest of an earlier run)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.store import META_KEY

    try:
        pf = pq.ParquetFile(path)
        meta = json.loads((pf.schema_arrow.metadata or {}).get(META_KEY, b"{}"))
        cols = [c for c in ("duration", "speaker", "session") if c in pf.schema_arrow.names]
        table = pf.read(columns=cols)
    except Exception as e:  # pyarrow's errors name no file
        raise EstimateError(f"{path}: not a readable manifest: {e}") from None
    if meta.get("name") != name or "duration" not in cols:
        return None
    dur = table["duration"]
    speakers = len(pc.unique(table["speaker"])) if "speaker" in cols else 1
    sessions = None
    if "session" in cols and table["session"].null_count < len(table):
        sessions = len(pc.unique(table["session"].drop_null()))
    frame_pixels = KNOWN_CORPORA[name].frame_pixels if name in KNOWN_CORPORA else None
    return CorpusSize(name, len(table), float(pc.sum(dur).as_py() or 0.0), float(pc.max(dur).as_py() or 0.0),
                      speakers, frame_pixels, f"manifest {path}", sessions)


# ---- params: params.yaml with a preset applied in memory ------------------------------------------


def load_params(params_file: str | Path, preset: str | None = None, demo: bool = False) -> dict:
    """params.yaml as a dict, with `preset` applied as `mer preset apply` would (nothing is written)."""
    path = Path(params_file)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise EstimateError(f"{path}: not found") from None
    except yaml.YAMLError as e:
        raise EstimateError(f"{path}: not valid YAML: {e}") from None
    if preset:
        from pipeline.presets import load_preset, merge, preset_edits

        data = copy.deepcopy(data)
        for edits, replace in preset_edits(load_preset(preset), demo):
            merge(data, copy.deepcopy(edits), replace)
    return data


def dvc_stage_names(dvc_file: str | Path = REPO_ROOT / "dvc.yaml") -> list[str]:
    """The stage names of dvc.yaml, unexpanded (read as YAML: cheap, no DVC)."""
    try:
        return list((yaml.safe_load(Path(dvc_file).read_text()) or {}).get("stages") or {})
    except (OSError, yaml.YAMLError):
        return list(EXTRACTION) + ["corpus", *POST]


# ---- this machine --------------------------------------------------------------------------------


def cpu_kind(cpuinfo: str | None = None, machine: str | None = None) -> str:
    """`<arch>-<level>`, the level the best of CPU_LEVELS the flags of /proc/cpuinfo show, e.g.
    `x86_64-avx512_bf16`; `<arch>-baseline` without /proc/cpuinfo (not Linux) or on other archs."""
    machine = machine or platform.machine() or "unknown"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    level = "baseline"
    if "avx2" in flags:
        level = "avx2"
    if "avx512f" in flags:
        level = "avx512f"
    if "avx512_bf16" in flags:
        level = "avx512_bf16"
    if "amx_tile" in flags or "amx_bf16" in flags:
        level = "amx"
    return f"{machine}-{level}"


def nearest_kind(kind: str, kinds: list[str]) -> str | None:
    """`kind` when present, else the kind of the same architecture nearest in CPU_LEVELS (ties: the
    slower one, so that the estimate errs long), else any kind."""
    if kind in kinds:
        return kind
    if not kinds:
        return None
    arch, _, level = kind.rpartition("-")

    def distance(k: str) -> tuple[int, int, int]:
        a, _, lv = k.rpartition("-")
        i = CPU_LEVELS.index(level) if level in CPU_LEVELS else 0
        j = CPU_LEVELS.index(lv) if lv in CPU_LEVELS else 0
        return (a != arch, abs(i - j), j > i)

    return min(sorted(kinds), key=distance)


@dataclass
class Machine:
    kind: str
    ram_bytes: int
    disk_free_bytes: int
    disk_path: str


def this_machine(disk_path: str | Path = ".") -> Machine:
    try:
        import psutil

        ram = int(psutil.virtual_memory().total)
    except ImportError:
        ram = 0
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    probe = Path(disk_path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return Machine(cpu_kind(), ram, int(shutil.disk_usage(probe).free), str(probe.resolve()))


# ---- rates ---------------------------------------------------------------------------------------


def load_rates(path: str | Path = RATES_FILE) -> dict:
    """benchmarks/rates.json: {"kinds": {kind: {...}}}; an empty table when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return {"kinds": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EstimateError(f"{path}: not readable JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("kinds"), dict):
        raise EstimateError(f"{path}: expected {{\"kinds\": {{<cpu kind>: ...}}}}")
    return data


def read_rehearsals(preset: str, results_dir: str | Path = RESULTS_DIR) -> tuple[dict | None, list[str]]:
    """The rehearsals of `preset`, combined: each stage from the file of the largest fraction that ran it
    (`_parse_rehearsal`'s record per stage, with that file's fraction, clips and cuts beside it), and one
    note per file skipped. Read defensively: the format of benchmarks/scale.py's lines may still change."""
    notes: list[str] = []
    records = []
    for path in sorted(Path(results_dir).glob(f"scale_{preset}_*.json")):
        try:
            records.append(_parse_rehearsal(path))
        except Exception as e:  # any shape we cannot read: skip it, with one line
            notes.append(f"skipped {path.name}: {type(e).__name__}: {e}")
    if not records:
        return None, notes
    stages: dict[str, dict] = {}
    for rec in sorted(records, key=lambda r: r["fraction"]):  # a larger fraction's figures win
        for name, fig in rec["stages"].items():
            stages[name] = {**fig, **{k: rec[k] for k in ("fraction", "clips", "runs", "families", "file")}}
    failed = [f for f in sorted({f for r in records for f in r["failed"]}) if f.split("@", 1)[0] not in stages]
    files = sorted({st["file"] for st in stages.values()})
    return {"files": files, "failed": failed, "stages": stages}, notes


def _parse_rehearsal(path: Path) -> dict:
    """One rehearsal file → {"fraction", "file", "clips", "runs", "families", "failed", "stages": {family:
    {"wall_s", "peak_rss_mb", "bytes_written", "full_s"}}}. `runs` and `families` undo the rehearsal's
    cuts (seeds × repeats, and model × strategy families, run / preset); `full_s` is a full-size time
    the rehearsal extrapolated itself (training)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip().startswith("{")]
    if not lines:
        raise ValueError("no JSON line")
    obj = json.loads(lines[-1])
    fraction = obj.get("fraction")
    if fraction is None:  # scale_<preset>_<fraction>.json
        fraction = float(path.stem.rsplit("_", 1)[-1])
    fraction = float(fraction)
    cuts = obj.get("cuts") if isinstance(obj.get("cuts"), dict) else {}
    runs, families = 1.0, 1.0
    for name, cut in cuts.items():
        if not isinstance(cut, dict):
            continue
        run, full = cut.get("run"), cut.get("preset")
        if isinstance(run, (int, float)) and isinstance(full, (int, float)) and run > 0:
            runs *= full / run
        elif isinstance(run, list) and isinstance(full, list) and run:
            families *= len(full) / len(run)
    raw = obj.get("stages", obj)
    items = raw.items() if isinstance(raw, dict) else ((r.get("stage") or r.get("name"), r) for r in raw)
    stages: dict[str, dict] = {}
    failed: list[str] = []
    for name, rec in items:
        if not isinstance(rec, dict) or not isinstance(name, str):
            continue
        if rec.get("ok") is False:  # stopped or not run: its figures are not the stage's
            failed.append(name)
            continue
        family = name.split("@", 1)[0]
        wall = _number(rec, "wall_s", "seconds", "time_s")
        if wall is None:
            continue
        agg = stages.setdefault(family, {"wall_s": 0.0, "peak_rss_mb": 0.0, "bytes_written": 0.0, "full_s": None})
        agg["wall_s"] += wall
        agg["peak_rss_mb"] = max(agg["peak_rss_mb"], _number(rec, "peak_rss_mb", "rss_mb") or 0.0)
        agg["bytes_written"] += _number(rec, "bytes_written", "bytes") or 0.0
        full = next((rec[k] for k in rec if ("extrapolat" in k or k.startswith("full")) and isinstance(rec[k], (int, float))), None)
        if full is not None:
            agg["full_s"] = (agg["full_s"] or 0.0) + float(full)
    extrapolated = obj.get("train_extrapolated")
    if isinstance(extrapolated, dict) and "train" in stages and stages["train"]["full_s"] is None:
        if isinstance(extrapolated.get("full_size_h"), (int, float)):  # the loops of the measured families at full size
            stages["train"]["full_s"] = extrapolated["full_size_h"] * 3600 * families
        elif isinstance(extrapolated.get("full_s"), (int, float)):  # at the fraction, seeds/repeats restored
            stages["train"]["full_s"] = extrapolated["full_s"] / fraction * families
    if not stages:
        raise ValueError("no stage with wall_s")
    clips = (obj.get("corpus") or {}).get("clips") if isinstance(obj.get("corpus"), dict) else None
    return {"fraction": fraction, "file": path.name, "clips": clips if isinstance(clips, int) else None,
            "runs": runs, "families": families, "failed": failed, "stages": stages}


def _number(rec: dict, *keys: str) -> float | None:
    for k in keys:
        if isinstance(rec.get(k), (int, float)):
            return float(rec[k])
    return None


# ---- the estimate --------------------------------------------------------------------------------


@dataclass
class StageEstimate:
    stage: str
    processes: int  # DVC stages of this family (train@…: one per model × strategy)
    cpu_s: float | None
    gpu_s: float | None
    disk_bytes: float | None
    peak_mb: float | None
    how_time: str
    how_disk: str
    how_memory: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Estimate:
    corpus: CorpusSize
    kind: str  # this machine's
    rates_kind: str | None  # the kind whose rates were used
    machine: Machine
    stages: list[StageEstimate]
    notes: list[str]
    warnings: list[str]

    def totals(self) -> dict[str, float | None]:
        def total(attr: str) -> float | None:
            vals = [getattr(s, attr) for s in self.stages]
            return None if all(v is None for v in vals) else sum(v for v in vals if v is not None)

        return {"cpu_s": total("cpu_s"), "gpu_s": total("gpu_s"), "disk_bytes": total("disk_bytes"),
                "peak_mb": max((s.peak_mb for s in self.stages if s.peak_mb is not None), default=None)}

    def to_json(self) -> dict:
        out = asdict(self)
        out["totals"] = self.totals()
        out["corpus"]["mean_s"] = self.corpus.mean_s
        return out


def feature_dim(feature: str, params: dict) -> int:
    """The width of a feature table under `params` (the extractors' documented dims; params.yaml's
    comments and docs/extractors.md)."""
    if feature == "vggface":
        return 4096
    if feature == "resnet50":
        return 512 if (params.get("resnet50") or {}).get("layer") == "conv5_3_3x3" else 2048
    if feature == "egemaps":
        return 25
    if feature == "compare":
        return 130 if (params.get("compare") or {}).get("deltas", True) else 65
    if feature == "wav2vec2":
        w = params.get("wav2vec2") or {}
        if w.get("model", "random") == "random":
            cfg = w.get("random_config") or {}
            return int((cfg.get("conv_dim") or [512])[-1]) if w.get("output", "cnn") == "cnn" else int(cfg.get("hidden_size", 768))
        large = "large" in str(w.get("model"))
        return 512 if w.get("output", "cnn") == "cnn" else (1024 if large else 768)
    if feature == "bert":
        model = str((params.get("bert") or {}).get("model", ""))
        return 384 if "minilm" in model.lower() else 1024 if "large" in model else 768
    if feature == "import":
        cols = (params.get("import") or {}).get("columns")
        return len(cols) if isinstance(cols, list) else 8
    raise KeyError(feature)


def feature_rate(feature: str, params: dict) -> float:
    """Rows per second of media of a feature table."""
    if feature in ("vggface", "resnet50", "faces"):
        return float((params.get("faces") or {}).get("rate_hz", 5.0))
    if feature in ("egemaps", "compare"):
        return 100.0  # openSMILE LLDs: 10 ms hop
    if feature == "wav2vec2":
        return 50.0  # 20 ms frames (003 §5.2.2)
    if feature == "bert":
        return WORDS_PER_SECOND
    if feature == "import":
        return float((params.get("import") or {}).get("rate_hz") or 2.0)
    raise KeyError(feature)


#: Compute of the configured backbone relative to the one the rate was calibrated with, where they
#: differ: the FLOPs ratio of the architectures (weights do not change compute).
#: wav2vec2 with output `cnn` runs only the CNN feature encoder: base's 7 convolutions of 512 channels
#: take ≈ 2.45 GMAC per second of 16 kHz audio, the demo's random 64-channel config ≈ 0.04 GMAC (×61).
#: With output `hidden` base also runs 12 transformer layers of 768 (≈ 85 M parameters × 50 frames/s
#: ≈ 4.3 GMAC/s more). BERT-base (12 × 768) vs all-MiniLM-L6 (6 × 384): ≈ 8× the MACs per token.
def backbone_factor(feature: str, params: dict, calibrated: dict) -> tuple[float, str | None]:
    config = backbone_config(feature, params)
    if config == calibrated.get("config") or not calibrated.get("config"):
        return 1.0, None
    if feature == "wav2vec2":
        w = params.get("wav2vec2") or {}
        if w.get("model", "random") != "random" and "random" in calibrated["config"]:
            f = 61.0 if w.get("output", "cnn") == "cnn" else 61.0 + 107.0
            return f, f"scaled ×{f:g} from the calibrated {calibrated['config']} (FLOPs ratio; not measured)"
    if feature == "bert" and "minilm" in calibrated["config"].lower() and "minilm" not in config.lower():
        return 8.0, f"scaled ×8 from the calibrated {calibrated['config']} (BERT-base MACs per token; not measured)"
    return 1.0, f"calibrated with {calibrated['config']}, this run uses {config}: rate taken as is"


def backbone_config(feature: str, params: dict) -> str:
    if feature == "wav2vec2":
        w = params.get("wav2vec2") or {}
        if w.get("model", "random") == "random":
            cfg = w.get("random_config") or {}
            return f"random {len(cfg.get('conv_dim') or [])}x{(cfg.get('conv_dim') or [0])[-1]} cnn, output {w.get('output', 'cnn')}"
        return f"{Path(str(w.get('model'))).name}, output {w.get('output', 'cnn')}"
    if feature == "bert":
        return Path(str((params.get("bert") or {}).get("model", ""))).name
    if feature == "resnet50":
        return f"layer {(params.get('resnet50') or {}).get('layer', 'pool5')}"
    return ""


def _sequences(params: dict, corpus: CorpusSize) -> tuple[float, dict[str, tuple[int, int]], str]:
    """(number of sequences, {modality: (steps, dim)}, how) of the segment stage's layout."""
    seg = params.get("segment") or {}
    layout = seg.get("layout", "aligned")
    rate = float(seg.get("rate_hz", 5.0))
    mods = seg.get("modalities") or {}
    dims = {m: feature_dim(f, params) for m, f in mods.items()}
    mean_steps = corpus.mean_s * rate
    if layout == "windows":
        win, hop = int(seg.get("win", 250)), int(seg.get("hop", 50))
        per_clip = max(1.0, math.floor(max(mean_steps - win, 0) / hop) + 1)
        return corpus.clips * per_clip, {m: (win, d) for m, d in dims.items()}, f"windows of {win} steps, hop {hop}"
    if layout == "frames":
        frames = int(seg.get("frames", 100))
        stacked = set(seg.get("stack") or [])
        k = round(float(seg["stack_seconds"]) * rate) if seg.get("stack_seconds") else 1
        shapes = {m: (frames, d * (k if m in stacked else 1)) for m, d in dims.items()}
        return corpus.clips * max(1.0, math.ceil(mean_steps / frames)), shapes, f"samples of {frames} frames"
    if layout == "native":
        caps = seg.get("native_max_steps") or {}
        default = int(seg.get("max_steps", 64))
        shapes = {m: (int(caps.get(m, default)), d) for m, d in dims.items()}
        return float(corpus.clips), shapes, "one sequence per clip, each modality at its own rate (padded to its maximum)"
    steps = min(int(seg.get("max_steps", 64)), max(1, math.ceil(mean_steps)))
    return float(corpus.clips), {m: (steps, d) for m, d in dims.items()}, f"one sequence per clip, {steps} steps"


def _folds(params: dict, corpus: CorpusSize) -> tuple[int, float, float]:
    """(folds, train share, test share) of segment.partition."""
    part = (params.get("segment") or {}).get("partition") or {}
    protocol = part.get("protocol", "corpus")
    test, devel = float(part.get("test", 0.2)), float(part.get("devel", 0.2))
    if protocol == "leave_one_group_out":
        g = max(2, (corpus.sessions or corpus.speakers) if part.get("group", "speaker") == "session" else corpus.speakers)
        return g, (1 - 1 / g) * (1 - devel), 1 / g
    folds = int(part.get("repeats", 1)) if protocol == "speaker_random" else 1
    return folds, (1 - test) * (1 - devel) if protocol != "speaker_random" else 1 - test - devel, test


def _runs(params: dict) -> list[tuple[str, str, int]]:
    """(model, strategy, trainings per fold and seed) of the grid: one per training rate and lr."""
    grid = params.get("grid") or {}
    rates = grid.get("rates") or {}
    out = []
    for model in grid.get("models") or []:
        for strategy in grid.get("strategies") or []:
            out.append((model, strategy, 1 + len(rates.get(strategy) or [])))
    for model in grid.get("eliminate") or []:
        out.append((model, "eliminate", 1))
    return out


def _recipe(params: dict, model: str) -> dict:
    """train's settings with model.<name>.train over them."""
    train = dict(params.get("train") or {})
    train.update(((params.get("model") or {}).get(model) or {}).get("train") or {})
    return train


def estimate(params: dict, corpus: CorpusSize, rates: dict, machine: Machine, rehearsal: dict | None = None,
             stage_names: list[str] | None = None) -> Estimate:
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
        if stage == "import":
            cols = feature_dim("import", params)
            disk = corpus.media_s * feature_rate("import", params) * (cols + 2) * 4
            stages.append(StageEstimate(stage, 1, r.get("startup_s", 5.0) + corpus.clips * r.get("s_per_clip", 0.005), None, disk,
                                        PROCESS_BASE_MB + 100, "analytic: reads one small CSV per clip (≈ 5 ms each) + start-up",
                                        "analytic: rows × (dim + t) × 4 B", "analytic: process base + one clip's CSV",
                                        [] if used else ["its table is not in segment.modalities (dvc repro runs it anyway)"]))
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
        stages.append(StageEstimate(stage, 1, cpu, gpu, disk, peak, "; ".join(how), how_disk, how_mem, notes_s))

    stages += _post_extraction(params, corpus, kr, rehearsal, names, notes)

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


def _post_extraction(params: dict, corpus: CorpusSize, kr: dict, rehearsal: dict | None, names: list[str],
                     notes: list[str]) -> list[StageEstimate]:
    n_seq, shapes, layout_how = _sequences(params, corpus)
    folds, train_share, test_share = _folds(params, corpus)
    width = sum(steps * (dim + 1) for steps, dim in shapes.values())  # values + presence mask (bytes/4)
    seg_bytes = n_seq * width * 4
    notes.append(f"sequences: {n_seq:,.0f} ({layout_how}); {folds} fold(s), train ≈ {train_share:.0%}, test ≈ {test_share:.0%}")
    runs = _runs(params)
    tr = kr.get("train_step_s") or {}
    reh = (rehearsal or {}).get("stages") or {}
    if rehearsal:
        notes.append(f"stages after extraction: the scale rehearsal ({', '.join(rehearsal['files'])}), its times and bytes "
                     "scaled by this corpus's clips over its clips and by the runs it cut (seeds, repeats, model × strategy families)")
        if rehearsal.get("failed"):
            notes.append(f"rehearsal stages that did not finish (analytic figures instead): {', '.join(rehearsal['failed'])}")
    seeds = len((params.get("train") or {}).get("seeds") or [0])
    out: list[StageEstimate] = []

    def from_rehearsal(stage: str, processes: int, analytic: StageEstimate) -> StageEstimate:
        r = reh.get(stage)
        if not r:
            return analytic
        frac = r["clips"] / max(corpus.clips, 1) if r.get("clips") else r.get("fraction") or 1.0
        runs = r.get("runs", 1.0) * r.get("families", 1.0) if stage not in ("segment", "report") else 1.0
        if r.get("full_s") is not None:
            t, how_t = r["full_s"], "rehearsal: capped epochs timed, full-size training extrapolated by the rehearsal"
        else:
            t, how_t = r["wall_s"] / frac * runs, f"rehearsal wall s / {frac:.3g}" + (f" × {runs:g} runs it cut" if runs != 1 else "")
        peak, how_m = r["peak_rss_mb"], "rehearsal peak RSS"
        if frac < 1:  # memory that grows at most linearly: the smaller of that and the analytic bound
            linear = PROCESS_BASE_MB + max(r["peak_rss_mb"] - PROCESS_BASE_MB, 0) / frac
            peak = max(r["peak_rss_mb"], min(linear, analytic.peak_mb or linear))
            how_m = (f"rehearsal peak ({r['peak_rss_mb']:,.0f} MB at {frac:.3g} of the corpus) extrapolated: the smaller "
                     f"of linear growth above the process base and {analytic.how_memory}")
        per_clip = stage not in ("train", "train_eliminate")  # a model.pt's size does not grow with the corpus
        disk = r["bytes_written"] / (frac if per_clip else 1.0) * runs if r["bytes_written"] else analytic.disk_bytes
        how_d = ("rehearsal bytes written" + (f" / {frac:.3g}" if per_clip else " (models: not scaled by the corpus)")
                 + (f" × {runs:g} runs" if runs != 1 else "")) if r["bytes_written"] else analytic.how_disk
        return StageEstimate(stage, processes, t, None, disk, peak or analytic.peak_mb, how_t, how_d, how_m, analytic.notes)

    if "segment" in names:
        out.append(from_rehearsal("segment", 1, StageEstimate(
            "segment", 1, None, None, seg_bytes, PROCESS_BASE_MB + 2 * seg_bytes / 2**20, "not measured (needs the rehearsal)",
            "analytic: sequences × Σ steps × (dim + mask) × 4 B", "analytic bound: the feature rows and the segments held at once")))
    standard_runs = {m for m, s, _ in runs if s == "standard"}
    for family, strategies in (("train", lambda s: s != "eliminate"), ("train_eliminate", lambda s: s == "eliminate")):
        if family not in names:
            continue
        fam = [(m, s, k) for m, s, k in runs if strategies(s)]
        if not fam:
            continue
        steps_total, t_total, how_t = 0.0, 0.0, []
        for m, s, k in fam:
            rec = _recipe(params, m)
            lrs = len(rec.get("lr_grid") or [None])
            per_epoch = math.ceil(n_seq * train_share / int(rec.get("batch_size", 16)))
            steps = folds * seeds * k * lrs * int(rec.get("epochs", 40)) * per_epoch
            steps_total += steps
            st = _step_seconds(tr, m, rec, shapes, params)
            t_total = None if (t_total is None or st is None) else t_total + steps * st
        how = (f"{steps_total:,.0f} optimizer steps (every epoch: early stopping can only shorten it) × s/step calibrated "
               "for the model (nearest record, scaled by tokens per batch × parameters)"
               if t_total is not None else f"{steps_total:,.0f} optimizer steps; s/step not measured (rehearsal or calibration)")
        mparams = _model_bytes(params, fam, shapes)
        disk = sum(folds * seeds * k for _, _, k in fam) * (mparams or 0) * 2 + len(fam) * 2e5
        peak = PROCESS_BASE_MB + (seg_bytes + 4 * (mparams or 0)) / 2**20
        out.append(from_rehearsal(family, len(fam), StageEstimate(
            family, len(fam), t_total, None, disk, peak, how,
            "analytic: a model.pt per fold × seed × rate (parameters × 4 B, + its best copy)",
            "analytic bound: the segments loaded whole + parameters, gradients and Adam's two moments")))
    conds = _conditions(params, list(shapes))
    for family, fam in (("evaluate", [r for r in runs if r[1] != "eliminate"]), ("evaluate_eliminate", [r for r in runs if r[1] == "eliminate"]),
                        ("importance", [(m, "standard", 1) for m in standard_runs & set((params.get("grid") or {}).get("eliminate") or [])])):
        if family not in names or not fam:
            continue
        n_test = n_seq * test_share
        t: float | None = 0.0
        for m, s, k in fam:
            rec = _recipe(params, m)
            st = _step_seconds(tr, m, rec, shapes, params)
            # importance scores devel with each modality out, and all present
            n_c = conds if family != "importance" else len(shapes) + 1
            batches = math.ceil((n_test if family != "importance" else n_seq * 0.2) / int(rec.get("batch_size", 16)))
            # a forward pass costs about a third of a training step (forward + backward ≈ 3 forwards)
            t = None if (t is None or st is None) else t + folds * seeds * k * n_c * batches * st / 3
        test_bytes = n_test / max(folds, 1) * width * 4 if folds > 1 else n_test * width * 4
        out.append(from_rehearsal(family, len(fam), StageEstimate(
            family, len(fam), t, None, len(fam) * folds * seeds * conds * n_test * 8 + len(fam) * 1e5,
            PROCESS_BASE_MB + (seg_bytes + 2 * test_bytes) / 2**20,
            f"forward passes ({conds} conditions × test batches × fold × seed) × s/step / 3 (a forward ≈ a third of a step)" if t is not None else "not measured (needs the rehearsal or a train calibration)",
            "analytic: one prediction row (8 B per output) per test sequence × condition × seed",
            "analytic bound: the segments + one condition of the test split at a time")))
    if "report" in names:
        out.append(from_rehearsal("report", 1, StageEstimate(
            "report", 1, None, None, 5e6 + len(runs) * 2e5, PROCESS_BASE_MB + 300, "not measured (needs the rehearsal)",
            "the demo's report (dvc.lock: 5.1 MB) + per run", "analytic: the figures' data (not measured)")))
    return out


def _conditions(params: dict, modalities: list[str]) -> int:
    """The number of evaluation conditions evaluate.conditions expands to (pipeline/missing/conditions.py)."""
    from pipeline.missing.conditions import parse_conditions

    entries = (params.get("evaluate") or {}).get("conditions") or []
    mods = [m for m in (params.get("train") or {}).get("modalities") or modalities if m in modalities] or modalities
    try:
        return len(parse_conditions(entries, mods))
    except Exception:  # an entry this version cannot expand: count the entries
        return len(entries)


def _step_seconds(tr: dict, model: str, rec: dict, shapes: dict[str, tuple[int, int]], params: dict) -> float | None:
    """s per training step of `model` at `rec`'s batch and `shapes`: the calibrated record of the same
    model nearest in tokens per batch and parameters, scaled by tokens × parameters (a step costs
    ≈ 6 FLOPs per parameter and token), or None when the model was never calibrated."""
    records = tr.get(model)
    if not records:
        return None
    records = [records] if isinstance(records, dict) else records
    tokens = int(rec.get("batch_size", 16)) * sum(s for s, _ in shapes.values())
    n = _param_count(params, model, shapes)

    def ratio(r: dict) -> float:
        t = tokens / (float(r.get("batch", 16)) * float(r.get("steps", 64)))
        return t * (n / r["params"] if n and r.get("params") else 1.0)

    best = min(records, key=lambda r: abs(math.log(ratio(r))))
    return float(best["s"]) * ratio(best)


def _param_count(params: dict, model: str, shapes: dict[str, tuple[int, int]]) -> int | None:
    """Trainable parameters of `model` as the train stage builds it for these shapes (built on the meta
    device: shapes only), or None when it cannot be built."""
    try:
        import torch

        from pipeline.models.registry import build_model, count_parameters, fit_modalities

        train = params.get("train") or {}
        dims = {m: d for m, (_, d) in shapes.items() if m in (train.get("modalities") or shapes)}
        task = train.get("task", "classification")
        n_out = 4 if task == "classification" else len(train.get("targets") or [1])
        over = ((params.get("model") or {}).get(model) or {}).get("params") or {}
        with torch.device("meta"):
            return count_parameters(build_model(model, fit_modalities(model, dims), n_out, task, over))
    except Exception:  # an unbuildable model: no parameter scaling
        return None


def _model_bytes(params: dict, fam: list, shapes: dict) -> float | None:
    """Largest parameter count × 4 B of the family's models."""
    counts = [_param_count(params, m, shapes) for m in {m for m, _, _ in fam}]
    return max((c for c in counts if c), default=0) * 4.0 or None


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
    steps = measure_train_steps(load_params(params_file, preset) if preset else params, log=log, label=label)
    entry["train_step_s"] = {}
    for model in {**(old.get("train_step_s") or {}), **steps}:  # one record per model and label
        kept = (old.get("train_step_s") or {}).get(model) or []
        kept = [kept] if isinstance(kept, dict) else kept
        entry["train_step_s"][model] = [r for r in kept if r.get("label") != label] + ([steps[model]] if model in steps else [])
    rates["kinds"][kind] = entry
    from pipeline.store import write_json

    write_json(rates_file, rates)
    return entry


def _calibrate_extractors(n_clips: int, params_file: str | Path, params: dict, log) -> dict:
    """{"measured", "clips", "cpus", "threads", "process_import_s", "load_average", "corpus", "extract"}
    of this machine: the extractors run on `n_clips` generated demo clips of 4 s (see `calibrate`)."""
    import importlib
    import subprocess
    import sys
    import tempfile

    from pipeline.config import load_section
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
                kw = dict(errors_dir=work / "err", cache_dir=None)
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

    from pipeline.models.registry import build_model, fit_modalities
    from pipeline.runs import forward

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
