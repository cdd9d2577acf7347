"""Training: the grid models × strategies × seeds on 'train', early stopping on 'devel'.

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
                    devel sequences' valid steps, `pipeline.metrics.regression_metrics`).

Each batch: the strategy (`pipeline.missing.make_strategy`) makes modalities missing on a copy of the
batch; the model's `training_loss(batch, task_loss)` is back-propagated when it defines one (its
'total'; other keys are logged as train_<key>), else `task_loss(model(x, mask))`.

history.csv columns: epoch, lr, train_loss, [train_<part> …], devel_loss, then the devel metrics —
classification: devel_accuracy, devel_macro_f1; regression: devel_ccc_<t> …, devel_ccc_mean,
devel_rmse_<t> … (devel_loss = 1 − devel_ccc_mean there) — and early_stop (the column that selects
the epoch, e.g. devel_macro_f1 or devel_loss; train.json and model.pt record it too).

Loop settings (TrainParams; `model_train` / params.yaml's `model.<name>.train` override them per model,
a paper's own recipe):
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
                  epochs without a strictly better one (000 §5.3: halve after 5).
    grad_clip     max global gradient norm (001 §4.3: 0.8); null = off.
    lr_grid       null (default) | [lr, …]: one full run per learning rate (same seed), the best by the
                  early-stopping value kept as the run; lr_grid.csv lists them (004 §4.2).

Reproducibility: python, numpy and torch seeded with the run's seed, deterministic algorithms on;
batch order and the strategy draw from generators seeded by it too, so a CPU run is repeatable to the
bit. CUDA when available.
"""

from __future__ import annotations

import os
import random
import warnings
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

from pipeline.device import pick_device
from pipeline.grid import extra_rates, loop_params, make_training_strategy, resolve_grid, with_rate
from pipeline.missing.inputs import model_inputs
from pipeline.models.registry import ModelError, build_model, fit_modalities
from pipeline.paths import MODELS_DIR
from pipeline.runs import (
    ELIMINATE,
    HISTORY_FILE,
    MODEL_FILE,
    REGRESSION_TARGETS,
    STANDARD,
    ModelBuildError,
    Split,
    TrainError,
    check_model_layout,
    forward,
    n_outputs,
    predict,
    require_modalities,
    run_dir,
    run_key,
    run_name,
    fold_ids,
    save_trained,
    score,
    selection_metric,
    task_split,
    to_tensors,
    valid_tensors,
)
from pipeline.segments import Segments
from pipeline.store import write_text
from pipeline.train_params import TrainParams

LIVE_DIR = "dvclive"
CCC_EPS = 1e-8  # keeps the CCC loss finite on a batch whose targets and predictions are all constant
# loop settings read with getattr so this module works before params.yaml/TrainParams define them


@dataclass
class TrainBatch:
    """One training batch as a model's `training_loss` sees it. x/mask are the data and PRESENCE masks;
    a model feeds itself `inputs()` / `inputs_full()`: the same through its input convention (the one
    function `pipeline.runs.forward` uses, pipeline/missing/inputs.py), with `valid` for padding."""

    x: dict[str, Tensor]  # after the training strategy
    mask: dict[str, Tensor]
    x_full: dict[str, Tensor]  # before it (the complete view)
    mask_full: dict[str, Tensor]
    y: Tensor  # labels [B] long (classification) or targets [B,T,K] float (regression)
    y_mask: Tensor | None  # [B,T] bool, regression only: the steps that count
    epoch: int  # 1-based
    valid: dict[str, Tensor] | None = None  # {mod: [B,T_m] bool} within the true length (None: no padding)
    missing_input: str = "mask"  # the model's input convention

    def inputs(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(x, mask) after the strategy, as the model sees them."""
        return model_inputs(self.missing_input, self.x, self.mask, self.valid)

    def inputs_full(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(x, mask) of the complete view, as the model sees them."""
        return model_inputs(self.missing_input, self.x_full, self.mask_full, self.valid)


# ---- losses and scores ---------------------------------------------------------------------------


def ccc_loss(pred: Tensor, y: Tensor, y_mask: Tensor) -> Tensor:
    """1 − mean over the K targets of the CCC over the valid steps (pooled over the batch).

    pred, y: [B,T,K]; y_mask: [B,T] bool. Population statistics (000 §3.3 Eq. 12; the metric's
    convention, `pipeline.metrics.ccc`)."""
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


def _devel_row(task: str, split: Split, out: np.ndarray, targets: list[str]) -> dict[str, float]:
    metrics = score(task, split, out, targets)
    if task == "classification":
        loss = float(F.cross_entropy(torch.from_numpy(out), torch.from_numpy(split.y)))
        keep = ("accuracy", "macro_f1")
    else:
        loss = 1 - metrics["ccc_mean"]
        keep = tuple(metrics)
    return {"devel_loss": loss, **{f"devel_{k}": metrics[k] for k in keep}}


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
    {best_epoch, epochs_run, devel_<metric>}. `importance`: the model's importance entry; `fold`: the
    fold (of a protocol with several) whose partition `segments` holds (`Segments.for_fold`); `rate`: the
    strategy's training missing rate instead of its configured one (grid.rates: a run under rate_<r>/)."""
    if rate is not None:
        params = with_rate(params, strategy_name, rate)
    params = loop_params(params, model_name)
    if params.lr_grid:  # 004 §4.2: one run per learning rate, the best on devel kept
        return _train_lr_grid(segments, params, model_name, strategy_name, seed, out_dir, device, progress, importance, fold, rate)
    task, targets = params.task, list(params.targets)
    # a model of fixed arity (AuxFormer, JMT: two; unimodal: one) takes the first of train.modalities
    try:
        mods = list(fit_modalities(model_name, {m: 0 for m in params.modalities}))
    except ModelError as e:
        raise ModelBuildError(str(e)) from None
    check_model_layout(model_name, segments.layout, task)  # one line naming model, layout, accepted ones
    tr = task_split(segments, "train", mods, task, targets)
    dv = task_split(segments, "devel", mods, task, targets)
    for name, split in (("train", tr), ("devel", dv)):
        if len(split) == 0:
            raise TrainError(
                f"no labelled sequences in the '{name}' partition; "
                + ("check the corpus labels" if name == "train" else "set segment.partition.devel > 0 (early stopping needs it)")
            )
    n_out = n_outputs(segments, task, targets)
    dims = {m: int(tr.x[m].shape[-1]) for m in mods}
    dev = pick_device(device)
    metric = selection_metric(task)
    grad_clip = params.grad_clip
    stop_on = early_stop_column(params.early_stop, metric)
    target = run_dir(out_dir, model_name, strategy_name, seed, fold, rate)
    name = run_name(model_name, strategy_name) + ("" if rate is None else f" at rate {rate:g}")

    with deterministic(seed):
        try:
            model = build_model(model_name, dims, n_out, task, params.model_params.get(model_name)).to(dev)
        except ModelError as e:
            raise ModelBuildError(str(e)) from None
        strategy = make_training_strategy(strategy_name, mods, params, importance)
        optim = make_optimizer(model.parameters(), params)
        scheduler = make_scheduler(optim, params)
        order_rng, strategy_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
        history: list[dict[str, float]] = []
        # `best` is the early-stopping value as a score (higher better): the metric, or −loss
        best, best_epoch, best_state = -np.inf, 0, None
        live = _live(target / LIVE_DIR)
        bar = tqdm(range(1, params.epochs + 1), desc=f"train {name} seed {seed}", disable=not progress, leave=False)
        for epoch in bar:
            model.train()
            order = order_rng.permutation(len(tr))
            sums: dict[str, float] = {}
            lr = optim.param_groups[0]["lr"]
            for start in range(0, len(order), params.batch_size):
                rows = order[start : start + params.batch_size]
                parts = _step(model, strategy, strategy_rng, tr, rows, task, epoch, dev, optim, grad_clip)
                if not np.isfinite(parts["total"]):
                    raise TrainError(f"{name} seed {seed}: non-finite training loss at epoch {epoch}; lower train.lr")
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v * len(rows)
            row: dict[str, float] = {"epoch": epoch, "lr": lr, "train_loss": sums.pop("total") / len(tr)}
            row.update({f"train_{k}": v / len(tr) for k, v in sums.items()})
            row.update(_devel_row(task, dv, predict(model, dv.x, dv.mask, dev, valid=dv.valid), targets))
            row["early_stop"] = stop_on  # history.csv says which quantity selects the epoch
            history.append(row)
            _log(live, row)
            current = stop_score(row, stop_on)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", **{metric: f"{row[f'devel_{metric}']:.3f}"})
            if current > best or best_state is None:  # strict: ties keep the earlier epoch
                best, best_epoch = current, epoch
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= params.patience:
                break
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(current)  # follows the early-stopping quantity (as a score: mode 'max')
            elif scheduler is not None:
                scheduler.step()
        bar.close()
        if live is not None:
            live.end()

    summary = {"best_epoch": best_epoch, "epochs_run": len(history), "early_stop": stop_on}
    if stop_on == f"devel_{metric}":
        summary[f"devel_{metric}"] = float(best)
    else:  # the selected epoch's metric and loss
        summary.update({f"devel_{metric}": float(history[best_epoch - 1][f"devel_{metric}"]), stop_on: float(-best)})
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
            **summary,
        },
    )
    write_text(target / HISTORY_FILE, pl.DataFrame(history).write_csv())
    return summary


LR_GRID_FILE = "lr_grid.csv"


def _train_lr_grid(
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
    learning rate (same seed, same batches), keep the one with the best early-stopping value on devel
    (ties: the earlier in the list) as the run's model.pt, history.csv and dvclive/, and write
    lr_grid.csv (one row per learning rate: lr, best_epoch, epochs_run, the devel values, selected).
    The summary gains `lr`, the chosen one."""
    import shutil
    import tempfile

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
) -> dict[str, float]:
    """One optimisation step on `rows`; the loss parts as floats ('total' = back-propagated)."""
    x_full, mask_full = to_tensors(split.x, split.mask, rows, dev)
    valid = valid_tensors(split.valid, split.mask, rows, dev)
    y = torch.from_numpy(split.y[rows]).to(dev)
    y_mask = None if split.y_mask is None else torch.from_numpy(split.y_mask[rows]).to(dev)
    # the strategy works on a copy, so x_full/mask_full stay the complete view
    x, mask = strategy.apply({m: v.clone() for m, v in x_full.items()}, {m: v.clone() for m, v in mask_full.items()}, rng, epoch)
    task_loss = make_task_loss(task, y, y_mask)
    if hasattr(model, "training_loss"):
        batch = TrainBatch(x, mask, x_full, mask_full, y, y_mask, epoch, valid, getattr(model, "missing_input", "mask"))
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


def _live(path: Path) -> Any:
    """A DVCLive logger writing only under `path`: no dvc.yaml, no experiment, no report, no Studio."""
    os.environ.setdefault("DVC_STUDIO_OFFLINE", "true")  # never post to DVC Studio
    from dvclive import Live

    try:
        return Live(str(path), resume=False, report=None, save_dvc_exp=False, dvcyaml=None)
    except Exception as e:  # dvclive asks git for a baseline revision: a repository without commits fails
        warnings.warn(f"dvclive logging off for {path} ({type(e).__name__}: {e}); history.csv still has the curves")
        return None


def _log(live: Any, row: dict[str, float]) -> None:
    if live is None:
        return
    for k, v in row.items():
        if k != "epoch" and isinstance(v, (int, float)) and np.isfinite(v):
            live.log_metric(k, float(v), plot=True)
    live.next_step()


def train_all(
    segments: Segments,
    params: TrainParams,
    out_dir: str | Path = MODELS_DIR,
    device: str | torch.device | None = None,
    progress: bool = True,
    strategies: list[str] | None = None,
    importance: dict[str, Any] | None = None,
    rates: dict[str, list[float]] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Train the grid (`resolve_grid`) × `params.seeds` (under `all_models`, models that cannot be built
    for `train.modalities` are skipped with a message); returns {"<model>/<strategy>": {"seed_<s>":
    summary}} (keys "fold_<k>/seed_<s>" under a protocol with several folds, each fold trained on its own
    partition). `importance`: {model: its data/importance/<model>.json entry}. `rates` (params.yaml
    grid.rates): {strategy: [training missing rates]}; each rate but the configured one also trains
    every seed (and fold) of the strategy's families, under rate_<r>/ (keys "rate_<r>/seed_<s>", after
    the family's own runs, which stay as they are without `rates`).

    Backend (`pipeline.compute`, environment variables): locally the runs train one after the other
    in this process; under MER_BACKEND=ray each (model, strategy, seed, fold) run is a Ray task asking
    for MER_CPUS_PER_WORKER CPUs (its torch threads) and MER_GPUS_PER_WORKER GPUs, writing its own run
    directory; summaries come back in the grid's order, errors as the local loop raises them. Runs are
    seeded, so with 1 CPU per worker (the local stage's MER_THREADS=1) model.pt and history.csv are
    byte-identical to the local backend's."""
    from pipeline.compute import compute_settings, map_ordered

    require_modalities(segments, list(params.modalities), "training")
    pairs = resolve_grid(params, strategies, importance)
    runs: list[tuple[str, str, int, int | None, float | None]] = [
        (m, s, seed, fold, None) for m, s in pairs for fold in fold_ids(segments) for seed in params.seeds]
    runs += [(m, s, seed, fold, r) for m, s in pairs for r in extra_rates(params, s, (rates or {}).get(s))
             for fold in fold_ids(segments) for seed in params.seeds]
    views = {fold: segments.for_fold(fold or 0) for fold in fold_ids(segments)}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    unbuildable: set[str] = set()
    settings = compute_settings()
    local = settings.backend == "local"

    def run(i: int) -> dict[str, Any] | ModelBuildError | None:
        # by index: a Ray worker unpickles `runs` with params in one piece, so model.pt (a pickle, whose
        # bytes follow which of its strings are one object) is byte-identical to the local run's
        model, strategy, seed, fold, rate = runs[i]
        if model in unbuildable:  # local: not trained at all (a Ray task sees its own, empty copy)
            return None
        try:
            return train_one(
                views[fold], params, model, strategy, seed, out_dir, device, progress and local, (importance or {}).get(model), fold,
                rate,
            )
        except ModelBuildError as e:
            return e

    results = map_ordered(run, range(len(runs)), settings=settings)
    for (model, strategy, seed, fold, rate), result in tqdm(
        zip(runs, results), total=len(runs), desc="runs", disable=not progress or len(runs) < 2
    ):
        if model in unbuildable:
            continue
        if isinstance(result, ModelBuildError):
            if not params.all_models:
                results.close()
                raise result
            # `all_models`: a model that does not take these inputs is left out, and said so
            unbuildable.add(model)
            out.pop(run_name(model, strategy), None)
            tqdm.write(f"skipping model '{model}' (train.all_models): {result}")
            continue
        out.setdefault(run_name(model, strategy), {})[run_key(seed, fold, rate)] = result
    return out
