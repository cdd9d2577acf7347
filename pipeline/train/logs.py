"""What a training run writes besides model.pt and history.csv: its curves through DVCLive (under the run's
dvclive/, nothing else), and the benchmark hook's timing line (benchmarks/scale.py)."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.runs.params import TrainParams

LIVE_DIR = "dvclive"


def benchmark_max_steps() -> int | None:
    """Benchmark hook (benchmarks/scale.py): with env MER_MAX_STEPS=S every run stops after S optimiser
    steps of its first epoch (then its devel pass, as usual) and prints one line `MER_BENCHMARK {json}`
    with the timing; unset (the pipeline's normal runs), None and nothing changes."""
    return int(os.environ.get("MER_MAX_STEPS") or 0) or None


def benchmark_line(name: str, seed: int, fold: int | None, params: TrainParams, n: int, max_steps: int,
                    tick: float, stepped: float) -> None:
    per_epoch = -(-n // params.batch_size)
    print("MER_BENCHMARK " + json.dumps({
        "run": name, "seed": seed, "fold": fold, "epochs": params.epochs, "batch_size": params.batch_size,
        "sequences": n, "steps_per_epoch": per_epoch, "steps": min(max_steps, per_epoch),
        "steps_s": stepped - tick, "devel_s": time.perf_counter() - stepped}), flush=True)


def open_live(path: Path) -> Any:
    """A DVCLive logger writing only under `path`: no dvc.yaml, no experiment, no report, no Studio."""
    os.environ.setdefault("DVC_STUDIO_OFFLINE", "true")  # never post to DVC Studio
    from dvclive import Live

    try:
        return Live(str(path), resume=False, report=None, save_dvc_exp=False, dvcyaml=None)
    except Exception as e:  # dvclive asks git for a baseline revision: a repository without commits fails
        warnings.warn(f"dvclive logging off for {path} ({type(e).__name__}: {e}); history.csv still has the curves")
        return None


def log_row(live: Any, row: dict[str, float]) -> None:
    if live is None:
        return
    for k, v in row.items():
        if k != "epoch" and isinstance(v, (int, float)) and np.isfinite(v):
            live.log_metric(k, float(v), plot=True)
    live.next_step()
