"""This machine (its CPU kind, RAM and free disk) and the rates measured for it: benchmarks/rates.json,
one entry per CPU kind (written by `mer estimate --calibrate`), and the scale rehearsal's JSON lines
benchmarks/results/scale_<preset>_<fraction>.json (benchmarks/scale.py) for the stages after extraction."""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.paths import REPO_ROOT
from pipeline.estimate.inputs import EstimateError

RATES_FILE = REPO_ROOT / "benchmarks" / "rates.json"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

#: CPU kinds, slowest first: the flags that change which kernels torch/oneDNN run (bf16 is chosen
#: by measurement only where avx512_bf16 or AMX exist; docs/precision-and-threads.md).
CPU_LEVELS = ("baseline", "avx2", "avx512f", "avx512_bf16", "amx")


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
    for rec in sorted(records, key=lambda r: (r["fraction"], r["date"])):  # a larger fraction's, then a later run's win
        for name, fig in rec["stages"].items():
            stages[name] = {**fig, **{k: rec[k] for k in ("fraction", "clips", "runs", "families", "workers", "file")}}
    failed = [f for f in sorted({f for r in records for f in r["failed"]}) if f.split("@", 1)[0] not in stages]
    files = sorted({st["file"] for st in stages.values()})
    return {"files": files, "failed": failed, "stages": stages}, notes


def _parse_rehearsal(path: Path) -> dict:
    """One rehearsal file → {"fraction", "date", "workers", "file", "clips", "runs", "families", "failed",
    "stages": {family: {"wall_s", "peak_rss_mb", "bytes_written", "full_s"}}}. `runs` and `families` undo the
    rehearsal's cuts (seeds × repeats, and model × strategy families, run / preset); `full_s` is a full-size
    time the rehearsal extrapolated itself (training); `workers`: the local workers its stages ran on (1 where
    the file does not say: rehearsals before the every-core default)."""
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
        if rec.get("superseded"):  # annotated as measuring code since fixed: a smaller rehearsal's figures stand
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
    workers = obj.get("workers")
    return {"fraction": fraction, "date": str(obj.get("date") or ""), "file": path.name,
            "workers": workers if isinstance(workers, int) and workers >= 1 else 1,
            "clips": clips if isinstance(clips, int) else None,
            "runs": runs, "families": families, "failed": failed, "stages": stages}


def _number(rec: dict, *keys: str) -> float | None:
    for k in keys:
        if isinstance(rec.get(k), (int, float)):
            return float(rec[k])
    return None
