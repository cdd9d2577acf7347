"""Training: one model per seed on the 'train' partition, early stopping on 'devel' macro-F1.

Per seed it writes `<out_dir>/<model>/seed_<s>/model.pt` (see `save_trained`) and `history.csv`
(epoch, train_loss, devel_loss, devel_accuracy, devel_macro_f1; one row per epoch run). Clips whose
label is -1 (none) are left out of every partition.

Cross-entropy, Adam (lr from `TrainParams`, 002 §3.3: 1e-4), mini-batches shuffled by a generator
seeded with the run's seed; `torch`, `numpy` and `random` seeded and deterministic algorithms on, so a
run on the same machine is repeatable to the bit. CUDA when available.
"""

from __future__ import annotations

from pipeline.errors import PipelineError

import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from pipeline.config import MODELS_DIR, TrainParams
from pipeline.metrics import accuracy, macro_f1
from pipeline.models.registry import build_model
from pipeline.segments import Segments
from pipeline.store import atomic_path, write_text

MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"
FORMAT_VERSION = 1
EVAL_BATCH_SIZE = 64


class TrainError(PipelineError):
    """Training cannot run on these segments/params; the message says why."""


# ---- data ----------------------------------------------------------------------------------------


def require_modalities(segments: Segments, modalities: list[str], who: str) -> None:
    lacking = [m for m in modalities if m not in segments.x]
    if lacking:
        raise TrainError(
            f"{who} needs modalities {lacking} that the segments lack (they hold {list(segments.x)}); "
            f"add them to segment.modalities or remove them from train.modalities"
        )


def labelled_split(
    segments: Segments, partition: str, modalities: list[str], who: str = "training"
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """(indices, x, mask, labels) of the labelled sequences of `partition`."""
    require_modalities(segments, modalities, who)
    idx = segments.indices(partition)
    idx = idx[segments.label[idx] >= 0]
    return (
        idx,
        {m: segments.x[m][idx] for m in modalities},
        {m: segments.mask[m][idx].astype(bool) for m in modalities},
        segments.label[idx].astype(np.int64),
    )


def to_tensors(
    x: dict[str, np.ndarray], mask: dict[str, np.ndarray], rows: np.ndarray, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return (
        {m: torch.from_numpy(np.ascontiguousarray(v[rows], dtype=np.float32)).to(device) for m, v in x.items()},
        {m: torch.from_numpy(np.ascontiguousarray(v[rows], dtype=bool)).to(device) for m, v in mask.items()},
    )


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    x: dict[str, np.ndarray],
    mask: dict[str, np.ndarray],
    device: torch.device | str = "cpu",
    batch_size: int = EVAL_BATCH_SIZE,
) -> np.ndarray:
    """Logits [N, n_outputs] in eval mode (the model's train/eval mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    n = len(next(iter(mask.values())))
    out = []
    try:
        for start in range(0, n, batch_size):
            xb, mb = to_tensors(x, mask, np.arange(start, min(start + batch_size, n)), torch.device(device))
            out.append(model(xb, mb).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# ---- reproducibility -----------------------------------------------------------------------------


def pick_device(device: str | torch.device | None = None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


def run_dir(out_dir: str | Path, model: str, seed: int) -> Path:
    return Path(out_dir) / model / f"seed_{seed}"


def train_one(
    segments: Segments,
    params: TrainParams,
    seed: int,
    out_dir: str | Path = MODELS_DIR,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `params.model` with `seed`; write model.pt and history.csv; return the run summary."""
    mods = list(params.modalities)
    _, x_tr, m_tr, y_tr = labelled_split(segments, "train", mods)
    _, x_dv, m_dv, y_dv = labelled_split(segments, "devel", mods)
    for name, y in (("train", y_tr), ("devel", y_dv)):
        if len(y) == 0:
            raise TrainError(
                f"no labelled sequences in the '{name}' partition; "
                + ("check the corpus labels" if name == "train" else "set segment.partition.devel > 0 (early stopping needs it)")
            )
    n_classes = len(segments.classes)
    if n_classes < 2:
        raise TrainError(f"classification needs at least 2 classes, the segments have {segments.classes}")
    dims = {m: int(x_tr[m].shape[-1]) for m in mods}
    dev = pick_device(device)

    with deterministic(seed):
        model = build_model(params.model, dims, n_classes, params).to(dev)
        optim = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
        order_rng = np.random.default_rng(seed)
        y_tr_t = torch.from_numpy(y_tr)
        history: list[dict[str, float]] = []
        best_f1, best_epoch, best_state = -np.inf, 0, None
        bar = tqdm(range(1, params.epochs + 1), desc=f"train {params.model} seed {seed}", disable=not progress, leave=False)
        for epoch in bar:
            model.train()
            order = order_rng.permutation(len(y_tr))
            total = 0.0
            for start in range(0, len(order), params.batch_size):
                rows = order[start : start + params.batch_size]
                xb, mb = to_tensors(x_tr, m_tr, rows, dev)
                loss = F.cross_entropy(model(xb, mb), y_tr_t[rows].to(dev))
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                total += float(loss.detach()) * len(rows)
            logits = predict_logits(model, x_dv, m_dv, dev)
            pred = logits.argmax(axis=1)
            row = {
                "epoch": epoch,
                "train_loss": total / len(y_tr),
                "devel_loss": float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y_dv))),
                "devel_accuracy": accuracy(y_dv, pred),
                "devel_macro_f1": macro_f1(y_dv, pred),
            }
            history.append(row)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", devel_f1=f"{row['devel_macro_f1']:.3f}")
            if row["devel_macro_f1"] > best_f1:  # strict: ties keep the earlier epoch
                best_f1, best_epoch = row["devel_macro_f1"], epoch
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= params.patience:
                break
        bar.close()

    target = run_dir(out_dir, params.model, seed)
    save_trained(
        target / MODEL_FILE,
        {
            "state_dict": best_state,
            "model": params.model,
            "params": params.model_dump(mode="json"),
            "dims": dims,
            "classes": list(segments.classes),
            "modalities": mods,
            "seed": seed,
            "best_epoch": best_epoch,
            "devel_macro_f1": float(best_f1),
            "epochs_run": len(history),
            "weights": {m: segments.modalities[m].weights_statement for m in mods if m in segments.modalities},
        },
    )
    write_text(target / HISTORY_FILE, pl.DataFrame(history).write_csv())
    return {"best_epoch": best_epoch, "devel_macro_f1": float(best_f1), "epochs_run": len(history)}


def train_all(
    segments: Segments,
    params: TrainParams,
    out_dir: str | Path = MODELS_DIR,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Train one model per seed in `params.seeds`; {model: {"seed_<s>": {best_epoch, devel_macro_f1,
    epochs_run}}} (the shape of data/metrics/train.json)."""
    require_modalities(segments, list(params.modalities), "training")
    runs = {
        f"seed_{s}": train_one(segments, params, s, out_dir, device, progress)
        for s in tqdm(params.seeds, desc="seeds", disable=not progress or len(params.seeds) < 2)
    }
    return {params.model: runs}


# ---- saved models --------------------------------------------------------------------------------


def save_trained(path: str | Path, payload: dict[str, Any]) -> None:
    """model.pt: a dict with state_dict, model (name), params (TrainParams dump), dims, classes,
    modalities, seed, best_epoch, devel_macro_f1, epochs_run, weights (per modality, the feature
    backbone's weights statement), format. Written atomically."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({**payload, "format": FORMAT_VERSION}, tmp)


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode on `device`, info) from a model.pt; info["params"] is a TrainParams."""
    blob = _read(path)
    info = _info(path, blob)
    model = build_model(info["model"], info["dims"], len(info["classes"]), info["params"])
    model.load_state_dict(blob["state_dict"])
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
    return info
