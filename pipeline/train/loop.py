"""Training one run: a model, a missing-modality training strategy and a seed on 'train', early
stopping on 'devel' (`train_one`). The grid of runs (models × strategies × seeds × folds, locally or
on Ray) is `pipeline.train.families.train_all`, re-exported here; the optimiser, schedule, early-stopping
rule and learning-rate grid are `pipeline.train.recipes`.

Layout (one run = one model, one missing-modality training strategy, one seed):

    <out_dir>/<model>/<strategy>/seed_<s>/model.pt      see `save_trained` (written atomically)
    <out_dir>/<model>/<strategy>/seed_<s>/history.csv   one row per epoch run (columns below)
    <out_dir>/<model>/<strategy>/seed_<s>/dvclive/      the same curves logged with DVCLive
    <out_dir>/<model>/<strategy>/rate_<r>/seed_<s>/…    the family trained at another missing rate r
                                                        (`train_all(rates=…)`, params.yaml grid.rates)

A run is named `<model>/<strategy>` everywhere downstream (train.json, evaluate outputs, the report).

Tasks (`train.task`):
    classification  one label per clip; cross-entropy; early stopping on devel macro-F1 (UF1).
    regression      per-step targets `train.targets` (segments' arousal/valence) where `label_mask` is
                    True and the step lies within the clip's length; loss 1 − mean over targets of the
                    CCC (000 §3.3 Eq. 12, 004 Eq. 3) computed over the batch's valid steps pooled, with
                    population statistics; early stopping on devel mean CCC (over the concatenated
                    devel sequences' valid steps, `pipeline.runs.metrics.regression_metrics`).

Each batch: the strategy (`pipeline.missing.make_strategy`) makes modalities missing on a copy of the
batch; the model's `training_loss(batch, task_loss)` is back-propagated when it defines one (its
'total'; other keys are logged as train_<key>), else `task_loss(model(x, mask))`.

history.csv columns: epoch, lr, train_loss, [train_<part> …], devel_loss, then the devel metrics —
classification: devel_accuracy, devel_macro_f1; regression: devel_ccc_<t> …, devel_ccc_mean,
devel_rmse_<t> … (devel_loss = 1 − devel_ccc_mean there) — and early_stop (the column that selects
the epoch, e.g. devel_macro_f1 or devel_loss; train.json and model.pt record it too).

Loop settings (TrainParams; `model_train` / params.yaml's `model.<name>.train` override them per model,
a paper's own recipe): optimizer, early_stop (with `patience`), lr_schedule and lr_grid as
pipeline/train/recipes.py describes them, and
    grad_clip     max global gradient norm (001 §4.3: 0.8); null = off.

Reproducibility: python, numpy and torch seeded with the run's seed, deterministic algorithms on;
batch order and the strategy draw from generators seeded by it too, so a CPU run is repeatable to the
bit. CUDA when available.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from pipeline.core.device import pick_device
from pipeline.core.paths import MODELS_DIR
from pipeline.core.store import write_text
from pipeline.missing.inputs import model_inputs
from pipeline.models.registry import ModelError, build_model, forward
from pipeline.runs.feed import (
    ModelBuildError,
    Split,
    TrainError,
    feed_run,
    selection_metric,
)
from pipeline.runs.files import (
    HISTORY_FILE,
    MODEL_FILE,
    run_dir,
    run_name,
    save_trained,
)
from pipeline.runs.params import TrainParams
from pipeline.segment.contract import Segments
from pipeline.segment.protocols import replicate
from pipeline.train.grid import loop_params, make_training_strategy, with_rate
from pipeline.train.logs import (
    LIVE_DIR,
    benchmark_line,
    benchmark_max_steps,
    log_row,
    open_live,
)
from pipeline.train.recipes import (
    early_stop_column,
    make_optimizer,
    make_scheduler,
    stop_score,
    train_lr_grid,
)

CCC_EPS = 1e-8  # keeps the CCC loss finite on a batch whose targets and predictions are all constant
# loop settings read with getattr so this module works before params.yaml/TrainParams define them


@dataclass
class TrainBatch:
    """One training batch as a model's `training_loss` sees it. x/mask are the data and PRESENCE masks;
    a model feeds itself `inputs()` / `inputs_full()`: the same through its input convention (the one
    function `pipeline.models.registry.forward` uses, pipeline/missing/inputs.py), with `valid` for padding."""

    x: dict[str, Tensor]  # after the training strategy
    mask: dict[str, Tensor]
    x_full: dict[str, Tensor]  # before it (the complete view)
    mask_full: dict[str, Tensor]
    y: Tensor  # labels [B] long (classification) or targets [B,T,K] float (regression)
    y_mask: Tensor | None  # [B,T] bool, regression only: the steps that count
    epoch: int  # 1-based
    valid: dict[str, Tensor] | None = None  # {mod: [B,T_m] bool} within the true length (None: no padding)
    missing_input: str = "mask"  # the model's input convention
    tokens: dict[str, Any] | None = None  # the model's missing tokens (convention `token`)

    def inputs(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(x, mask) after the strategy, as the model sees them."""
        return model_inputs(self.missing_input, self.x, self.mask, self.valid, self.tokens)

    def inputs_full(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(x, mask) of the complete view, as the model sees them."""
        return model_inputs(self.missing_input, self.x_full, self.mask_full, self.valid, self.tokens)


# ---- losses and scores ---------------------------------------------------------------------------


def ccc_loss(pred: Tensor, y: Tensor, y_mask: Tensor) -> Tensor:
    """1 − mean over the K targets of the CCC over the valid steps (pooled over the batch).

    pred, y: [B,T,K]; y_mask: [B,T] bool. Population statistics (000 §3.3 Eq. 12; the metric's
    convention, `pipeline.runs.metrics.ccc`)."""
    p, t = pred[y_mask].float(), y[y_mask].float()  # [n, K]
    if p.shape[0] == 0:
        raise TrainError("CCC loss of a batch without a valid target step")
    mp, mt = p.mean(0), t.mean(0)
    cov = ((p - mp) * (t - mt)).mean(0)
    ccc = 2 * cov / (p.var(0, unbiased=False) + t.var(0, unbiased=False) + (mp - mt) ** 2 + CCC_EPS)
    return 1 - ccc.mean()


def make_task_loss(task: str, y: Tensor, y_mask: Tensor | None) -> Callable[[Tensor], Tensor]:
    """The task's loss of a prediction for these targets: cross-entropy, or 1 − CCC over valid steps."""
    if task == "classification":
        return lambda pred: F.cross_entropy(pred, y)
    return lambda pred: ccc_loss(pred, y, y_mask)


def _devel_row(task: str, y: np.ndarray, metrics: dict[str, float], out: np.ndarray) -> dict[str, float]:
    """history.csv's devel columns from the devel pass's metrics and outputs (labels `y`)."""
    if task == "classification":
        loss = float(F.cross_entropy(torch.from_numpy(out), torch.from_numpy(y)))
        keep = ("accuracy", "macro_f1")
    else:
        loss = 1 - metrics["ccc_mean"]
        keep = tuple(metrics)
    return {"devel_loss": loss, **{f"devel_{k}": metrics[k] for k in keep}}


# ---- reproducibility -----------------------------------------------------------------------------


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch and switch on deterministic algorithms; restore the flag after."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


# ---- training ------------------------------------------------------------------------------------


def train_one(
    segments: Segments,
    params: TrainParams,
    model_name: str,
    strategy_name: str,
    seed: int,
    out_dir: str | Path = MODELS_DIR,
    device: str | torch.device | None = None,
    progress: bool = True,
    importance: dict[str, Any] | None = None,
    fold: int | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    """Train one run; write model.pt, history.csv and dvclive/; return its summary
    {best_epoch, epochs_run, devel_<metric>} (a model trained in stages: history.csv has a `stage` column,
    best_epoch is the last stage's, epochs_run counts every stage's epochs). `importance`: the model's importance entry; `fold`: the
    fold (of a protocol with several) whose partition `segments` holds (`Segments.for_fold`); `rate`: the
    strategy's training missing rate instead of its configured one (grid.rates: a run under rate_<r>/)."""
    if rate is not None:
        params = with_rate(params, strategy_name, rate)
    params = loop_params(params, model_name)
    if params.lr_grid:  # 004 §4.2: one run per learning rate, the best on devel kept
        return train_lr_grid(train_one, segments, params, model_name, strategy_name, seed, out_dir, device, progress, importance, fold, rate)
    task, targets = params.task, list(params.targets)
    feed = feed_run(segments, model_name, list(params.modalities), task, targets)
    tr, mods, dims, n_out = feed.train, feed.modalities, feed.dims, feed.n_outputs
    n_train = len(tr)
    dev = pick_device(device)
    metric = selection_metric(task)
    grad_clip = params.grad_clip
    stop_on = early_stop_column(params.early_stop, metric)
    target = run_dir(out_dir, model_name, strategy_name, seed, fold, rate)
    name = run_name(model_name, strategy_name) + ("" if rate is None else f" at rate {rate:g}")

    # the seed the run draws from: its own per fold under `seed_per_fold` (001 §4.2), else the configured one
    draw = replicate(fold, seed) if params.seed_per_fold and fold is not None else seed
    with deterministic(draw):
        try:
            model = build_model(model_name, dims, n_out, task, params.model_params.get(model_name)).to(dev)
        except ModelError as e:
            raise ModelBuildError(str(e)) from None
        tokens = feed.tokens if getattr(model, "missing_input", "mask") == "token" else {}
        if tokens:  # what the `token` convention fills in (pipeline/missing/inputs.py); model.pt keeps it
            model.missing_tokens = tokens
        strategy = make_training_strategy(strategy_name, mods, params, importance)
        order_rng, strategy_rng = np.random.default_rng([draw, 0]), np.random.default_rng([draw, 1])
        live = open_live(target / LIVE_DIR)

        def fit(trainable: Any, stage: str | None) -> tuple[list[dict[str, Any]], float, int, dict[str, Tensor] | None]:
            """Early-stopped training of `trainable` (a fresh optimiser and schedule): the history rows, the
            best early-stopping score, its epoch and the model's state then."""
            optim = make_optimizer(trainable, params)
            scheduler = make_scheduler(optim, params)
            history: list[dict[str, Any]] = []
            # `best` is the early-stopping value as a score (higher better): the metric, or −loss
            best, best_epoch, best_state = -np.inf, 0, None
            label = f"train {name} seed {seed}" + ("" if stage is None else f" ({stage})")
            bar = tqdm(range(1, params.epochs + 1), desc=label, disable=not progress, leave=False)
            max_steps, tick = benchmark_max_steps(), time.perf_counter()
            for epoch in bar:
                model.train()
                order = order_rng.permutation(n_train)
                sums: dict[str, float] = {}
                lr = optim.param_groups[0]["lr"]
                for start in range(0, len(order), params.batch_size)[:max_steps]:
                    rows = order[start : start + params.batch_size]
                    parts = _step(model, strategy, strategy_rng, tr, rows, task, epoch, dev, optim, grad_clip, draw)
                    if not np.isfinite(parts["total"]):
                        raise TrainError(f"{name} seed {seed}: non-finite training loss at epoch {epoch}; lower train.lr")
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + v * len(rows)
                stepped = time.perf_counter()
                row: dict[str, Any] = {"epoch": epoch, **({} if stage is None else {"stage": stage}), "lr": lr,
                                       "train_loss": sums.pop("total") / n_train}
                row.update({f"train_{k}": v / n_train for k, v in sums.items()})
                row.update(_devel_row(task, feed.devel.y, *feed.devel_pass(model, dev)))
                row["early_stop"] = stop_on  # history.csv says which quantity selects the epoch
                history.append(row)
                log_row(live, row)
                current = stop_score(row, stop_on)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", **{metric: f"{row[f'devel_{metric}']:.3f}"})
                if current > best or best_state is None:  # strict: ties keep the earlier epoch
                    best, best_epoch = current, epoch
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                elif epoch - best_epoch >= params.patience:
                    break
                if max_steps is not None:  # benchmark hook: one capped epoch, timed (benchmark_max_steps)
                    benchmark_line(name, seed, fold, params, len(order), max_steps, tick, stepped)
                    break
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(current)  # follows the early-stopping quantity (as a score: mode 'max')
                elif scheduler is not None:
                    scheduler.step()
            bar.close()
            return history, best, best_epoch, best_state

        # a model trained in stages (late fusion's two_stage: each branch alone, then the fusion) declares
        # them; each stage trains its own parameters with its own early stopping, from the previous
        # stage's best state. Others: one stage, every parameter.
        stages = getattr(model, "training_stages", lambda: [])()
        history: list[dict[str, Any]] = []
        for stage in stages or [None]:
            if stage is not None:
                model.stage = stage
            rows, best, best_epoch, best_state = fit(model.parameters() if stage is None else model.stage_parameters(stage), stage)
            history += rows
            if stage is not None:
                model.load_state_dict(best_state)
                model.stage = None
        if live is not None:
            live.end()

    summary = {"best_epoch": best_epoch, "epochs_run": len(history), "early_stop": stop_on}
    if stop_on == f"devel_{metric}":
        summary[f"devel_{metric}"] = float(best)
    else:  # the selected epoch's metric and loss
        summary.update({f"devel_{metric}": float(rows[best_epoch - 1][f"devel_{metric}"]), stop_on: float(-best)})
    save_trained(
        target / MODEL_FILE,
        {
            "state_dict": best_state,
            "model": model_name,
            "strategy": strategy_name,
            "task": task,
            "targets": targets if task == "regression" else [],
            "n_outputs": n_out,
            "params": params.model_dump(mode="json"),
            "dims": dims,
            "classes": list(segments.classes),
            "modalities": mods,
            "seed": seed,
            "fold": fold,
            "devel_metric": metric,
            "early_stop": stop_on,
            "importance": importance,
            "weights": {m: segments.modalities[m].weights_statement for m in mods if m in segments.modalities},
            **({"missing_tokens": {m: torch.from_numpy(v) for m, v in tokens.items()}} if tokens else {}),
            **summary,
        },
    )
    write_text(target / HISTORY_FILE, pl.DataFrame(history).write_csv())
    return summary


def _step(
    model: nn.Module,
    strategy: Any,
    rng: np.random.Generator,
    split: Split,
    rows: np.ndarray,
    task: str,
    epoch: int,
    dev: torch.device,
    optim: torch.optim.Optimizer,
    grad_clip: float | None,
    seed: int = 0,
) -> dict[str, float]:
    """One optimisation step on `rows`; the loss parts as floats ('total' = back-propagated). `seed`: the
    run's, from which a static strategy draws per sample."""
    b = split.batch(rows, dev)
    x_full, mask_full, valid, y, y_mask = b.x, b.mask, b.valid, b.y, b.y_mask
    # the strategy works on a copy, so x_full/mask_full stay the complete view
    x, mask = {m: v.clone() for m, v in x_full.items()}, {m: v.clone() for m, v in mask_full.items()}
    if getattr(strategy, "static", False):  # the same missing steps for a sample in every epoch (003's one-to-one)
        x, mask = strategy.apply_static(x, mask, split.idx[rows], seed)
    else:
        x, mask = strategy.apply(x, mask, rng, epoch)
    task_loss = make_task_loss(task, y, y_mask)
    if hasattr(model, "training_loss"):
        batch = TrainBatch(x, mask, x_full, mask_full, y, y_mask, epoch, valid, getattr(model, "missing_input", "mask"),
                           getattr(model, "missing_tokens", None))
        parts = model.training_loss(batch, task_loss)
        if "total" not in parts:
            raise TrainError(f"{type(model).__name__}.training_loss returned no 'total' (keys {sorted(parts)})")
    else:
        parts = {"total": task_loss(forward(model, x, mask, valid))}
    optim.zero_grad(set_to_none=True)
    parts["total"].backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # 001 §4.3: 0.8
    optim.step()
    return {k: float(v.detach()) for k, v in parts.items()}
