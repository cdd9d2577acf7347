"""A trained run: the library that training, the importance search, evaluation and prediction share.

A run is one model trained with one missing-modality strategy and one seed. Its files:

    <models dir>/<model>/<strategy>/seed_<s>/model.pt      `save_trained` / `load_trained` (written atomically)
    <models dir>/<model>/<strategy>/seed_<s>/history.csv   one row per epoch (pipeline/train.py)
    <models dir>/<model>/<strategy>/rate_<r>/seed_<s>/…     the same family trained at another missing
                                                           rate r (params.yaml grid.rates)

and it is named `<model>/<strategy>` in every output downstream. This module holds what is done WITH a
run: the labelled split of a partition for a task (`task_split`), tensors, prediction in eval mode,
the task's metrics, the model file format, finding runs on disk, and scoring a run under already
applied missing-modality conditions. `train.py`, `importance.py`, `evaluate.py` and `predict.py` are
siblings over it; none of them imports another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.lazy_arrays import RowView
from pipeline.metrics import classification_metrics, regression_metrics
from pipeline.missing.inputs import model_inputs
from pipeline.models.registry import ModelError, build_model, check_layout, takes_valid
from pipeline.segments import Segments
from pipeline.store import atomic_path
from pipeline.train_params import TrainParams

MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"
FORMAT_VERSION = 3  # 3: models carry an input convention (`missing_input`); see `load_trained`
# the input convention each model followed before format 3 (when it was not yet a param): MCT-HFR
# attended zero-filled missing steps, every other model masked them
LEGACY_MISSING_INPUT = {"mct_hfr": "zero"}
EVAL_BATCH_SIZE = 64
STANDARD, ELIMINATE = "standard", "eliminate"
REGRESSION_TARGETS = ("arousal", "valence")  # the per-step target arrays `Segments` can hold
_SEED_DIR = re.compile(r"^seed_(-?\d+)$")
_FOLD_DIR = re.compile(r"^fold_(\d+)$")
_RATE_DIR = re.compile(r"^rate_(\d+(?:\.\d*)?(?:e-?\d+)?)$")


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
    # {mod: RowView}: split.x[m][rows] reads segments.x[m][idx[rows]] (pipeline/lazy_arrays.py); a split
    # holds its masks and labels, never a copy of its features
    x: dict[str, Any]
    mask: dict[str, np.ndarray]
    y: np.ndarray  # [N] int64 labels, or [N,T,K] float32 targets
    y_mask: np.ndarray | None  # [N,T] bool (regression)
    valid: dict[str, np.ndarray] | None = None  # {mod: [N,T_m] bool} within the true length (None: no padding)

    def __len__(self) -> int:
        return len(self.idx)


def require_modalities(segments: Segments, modalities: list[str], who: str) -> None:
    lacking = [m for m in modalities if m not in segments.x]
    if lacking:
        raise TrainError(
            f"{who} needs modalities {lacking} that the segments lack (they hold {list(segments.x)}); "
            f"add them to segment.modalities or remove them from train.modalities"
        )


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
    require_modalities(segments, modalities, who)
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


def forward(
    model: nn.Module, x: dict[str, torch.Tensor], mask: dict[str, torch.Tensor], valid: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """THE forward pass of a registered model, in training and evaluation alike: the model's input
    convention (`missing_input`, pipeline/missing/inputs.py) applied to the presence masks `mask` and
    the padding masks `valid`, and `valid` passed to a model whose forward takes it."""
    xs, ms = model_inputs(getattr(model, "missing_input", "mask"), x, mask, valid)
    if takes_valid(model):
        return model(xs, ms, valid=valid)
    return model(xs, ms)


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


def run_name(model: str, strategy: str) -> str:
    return f"{model}/{strategy}"


def rate_dir_name(rate: float) -> str:
    """rate_<r>: the folder of a family's runs at training missing rate r (grid.rates), e.g. rate_0.1."""
    return f"rate_{float(rate):.10g}"


def run_key(seed: int, fold: int | None = None, rate: float | None = None) -> str:
    """A run's folder below its family's: seed_<s>, fold_<k>/seed_<s>, rate_<r>/[fold_<k>/]seed_<s>
    (the keys of train.json)."""
    parts = ([] if rate is None else [rate_dir_name(rate)]) + ([] if fold is None else [f"fold_{fold}"])
    return "/".join(parts + [f"seed_{seed}"])


def run_dir(out_dir: str | Path, model: str, strategy: str, seed: int, fold: int | None = None, rate: float | None = None) -> Path:
    """<out_dir>/<model>/<strategy>/seed_<s>, or …/fold_<k>/seed_<s> under a protocol with several folds;
    a run at one of grid.rates' training missing rates: …/<strategy>/rate_<r>/[fold_<k>/]seed_<s>."""
    return Path(out_dir) / model / strategy / run_key(seed, fold, rate)


def save_trained(path: str | Path, payload: dict[str, Any]) -> None:
    """model.pt: a dict with state_dict, model (registry name), strategy, task, targets, n_outputs,
    params (TrainParams dump, per-model overrides applied), dims, classes, modalities, seed, best_epoch,
    epochs_run, devel_metric and devel_<metric>, importance (the entry `eliminate` used, else None),
    weights (per modality, the feature backbone's weights statement), format. Written atomically."""
    with atomic_path(path, suffix=".pt") as tmp, open(tmp, "wb") as f:
        # a file object, not the path: torch names the archive's folder after a path's (random)
        # temporary name, which made identical models differ byte-wise and DVC see a change
        torch.save({**payload, "format": FORMAT_VERSION}, f)


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode on `device`, info) from a model.pt; info["params"] is a TrainParams."""
    blob = _read(path)
    info = _info(path, blob)
    params = info["params"]
    overrides = dict(params.model_params.get(info["model"]) or {})
    if blob.get("format", 1) < 3 and "missing_input" not in overrides and "missing" not in overrides:
        # written before models had an input convention: evaluate it with the one it was trained under
        overrides["missing_input"] = LEGACY_MISSING_INPUT.get(info["model"], "mask")
    try:
        model = build_model(info["model"], info["dims"], info["n_outputs"], info["task"], overrides)
        model.load_state_dict(blob["state_dict"])
    except (ModelError, RuntimeError) as e:
        raise TrainError(f"{path}: cannot rebuild the model with this version: {e}") from None
    return model.to(device).eval(), info


def read_trained_info(path: str | Path) -> dict[str, Any]:
    """The info of a model.pt without building the model (memory-maps the file)."""
    return _info(path, _read(path, mmap=True))


def _read(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise TrainError(f"{path}: not found; run the train stage (`dvc repro train`)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises several types for corrupt or foreign files
        raise TrainError(f"{path}: unreadable model file: {e}") from None
    keys = ("state_dict", "model", "params", "dims", "classes", "modalities")
    lacking = [k for k in keys if k not in blob] if isinstance(blob, dict) else list(keys)
    if lacking:
        raise TrainError(f"{path}: not a model file of this pipeline (lacks {lacking})")
    return blob


def _info(path: str | Path, blob: dict[str, Any]) -> dict[str, Any]:
    info = {k: v for k, v in blob.items() if k != "state_dict"}
    try:
        info["params"] = TrainParams.model_validate(blob["params"])
    except ValueError as e:
        raise TrainError(f"{path}: its training params do not validate against this version: {e}") from None
    # format 1 files: classification with the standard strategy
    info.setdefault("task", info["params"].task)
    info.setdefault("strategy", STANDARD)
    info.setdefault("targets", [])
    info.setdefault("n_outputs", len(info["targets"]) if info["task"] == "regression" else len(info["classes"]))
    return info


class TrainedRun(NamedTuple):
    """A trained run found on disk: (name "<model>/<strategy>", seed, path of its model.pt); `rate` is
    the training missing rate of a run under rate_<r>/ (grid.rates), None for the family's own runs."""

    name: str
    seed: int
    path: Path

    @property
    def rate(self) -> float | None:
        up = self.path.parent.parent  # the folder above seed_<s>: fold_<k>, rate_<r> or the strategy's
        if _FOLD_DIR.match(up.name):
            up = up.parent
        m = _RATE_DIR.match(up.name)
        return float(m.group(1)) if m else None


def find_trained(
    models_dirs: str | Path | Sequence[str | Path], fold: int | None = None, rates: bool = False
) -> list[TrainedRun]:
    """(name "<model>/<strategy>", seed, path) of every `<dir>/<model>/<strategy>/seed_<s>/model.pt`
    (with `fold`: `…/<strategy>/fold_<k>/seed_<s>/model.pt`) under the given folder(s) (missing folders
    are skipped), sorted by name, seed. `rates`: also the runs at grid.rates' other training rates
    (`…/<strategy>/rate_<r>/[fold_<k>/]seed_<s>/model.pt`, `TrainedRun.rate` set), each after its
    family's own runs, by rate, seed. Without `rates` (predict, importance, a family's headline
    metrics) only the families' own runs are found."""
    dirs = [models_dirs] if isinstance(models_dirs, (str, Path)) else list(models_dirs)
    below = "seed_*" if fold is None else f"fold_{fold}/seed_*"
    patterns = [f"*/*/{below}/{MODEL_FILE}"] + ([f"*/*/rate_*/{below}/{MODEL_FILE}"] if rates else [])
    found = []
    for d in dirs:
        for at_rate, pattern in enumerate(patterns):
            for path in Path(d).glob(pattern):
                m = _SEED_DIR.match(path.parent.name)
                # the family's folder: above seed_<s>, fold_<k> (with `fold`) and rate_<r> (the second pattern)
                family = path.parents[1 + (fold is not None) + at_rate]
                if m and (not at_rate or _RATE_DIR.match(path.parents[1 + (fold is not None)].name)):
                    found.append(TrainedRun(run_name(family.parent.name, family.name), int(m.group(1)), path))
    return sorted(found, key=lambda r: (r.name, r.rate is not None, r.rate or 0.0, r.seed))


def fold_ids(segments: Segments) -> list[int | None]:
    """The folds runs are stored under: [None] for one fold (no fold level in paths), else 0 … K−1."""
    return [None] if segments.n_folds == 1 else list(range(segments.n_folds))


def run_task(runs: list[tuple[str, int, Path]], segments: Segments) -> tuple[str, list[str], list[str]]:
    """(task, targets, modalities) shared by `runs`, after checking every run fits the segments."""
    modalities: list[str] = []
    tasks: dict[tuple[str, tuple[str, ...]], Path] = {}
    for _, _, path in runs:
        info = read_trained_info(path)
        check_fits(path, info, segments)
        tasks.setdefault((info["task"], tuple(info["targets"])), path)
        modalities += [m for m in info["modalities"] if m not in modalities]
    if len(tasks) > 1:
        listed = "; ".join(f"{p}: {t}{list(tg) if tg else ''}" for (t, tg), p in tasks.items())
        raise EvaluateError(f"the trained runs mix tasks/targets ({listed}); retrain them with one train.task")
    (task, targets), = tasks
    return task, list(targets), modalities


def check_model_layout(model: str, layout: str, task: str) -> None:
    """ModelBuildError (one line naming model, layout and the accepted ones) unless the model takes the
    segments' layout (`segment.layout`) for this task."""
    try:
        check_layout(model, layout, task)
    except ModelError as e:
        raise ModelBuildError(f"{e} (segment.layout)") from None


def check_fits(path: Path, info: dict[str, Any], segments: Segments) -> None:
    try:
        check_layout(info["model"], segments.layout, info["task"])
    except ModelError as e:
        raise EvaluateError(f"{path}: {e}; the segments were re-made with another segment.layout: retrain") from None
    lacking = [m for m in info["modalities"] if m not in segments.x]
    if lacking:
        raise EvaluateError(f"{path}: trained on modalities {lacking} that the segments lack ({list(segments.x)})")
    wrong = {m: (d, int(segments.x[m].shape[-1])) for m, d in info["dims"].items() if d != segments.x[m].shape[-1]}
    if wrong:
        raise EvaluateError(f"{path}: feature dimensions (trained, segments) differ: {wrong}; retrain")
    if info["task"] == "classification" and list(info["classes"]) != list(segments.classes):
        raise EvaluateError(f"{path}: trained on classes {info['classes']}, the segments have {segments.classes}; retrain")


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
    {name: (x, mask)}; x's values may be row views (`pipeline.run_scoring.PlannedRows`), which `predict`
    materialises one batch of rows at a time."""
    mods, out = info["modalities"], {}
    for name, (xc, mc) in applied.items():
        pred = predict(model, {m: xc[m] for m in mods}, {m: mc[m] for m in mods}, device, batch_size, valid=split.valid)
        if not np.all(np.isfinite(pred)):
            raise EvaluateError(f"{path}: non-finite outputs under condition '{name}'")
        out[name] = (score(info["task"], split, pred, info["targets"]), pred)
    return out

