"""Benchmark: a paper's experiment at its corpus's real size (scaled by --fraction), without the media.

    python benchmarks/scale.py --preset 003-iemocap [--fraction 0.25] [--steps 5] [--seeds K] [--repeats R]
                               [--family MODEL-STRATEGY] [--stop-after STAGE] [--stage-timeout S]
                               [--workdir DIR] [--keep] [--results DIR] [--dry-run]

1. A throwaway project folder (a temporary one, or --workdir, which must be empty or new): params.yaml is
   this repository's with the preset applied (pipeline/presets.py), then its `train.seeds` cut to the first
   K (--seeds) and a speaker_random protocol's `repeats` to R (--repeats), both said in the JSON; data/corpus/
   (manifest, labels) and data/features/<name>.parquet for every table the preset's segment.modalities read,
   written by benchmarks/scale_corpus.py at the corpus's size x fraction with the real schemas and metadata
   (its FIGURES table gives every figure's source). First the disk they and the segments need is estimated
   and printed (stderr); a run that cannot fit the free disk stops there with one line of numbers.
2. The preset's stages after extraction, as this repository's dvc.yaml resolves them for its params
   (segment, train@…, importance@…, train_eliminate@…, evaluate@…, evaluate_eliminate@…, report), each as
   its own process running its dvc.yaml `cmd` in the throwaway folder. Per stage: wall seconds; peak RSS,
   os.wait4's ru_maxrss (the largest resident set of the stage's process and of the descendants it waited
   for, not their sum), taken by a bare wrapper process (see _WRAPPER); peak_tree_pss_mb, the largest sum
   of the proportional set sizes of all the stage's processes (its worker pool's helpers and forkserver
   included; shared pages counted once), sampled every 0.5 s: what the machine must hold while the stage
   runs on several workers; bytes_written, the growth of data/ (file sizes) over the stage.
   Training is capped through pipeline/train/loop.py's benchmark hook (env MER_MAX_STEPS = --steps): every run
   makes --steps optimiser steps of its first epoch, then its devel pass, and prints their times. The full
   preset's training time is extrapolated as the sum over runs of epochs x (steps per epoch x seconds per
   step + devel seconds), times the seeds and repeats cut away, plus the train stages' time outside those
   loops (process start, loading, model build, saving) once, as measured. The loops' part is an upper
   bound: early stopping may end a run before its last epoch. --family runs one model x strategy of the
   grid (a quick look, or the test suite's rehearsal); the extrapolation then covers that family alone.
3. One JSON line on stdout (per-stage figures, the corpus figures, the extrapolation), also written to
   benchmarks/results/scale_<preset>_<fraction>.json (--results), which `mer estimate` reads.

The stages run exactly as `dvc repro` would run them; nothing here depends on their file formats.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import math
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# run as a script, benchmarks/ is on sys.path; imported (tests/test_scale.py), the importer loads
# scale_corpus first. Never put benchmarks/ on sys.path: its ray.py would shadow the ray package.
import scale_corpus  # noqa: E402  (benchmarks/ is not a package)

DOWNSTREAM = ("segment", "train", "importance", "train_eliminate", "evaluate", "evaluate_eliminate", "report")
TRAINING = ("train", "train_eliminate")
HOOK = "MER_BENCHMARK "  # the line pipeline/train/loop.py's benchmark hook prints per run
DISK_MARGIN = 1 << 30  # bytes kept free besides the estimate (logs, models, reports, temporary files)
GB = 1e9


class Refused(SystemExit):
    """The run cannot fit; its message is the one line said to the user."""


# ------------------------------------------------------------------------------------------------
# The throwaway project
# ------------------------------------------------------------------------------------------------


def make_project(workdir: Path, preset: str, seeds: int | None, repeats: int | None,
                 family: str | None = None) -> dict[str, Any]:
    """params.yaml with the preset applied and the cuts; dvc.yaml; stages/ and pipeline/ linked in (the
    stages' cmd and the report's code hash find them where dvc.yaml says). Returns the cuts made."""
    from ruamel.yaml import YAML

    from pipeline.presets import apply_preset, merge

    workdir.mkdir(parents=True, exist_ok=True)
    params = workdir / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", params)
    apply_preset(preset, params)
    yaml = YAML()
    data = yaml.load(params.read_text())
    cuts: dict[str, Any] = {}
    all_seeds = list(data["train"]["seeds"])
    if seeds is not None and seeds < len(all_seeds):
        merge(data, {"train": {"seeds": all_seeds[:seeds]}})
    cuts["seeds"] = {"run": min(seeds or len(all_seeds), len(all_seeds)), "preset": len(all_seeds)}
    part = data["segment"]["partition"]
    if part.get("protocol") == "speaker_random":
        n = int(part.get("repeats", 1))
        if repeats is not None and repeats < n:
            merge(data, {"segment": {"partition": {"repeats": repeats}}})
        cuts["repeats"] = {"run": min(repeats or n, n), "preset": n}
    if family is not None:  # one model x strategy of the grid (its importance search only from standard runs)
        grid = data["grid"]
        families = [f"{m}-{s}" for m in grid["models"] for s in grid["strategies"]]
        if family not in families:
            raise ValueError(f"--family {family}: not in the preset's grid ({', '.join(families)})")
        model, strategy = family.rsplit("-", 1)
        eliminate = [m for m in grid.get("eliminate", []) if m == model and strategy == "standard"]
        merge(data, {"grid": {"models": [model], "strategies": [strategy], "eliminate": eliminate}})
        cuts["families"] = {"run": [family], "preset": families}
    buf = io.StringIO()
    yaml.dump(data, buf)
    params.write_text(buf.getvalue())
    shutil.copyfile(REPO / "dvc.yaml", workdir / "dvc.yaml")
    for d in ("stages", "pipeline"):
        (workdir / d).symlink_to(REPO / d, target_is_directory=True)
    return cuts


@contextlib.contextmanager
def stdout_to_stderr():
    """File descriptor 1 onto 2 for the block (DVC writes to the stream it holds, not to sys.stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def downstream_stages(workdir: Path) -> list[tuple[str, str]]:
    """(name, cmd) of the stages after extraction, in dvc.yaml's order (a valid order to run them), as DVC
    resolves its matrix/foreach grid from the throwaway params.yaml."""
    from dvc.repo import Repo

    with stdout_to_stderr():  # DVC's 'Initialized …' lines: stdout carries only the JSON line
        Repo.init(str(workdir), no_scm=True).close()
    with Repo(str(workdir)) as repo:
        stages = [(s.name, s.cmd) for s in repo.index.stages]  # name: train@mult-standard
    return [(name, cmd) for name, cmd in stages if name.split("@")[0] in DOWNSTREAM]


# ------------------------------------------------------------------------------------------------
# Disk
# ------------------------------------------------------------------------------------------------


def disk_estimate(plan, specs: dict[str, Any], seg) -> dict[str, float]:
    """Bytes the feature tables and the segments need. Features: rows x (4·D + 16) (random floats do not
    compress; t, present, clip id, spans). Segments: `segments_min`, each modality's float32 once on the
    layout's steps (no padding, a stacked context as an index), the least any format can store; and
    `segments_padded`, padded to the longest sequence with each stacked frame materialised (n·D), as
    the .npz arrays were stored when this benchmark was written."""
    import numpy as np

    from pipeline.segment.align import grid_steps
    from pipeline.segment.layouts import (
        context_frames,
        sample_starts,
        stack_factor,
        window_starts,
    )

    features = 0
    for modality, feature in seg.modalities.items():
        spec = specs[feature]
        rows = scale_corpus.feature_rows(plan, spec)
        features += rows * (4 * spec.dim + 16 + (16 if spec.rate_hz is None else 0))
    dur = np.array([c.duration for c in plan.clips])
    dims = {m: specs[f].dim for m, f in seg.modalities.items()}
    if seg.layout == "native":
        least = padded = 0
        for m, f in seg.modalities.items():
            cap = seg.native_max_steps.get(m, seg.max_steps)
            lengths = np.minimum([specs[f].rows(c, plan.words_per_s) for c in plan.clips], cap)
            least += int(lengths.sum()) * dims[m] * 4
            padded += len(lengths) * int(lengths.max()) * dims[m] * 4
    elif seg.layout == "aligned":
        lengths = np.array([grid_steps(d, seg.rate_hz, seg.max_steps) for d in dur])
        least = int(lengths.sum()) * sum(dims.values()) * 4
        padded = len(lengths) * int(lengths.max()) * sum(dims.values()) * 4
    else:  # frames / windows: pieces of each clip's whole grid
        full = [grid_steps(d, seg.rate_hz, np.iinfo(np.int64).max) for d in dur]
        T = seg.frames if seg.layout == "frames" else seg.win
        pieces = sum(len(sample_starts(n, T) if seg.layout == "frames" else window_starts(n, seg.win, seg.hop))
                     for n in full)
        wide = dict(dims)
        for m in seg.stack if seg.layout == "frames" else []:
            rate = specs[seg.modalities[m]].rate_hz
            wide[m] = dims[m] * (context_frames(seg.stack_seconds, seg.rate_hz) if seg.stack_seconds
                                 else stack_factor(rate, seg.rate_hz))
        least = int(sum(full)) * sum(dims.values()) * 4
        padded = pieces * T * sum(wide.values()) * 4
    return {"features": features, "segments_min": least, "segments_padded": padded}


def check_disk(preset: str, fraction: float, where: Path, need: dict[str, float]) -> dict[str, float]:
    free = shutil.disk_usage(where).free
    gb = {k: round(v / GB, 2) for k, v in need.items()} | {"free": round(free / GB, 2)}
    print(f"scale: {preset} at fraction {fraction:g} needs about {gb['features']} GB of feature tables and "
          f"{gb['segments_min']}-{gb['segments_padded']} GB of segments; {gb['free']} GB free under {where}",
          file=sys.stderr, flush=True)
    least = need["features"] + need["segments_min"] + DISK_MARGIN
    if least > free:
        raise Refused(f"scale: {preset} at fraction {fraction:g} cannot fit: it needs at least {least / GB:.1f} GB "
                      f"(feature tables {gb['features']} GB + segments {gb['segments_min']} GB + 1 GB margin) but "
                      f"{where} has {gb['free']} GB free; use a smaller --fraction or a --workdir on a larger disk")
    return gb


# ------------------------------------------------------------------------------------------------
# Running and measuring the stages
# ------------------------------------------------------------------------------------------------


def tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:  # a temporary file renamed away meanwhile
                pass
    return total


# The stage runs under this small wrapper, which spawns it and reaps it with wait4: a process forked from
# this benchmark (a GB of Python with torch and the corpus plan) would start with this process's resident
# set as its ru_maxrss (Linux carries the forking process's high-water mark over fork and exec), so every
# stage would report at least that. The wrapper (a bare interpreter, ~10 MB) is the floor instead. It also
# enforces the stage timeout itself, so a stopped stage's rusage is still collected.
_WRAPPER = """
import json, os, sys, time
out, timeout, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
me, session = os.getpid(), os.getsid(0)

def tree_pss_kb():
    # the proportional set sizes of every process in this session but the wrapper: the stage, its
    # worker pool's helpers and forkserver (shared pages counted once in all)
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[3]) != session:
                    continue
            with open(f"/proc/{d}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration, ValueError, IndexError):
            pass
    return total

pid = os.posix_spawn(argv[0], argv, os.environ)
deadline, killed, tree_kb, polls = time.monotonic() + timeout if timeout > 0 else None, False, 0, 0
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    if deadline is not None and time.monotonic() > deadline:
        os.kill(pid, 9)
        killed, deadline = True, None
    if polls % 10 == 0:
        tree_kb = max(tree_kb, tree_pss_kb())
    polls += 1
    time.sleep(0.05)
with open(out, "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss, "tree_pss_kb": tree_kb,
               "killed": killed}, f)
"""


def run_stage(name: str, cmd: str, workdir: Path, env: dict[str, str], logs: Path,
              timeout: float | None = None) -> dict[str, Any]:
    argv = shlex.split(cmd)
    if argv[0] == "python":
        argv[0] = sys.executable
    safe = name.replace("@", "__")
    usage_file = logs / f"{safe}.rusage.json"
    before = tree_bytes(workdir / "data")
    with open(logs / f"{safe}.out", "w") as out, open(logs / f"{safe}.err", "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-c", _WRAPPER, str(usage_file), str(timeout or 0), *argv],
                                cwd=workdir, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            proc.wait()
        except BaseException:  # interrupted or terminated: the stage goes too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        wall = time.perf_counter() - t0
    usage = json.loads(usage_file.read_text())
    result = {"wall_s": round(wall, 2), "peak_rss_mb": round(usage["maxrss_kb"] / 1024, 1),
              "peak_tree_pss_mb": round(usage["tree_pss_kb"] / 1024, 1),
              "bytes_written": tree_bytes(workdir / "data") - before, "ok": usage["rc"] == 0}
    if usage["killed"]:
        result["error"] = f"stopped after --stage-timeout {timeout:g} s (peak RSS and bytes until then)"
    elif usage["rc"]:
        tail = (logs / f"{safe}.err").read_text(errors="replace").strip().splitlines()[-6:]
        result["error"] = f"exit {usage['rc']}: " + " | ".join(tail)
    return result


def hook_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line[len(HOOK):]) for line in path.read_text().splitlines() if line.startswith(HOOK)]


def extrapolate(runs: list[dict[str, Any]], stages: dict[str, dict], factor: float, fraction: float = 1.0) -> dict[str, Any]:
    """The full preset's training time from the capped runs (see the module docstring): at the rehearsal's
    fraction, and at the corpus's full size (steps per epoch and the devel pass linear in the clips)."""
    loop = sum(r["epochs"] * (r["steps_per_epoch"] * r["steps_s"] / r["steps"] + r["devel_s"]) for r in runs)
    capped = sum(r["steps_s"] + r["devel_s"] for r in runs)
    train_walls = sum(s["wall_s"] for name, s in stages.items() if name.split("@")[0] in TRAINING)
    outside = max(train_walls - capped, 0.0)
    full = loop * factor + outside
    full_size = loop * factor / fraction + outside
    steps = [r["steps_s"] / r["steps"] for r in runs]
    return {
        "runs_measured": len(runs), "runs_full": round(len(runs) * factor),
        "s_per_step_mean": round(sum(steps) / len(steps), 4) if steps else None,
        "devel_s_mean": round(sum(r["devel_s"] for r in runs) / len(runs), 3) if runs else None,
        "steps_per_epoch": sorted({r["steps_per_epoch"] for r in runs}),
        "epochs": sorted({r["epochs"] for r in runs}),
        "outside_loop_s": round(outside, 1), "full_s": round(full, 1), "full_h": round(full / 3600, 2),
        "full_size_h": round(full_size / 3600, 2),
        "how": "sum over the runs of epochs x (steps/epoch x s/step + devel s), x the seeds/repeats cut away, plus "
               "the train stages' time outside those loops (start, loading, model build, saving) once as measured; "
               "an upper bound on the loops (early stopping may end a run sooner); full_size_h: the loops / fraction",
    }


def stage_workers(env: dict[str, str]) -> int:
    """The local workers each stage ran its shared work on (MER_WORKERS, else one per usable core): a
    stage's wall time is that many processes' (`mer estimate` turns it back into one process's)."""
    from pipeline.core.compute import compute_settings, stage_workers

    return stage_workers(compute_settings(env))


def cpu_info() -> dict[str, Any]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), platform.processor())
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
    return {"model": model, "cores": len(os.sched_getaffinity(0)), "flags": [f for f in wanted if f in flags]}


# ------------------------------------------------------------------------------------------------


def rehearse(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from pipeline.core.config import load_section
    from pipeline.presets import load_preset

    load_preset(args.preset)  # a clear line for an unknown preset
    cuts = make_project(workdir, args.preset, args.seeds, args.repeats, args.family)
    params_file = workdir / "params.yaml"
    seg = load_section("segment", params_file)
    corpus = dict(scale_corpus_section(params_file))
    plan = scale_corpus.plan_corpus(corpus, args.fraction, args.seed)
    specs = {f: scale_corpus.feature_spec(f, params_file) for f in dict.fromkeys(seg.modalities.values())}
    need = disk_estimate(plan, specs, seg)
    if args.dry_run:  # the figures and the disk only: nothing written, nothing run
        features = {f: {"dim": s.dim, "rate_hz": s.rate_hz, "rows": scale_corpus.feature_rows(plan, s),
                        "source": s.source} for f, s in specs.items()}
        return {"benchmark": "scale", "preset": args.preset, "fraction": args.fraction, "dry_run": True,
                "corpus": plan.figures() | {"features": features},
                "disk_gb": {k: round(v / GB, 2) for k, v in need.items()}
                | {"free": round(shutil.disk_usage(workdir).free / GB, 2)}}
    disk = check_disk(args.preset, args.fraction, workdir, need)

    t0 = time.perf_counter()
    data = workdir / "data"
    scale_corpus.write_corpus(plan, data / "corpus" / "manifest.parquet", data / "corpus" / "labels.parquet")
    features = {}
    for name, spec in specs.items():
        path = data / "features" / f"{name}.parquet"
        rows = scale_corpus.write_features(plan, spec, path)
        features[name] = {"dim": spec.dim, "rate_hz": spec.rate_hz, "rows": rows, "bytes": path.stat().st_size,
                          "source": spec.source}
    synthesis = {"wall_s": round(time.perf_counter() - t0, 2),
                 "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                 "bytes_written": tree_bytes(data)}

    logs = workdir / "logs"
    logs.mkdir()
    env = {**os.environ, "MER_MAX_STEPS": str(args.steps), "PYTHONPATH": str(REPO),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_STUDIO_OFFLINE": "true"}
    stages: dict[str, dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []
    failed = None
    reached = False
    for name, cmd in downstream_stages(workdir):
        group = name.split("@")[0]
        if reached and group != args.stop_after:
            break  # --stop-after: the stages after that group are not run (nor reported)
        reached = group == args.stop_after
        if failed:
            stages[name] = {"ok": False, "error": f"not run: {failed} failed"}
            continue
        print(f"scale: {name} …", file=sys.stderr, flush=True)
        try:
            stages[name] = run_stage(name, cmd, workdir, env, logs, args.stage_timeout)
        except (SystemExit, KeyboardInterrupt):  # SIGTERM (e.g. `timeout`) or ^C: report what was measured
            stages[name] = {"ok": False, "error": "interrupted: the rehearsal was stopped during this stage"}
            failed = name
            break
        if name.split("@")[0] in TRAINING:
            runs += hook_lines(logs / f"{name.replace('@', '__')}.out")
        if not stages[name]["ok"]:
            failed = name
    factor = math.prod(cuts[k]["preset"] / cuts[k]["run"] for k in ("seeds", "repeats") if k in cuts)
    rss = [s["peak_rss_mb"] for s in stages.values() if "peak_rss_mb" in s]
    return {
        "benchmark": "scale", "preset": args.preset, "fraction": args.fraction, "steps": args.steps,
        "stop_after": args.stop_after,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_info(),
        "threads": os.environ.get("MER_THREADS"), "workers": stage_workers(env), "cuts": cuts,
        "corpus": plan.figures() | {"features": features, "sources": scale_corpus.sources(plan.info.name)},
        "disk_gb": disk, "synthesis": synthesis, "stages": stages,
        "peak_rss_mb_max": max(rss) if rss else None,
        "peak_tree_pss_mb_max": max((s.get("peak_tree_pss_mb", 0) for s in stages.values()), default=None),
        "train_extrapolated": extrapolate(runs, stages, factor, args.fraction),
        "ok": all(s["ok"] for s in stages.values()) and bool(stages),
    }


def scale_corpus_section(params_file: Path) -> dict[str, Any]:
    from pipeline.core.config import read_params

    return dict(read_params(params_file)["corpus"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", required=True, help="presets/<name>.yaml (001-crema-d, 003-iemocap, 002-aff-wild2)")
    ap.add_argument("--fraction", type=float, default=0.05, help="share of the corpus's clips (0 < F <= 1)")
    ap.add_argument("--steps", type=int, default=5, help="optimiser steps per training run (MER_MAX_STEPS)")
    ap.add_argument("--seeds", type=int, help="train only the preset's first K seeds (extrapolated to all)")
    ap.add_argument("--repeats", type=int, help="speaker_random: only R of the preset's repeats (extrapolated)")
    ap.add_argument("--family", help="only this MODEL-STRATEGY of the grid (the extrapolation then covers it alone)")
    ap.add_argument("--dry-run", action="store_true", help="print the corpus figures and the disk needed; run nothing")
    ap.add_argument("--stage-timeout", type=float, help="stop a stage after this many seconds (reported, not fatal "
                    "to the JSON line; the stages after it are not run)")
    ap.add_argument("--stop-after", choices=DOWNSTREAM, help="run the stages up to this one only (e.g. segment)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus")
    ap.add_argument("--workdir", type=Path, help="the throwaway project here (new or empty); default a temp dir")
    ap.add_argument("--keep", action="store_true", help="keep the throwaway project (else it is deleted)")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results", help="where the JSON goes")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleanup (and the running stage) on `timeout`
    if not 0 < args.fraction <= 1:
        ap.error(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.steps < 1 or (args.seeds is not None and args.seeds < 1) or (args.repeats is not None and args.repeats < 1):
        ap.error("--steps, --seeds and --repeats must be at least 1")
    if args.workdir is not None:
        if args.workdir.exists() and any(args.workdir.iterdir()):
            ap.error(f"--workdir {args.workdir}: not empty (the project is written there and deleted afterwards)")
        workdir = args.workdir.resolve()
    else:
        workdir = Path(tempfile.mkdtemp(prefix=f"scale-{args.preset}-"))
    from pipeline.core.errors import PipelineError

    try:
        result = rehearse(args, workdir)
    except Refused as e:
        print(e, file=sys.stderr)
        return 2
    except (PipelineError, ValueError) as e:
        print(f"scale: {args.preset}: {e}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result["workdir"] = str(workdir) if args.keep else None
    line = json.dumps(result)
    print(line, flush=True)
    if args.dry_run:
        return 0
    from pipeline.core.store import write_text

    partial = f"_to-{args.stop_after}" if args.stop_after else ""  # never mistaken for a whole rehearsal
    write_text(args.results / f"scale_{args.preset}_{args.fraction:g}{partial}.json", line + "\n")
    return 0 if result["ok"] else 1  # the JSON line is printed either way


if __name__ == "__main__":
    sys.exit(main())
