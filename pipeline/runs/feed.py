"""Feeding a run: what a training run reads (`feed_run`: its train and devel splits, dims and outputs,
checked against the model), the labelled split of a partition for a task (`task_split`), tensors a batch
of rows at a time (`Split.batch`), prediction in eval mode, the task's metrics of its outputs, and scoring
a run under already applied missing-modality conditions. Training, the importance search, evaluation and
prediction share it; the forward pass itself is `pipeline.models.registry.forward`; the run's files:
pipeline/runs/files.py.

A training run's segments enter this room three times (tests/test_layers.py counts them): once to be
split (`feed_run`), once per step for a batch (`Split.batch`), once per epoch for the devel pass
(`RunFeed.devel_pass`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.models.registry import ModelError, check_layout, fit_modalities, forward
from pipeline.runs.metrics import classification_metrics, regression_metrics
from pipeline.segment.contract import Segments
from pipeline.segment.lazy import RowView

EVAL_BATCH_SIZE = 64
STANDARD, ELIMINATE = "standard", "eliminate"
REGRESSION_TARGETS = ("arousal", "valence")  # the per-step target arrays `Segments` can hold


class TrainError(PipelineError):
    """Training cannot run on these segments/params; the message says why."""


class ModelBuildError(TrainError):
    """The model cannot be built for these inputs (e.g. AuxFormer takes exactly two modalities)."""


class EvaluateError(PipelineError):
    """Trained runs cannot be evaluated here (none found, other segments, mixed tasks…)."""


@dataclass
class Split:
    """The usable sequences of one partition for a task."""

    idx: np.ndarray  # rows of the segments
    # {mod: RowView}: split.x[m][rows] reads segments.x[m][idx[rows]] (pipeline/segment/lazy.py); a split
    # holds its masks and labels, never a copy of its features
    x: dict[str, Any]
    mask: dict[str, np.ndarray]
    y: np.ndarray  # [N] int64 labels, or [N,T,K] float32 targets
    y_mask: np.ndarray | None  # [N,T] bool (regression)
    valid: dict[str, np.ndarray] | None = None  # {mod: [N,T_m] bool} within the true length (None: no padding)

    def __len__(self) -> int:
        return len(self.idx)

    def batch(self, rows: np.ndarray, device: torch.device) -> Batch:
        """The sequences `rows` (positions in this split) as tensors on `device`."""
        x, mask = to_tensors(self.x, self.mask, rows, device)
        y_mask = None if self.y_mask is None else torch.from_numpy(self.y_mask[rows]).to(device)
        return Batch(x, mask, valid_tensors(self.valid, self.mask, rows, device), torch.from_numpy(self.y[rows]).to(device), y_mask)


@dataclass
class Batch:
    """A batch of a split as tensors: features, presence masks, padding masks, labels/targets."""

    x: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    y: torch.Tensor  # [B] long labels, or [B,T,K] float targets
    y_mask: torch.Tensor | None  # [B,T] bool (regression)


@dataclass
class RunFeed:
    """What one training run reads: the model's modalities, its labelled train and devel splits, the
    input dimensions and the number of outputs."""

    modalities: list[str]
    train: Split
    devel: Split
    dims: dict[str, int]
    n_outputs: int
    task: str
    targets: list[str]
    # {mod: [D] float32}: the missing token of each modality that has one (`ModalityInfo.missing_token`),
    # z-scored with this fold's statistics as its features are: what the input convention `token` fills in
    tokens: dict[str, np.ndarray]

    def devel_pass(self, model: nn.Module, device: torch.device) -> tuple[dict[str, float], np.ndarray]:
        """(the task's metrics, the outputs) of `model` on the devel split, in eval mode."""
        dv = self.devel
        out = predict(model, dv.x, dv.mask, device, valid=dv.valid)
        return score(self.task, dv, out, self.targets), out


def check_model_layout(model: str, layout: str, task: str) -> None:
    """ModelBuildError (one line naming model, layout and the accepted ones) unless the model takes the
    segments' layout (`segment.layout`) for this task."""
    try:
        check_layout(model, layout, task)
    except ModelError as e:
        raise ModelBuildError(f"{e} (segment.layout)") from None


def feed_run(segments: Segments, model: str, modalities: list[str], task: str, targets: list[str]) -> RunFeed:
    """The data of one training run of `model`. A model of fixed arity (AuxFormer, JMT: two; unimodal: one)
    takes the first of `modalities`. ModelBuildError when the model cannot take these inputs or the
    segments' layout; TrainError when a partition holds no labelled sequence."""
    try:
        mods = list(fit_modalities(model, {m: 0 for m in modalities}))
    except ModelError as e:
        raise ModelBuildError(str(e)) from None
    check_model_layout(model, segments.layout, task)  # one line naming model, layout, accepted ones
    tr = task_split(segments, "train", mods, task, targets)
    dv = task_split(segments, "devel", mods, task, targets)
    for name, split in (("train", tr), ("devel", dv)):
        if len(split) == 0:
            raise TrainError(
                f"no labelled sequences in the '{name}' partition; "
                + ("check the corpus labels" if name == "train" else "set segment.partition.devel > 0 (early stopping needs it)")
            )
    dims = {m: int(tr.x[m].shape[-1]) for m in mods}
    return RunFeed(mods, tr, dv, dims, n_outputs(segments, task, targets), task, list(targets), missing_tokens(segments, mods))


def missing_tokens(segments: Segments, modalities: list[str]) -> dict[str, np.ndarray]:
    """{mod: the modality's missing token z-scored as its features are (segments' statistics)}, for each
    of `modalities` whose extractor recorded one (`ModalityInfo.missing_token`: bert's [UNK])."""
    out = {}
    for m in modalities:
        info = segments.modalities.get(m)
        if info is not None and info.missing_token is not None:
            raw = np.asarray(info.missing_token, np.float64)
            out[m] = ((raw - segments.mean[m]) / segments.std[m]).astype(np.float32)
    return out


def task_split(
    segments: Segments,
    partition: str,
    modalities: list[str],
    task: str = "classification",
    targets: list[str] | tuple[str, ...] = REGRESSION_TARGETS,
    who: str = "training",
) -> Split:
    """The sequences of `partition` that carry labels for `task` (clips with label -1, or with no
    valid target step, are left out)."""
    segments.require(modalities, who)
    idx = segments.indices(partition)
    y_mask = None
    if task == "classification":
        idx = idx[segments.label[idx] >= 0]
        y = segments.label[idx].astype(np.int64)
    elif task == "regression":
        unknown = [t for t in targets if t not in REGRESSION_TARGETS]
        if unknown or not targets:
            raise TrainError(f"train.targets {list(targets)}: regression targets must be among {list(REGRESSION_TARGETS)}")
        if segments.label_mask is None or any(getattr(segments, t) is None for t in targets):
            raise TrainError(
                f"{who}: task 'regression' needs time-continuous targets {list(targets)}, but the segments hold "
                "none (the corpus has no arousal/valence curves); use task 'classification'"
            )
        steps = np.arange(segments.label_mask.shape[1])
        valid = segments.label_mask.astype(bool) & (steps[None, :] < segments.length[:, None])
        idx = idx[valid[idx].any(axis=1)]
        y = np.stack([getattr(segments, t)[idx] for t in targets], axis=-1).astype(np.float32)
        y_mask = valid[idx]
    else:
        raise TrainError(f"unknown task {task!r}; use 'classification' or 'regression'")
    return Split(
        idx,
        {m: RowView(segments.x[m], idx) for m in modalities},
        {m: segments.mask[m][idx].astype(bool) for m in modalities},
        y,
        y_mask,
        {m: segments.valid(m)[idx] for m in modalities},
    )


def n_outputs(segments: Segments, task: str, targets: list[str]) -> int:
    if task == "regression":
        return len(targets)
    if len(segments.classes) < 2:
        raise TrainError(f"classification needs at least 2 classes, the segments have {segments.classes}")
    return len(segments.classes)


def to_tensors(
    x: dict[str, Any], mask: dict[str, np.ndarray], rows: np.ndarray, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The batch `rows` as tensors: each array (ndarray, memmap or lazy view) read at those rows only."""
    return (
        {m: torch.from_numpy(np.ascontiguousarray(v[rows], dtype=np.float32)).to(device) for m, v in x.items()},
        {m: torch.from_numpy(np.ascontiguousarray(v[rows], dtype=bool)).to(device) for m, v in mask.items()},
    )


def valid_tensors(
    valid: dict[str, np.ndarray] | None, mask: dict[str, np.ndarray], rows: np.ndarray, device: torch.device
) -> dict[str, torch.Tensor]:
    """The padding masks of `rows` as tensors (every step valid where `valid` is None)."""
    if valid is None:
        return {m: torch.ones(len(rows), np.shape(v)[1], dtype=torch.bool, device=device) for m, v in mask.items()}
    return {m: torch.from_numpy(np.ascontiguousarray(valid[m][rows], dtype=bool)).to(device) for m in mask}


@torch.no_grad()
def predict(
    model: nn.Module,
    x: dict[str, np.ndarray],
    mask: dict[str, np.ndarray],
    device: torch.device | str = "cpu",
    batch_size: int = EVAL_BATCH_SIZE,
    valid: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Outputs in eval mode: logits [N, C] or per-step predictions [N, T, K] (mode restored after).
    `valid`: {mod: [N,T_m] bool} the steps within each sequence's true length (None: no padding).
    `x`'s values are read only as `x[m][rows]`, batch by batch: arrays or row views."""
    was_training = model.training
    model.eval()
    n = len(next(iter(mask.values())))
    out = []
    dev = torch.device(device)
    try:
        for start in range(0, n, batch_size):
            rows = np.arange(start, min(start + batch_size, n))
            xb, mb = to_tensors(x, mask, rows, dev)
            out.append(forward(model, xb, mb, valid_tensors(valid, mask, rows, dev)).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def score(task: str, split: Split, out: np.ndarray, targets: list[str] | None = None) -> dict[str, float]:
    """The task's metrics of outputs `out` on `split` (classification_metrics or regression_metrics)."""
    if task == "classification":
        return classification_metrics(split.y, out.argmax(axis=1))
    targets = list(targets or REGRESSION_TARGETS)
    return regression_metrics(split.y[split.y_mask], out[split.y_mask], targets)


def selection_metric(task: str) -> str:
    """The devel metric early stopping (and the importance search) use; higher is better."""
    return "macro_f1" if task == "classification" else "ccc_mean"


def score_conditions(
    model: torch.nn.Module,
    info: dict[str, Any],
    split: Split,
    applied: dict[str, tuple[dict, dict]],
    device: torch.device,
    path: Path,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, tuple[dict[str, float], np.ndarray]]:
    """{condition: (metrics, outputs)} of one run on `split` under each already-applied condition
    {name: (x, mask)}; x's values may be row views (`pipeline.evaluate.scoring.PlannedRows`), which `predict`
    materialises one batch of rows at a time."""
    mods, out = info["modalities"], {}
    for name, (xc, mc) in applied.items():
        pred = predict(model, {m: xc[m] for m in mods}, {m: mc[m] for m in mods}, device, batch_size, valid=split.valid)
        if not np.all(np.isfinite(pred)):
            raise EvaluateError(f"{path}: non-finite outputs under condition '{name}'")
        out[name] = (score(info["task"], split, pred, info["targets"]), pred)
    return out
