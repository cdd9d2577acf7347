"""Training recipes: the papers' optimiser, learning-rate schedule, early-stopping rule and
learning-rate grid, as the training loop (`pipeline.train.loop.train_one`) applies them.

Kept apart from the loop so each recipe reads on its own; the settings are TrainParams fields, which
`model_train` / params.yaml's `model.<name>.train` override per model (a paper's own recipe):

    optimizer     adam (default; 000 §5.3, 001 §4.3, 002 §3.3) | adamw (003 §5.3) | sgd (004 §4.2, with
                  `momentum`), torch's own classes, at `lr` (1e-4) with `weight_decay` (0.0).
    early_stop    metric (default): the devel selection metric, higher better | loss: the devel loss,
                  lower better (001 §4.3 "early stopping criterion based on the development loss",
                  003 §5.3). `patience` epochs without a strictly better value stop the run (000 §5.3:
                  15; 003 §5.3: 8); the weights of the best epoch by that value are kept (ties: the
                  earlier epoch).
    lr_schedule   none (default) | step: torch StepLR, lr × `lr_factor` every `lr_step` epochs (001
                  §4.3: "learning decay set to five epochs"; its factor is not stated) | plateau: torch
                  ReduceLROnPlateau on the early-stopping value, lr × `lr_factor` after `lr_patience`
                  epochs without a strictly better one (000 §5.3: halve after 5; 001's presets: × 0.1
                  after 5 on the devel loss — the reading of 001 §4.3's "learning decay set to five
                  epochs" from MulT's code, on which the AuxFormer code builds: its `--decay`/`--when`
                  is ReduceLROnPlateau's patience with factor 0.1).
    lr_grid       null (default) | [lr, …]: one full run per learning rate (same seed), the best by the
                  early-stopping value kept as the run; lr_grid.csv lists them (004 §4.2).

The learning-rate grid is given the function that trains one run (`train_lr_grid(train_one, …)`), so
this module does not import the loop and the loop can import it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import torch

from pipeline.core.store import write_text
from pipeline.runs.feed import TrainError
from pipeline.runs.files import run_dir
from pipeline.runs.params import TrainParams
from pipeline.segment.contract import Segments

LR_GRID_FILE = "lr_grid.csv"


# ---- optimiser, schedule, early stopping ---------------------------------------------------------


def make_optimizer(parameters: Any, params: TrainParams) -> torch.optim.Optimizer:
    """torch's Adam (000 §5.3, 001 §4.3, 002 §3.3), AdamW (003 §5.3; decoupled weight decay) or SGD
    with `momentum` (004 §4.2), at `lr` with `weight_decay`."""
    if params.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=params.lr, weight_decay=params.weight_decay)
    if params.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=params.lr, weight_decay=params.weight_decay)
    if params.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay)
    raise TrainError(f"train.optimizer: unknown optimizer {params.optimizer!r}; use 'adam', 'adamw' or 'sgd'")


def make_scheduler(optim: torch.optim.Optimizer, params: TrainParams) -> Any:
    """None, StepLR (lr × lr_factor every lr_step epochs, 001 §4.3) or ReduceLROnPlateau (lr × lr_factor
    after lr_patience epochs without a strictly better early-stopping value, 000 §5.3). The plateau
    scheduler is stepped with the early-stopping score (higher better: the metric, or −loss)."""
    if params.lr_schedule == "none":
        return None
    if params.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optim, step_size=params.lr_step, gamma=params.lr_factor)
    if params.lr_schedule == "plateau":
        # patience − 1: torch reduces once more than `patience` epochs were bad; threshold 0 = strictly better
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optim, mode="max", factor=params.lr_factor,
            patience=params.lr_patience - 1, threshold=0.0, threshold_mode="abs", eps=0.0,
        )
    raise TrainError(f"train.lr_schedule: unknown schedule {params.lr_schedule!r}; use 'none', 'step' or 'plateau'")


def early_stop_column(early_stop: str, metric: str) -> str:
    """The history.csv column early stopping and model selection follow: devel_<metric> or devel_loss."""
    if early_stop == "metric":
        return f"devel_{metric}"
    if early_stop == "loss":
        return "devel_loss"
    raise TrainError(f"train.early_stop: unknown value {early_stop!r}; use 'metric' or 'loss'")


def stop_score(row: dict[str, Any], column: str) -> float:
    """The early-stopping value of an epoch's row as a score, higher better (−loss for devel_loss);
    a non-finite value is the worst score."""
    value = row[column]
    value = value if column != "devel_loss" else -value
    return value if np.isfinite(value) else -np.inf


# ---- learning-rate grid --------------------------------------------------------------------------


def train_lr_grid(
    train_one: Callable[..., dict[str, Any]],
    segments: Segments,
    params: TrainParams,
    model_name: str,
    strategy_name: str,
    seed: int,
    out_dir: str | Path,
    device: str | torch.device | None,
    progress: bool,
    importance: dict[str, Any] | None,
    fold: int | None,
    rate: float | None = None,
) -> dict[str, Any]:
    """`lr_grid` (004 §4.2: "We select the best model among the learning rates"): train the run once per
    learning rate with `train_one` (`pipeline.train.loop.train_one`; same seed, same batches), keep the one
    with the best early-stopping value on devel (ties: the earlier in the list) as the run's model.pt,
    history.csv and dvclive/, and write lr_grid.csv (one row per learning rate: lr, best_epoch,
    epochs_run, the devel values, selected). The summary gains `lr`, the chosen one."""
    target = run_dir(out_dir, model_name, strategy_name, seed, fold, rate)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    # the overrides are applied already: the candidates train with these params and no grid
    plain = params.model_copy(update={"lr_grid": None, "model_train": {}})
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".lr_grid_") as tmp:
        for i, lr in enumerate(params.lr_grid):
            cand = Path(tmp) / f"lr_{i}"
            summary = train_one(segments, plain.model_copy(update={"lr": lr}), model_name, strategy_name, seed, cand,
                                device, progress, importance, fold, rate)
            value = summary[summary["early_stop"]]
            value = value if summary["early_stop"] != "devel_loss" else -value
            value = value if np.isfinite(value) else -np.inf
            rows.append({"lr": lr, **summary})
            if best is None or value > best[0]:  # strict: ties keep the earlier learning rate
                best = (value, i, summary)
        assert best is not None
        chosen = run_dir(Path(tmp) / f"lr_{best[1]}", model_name, strategy_name, seed, fold, rate)
        target.mkdir(parents=True, exist_ok=True)
        for entry in chosen.iterdir():  # each replaced in one rename (same file system)
            dest = target / entry.name
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(entry, dest)
    table = pl.DataFrame([{**r, "selected": i == best[1]} for i, r in enumerate(rows)])
    write_text(target / LR_GRID_FILE, table.write_csv())
    return {**best[2], "lr": float(params.lr_grid[best[1]])}
