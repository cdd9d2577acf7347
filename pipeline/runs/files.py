"""A trained run on disk. A run is one model trained with one missing-modality strategy and one seed:

    <models dir>/<model>/<strategy>/seed_<s>/model.pt      `save_trained` / `load_trained` (written atomically)
    <models dir>/<model>/<strategy>/seed_<s>/history.csv   one row per epoch (pipeline/train/loop.py)
    <models dir>/<model>/<strategy>/rate_<r>/seed_<s>/…     the same family trained at another missing
                                                           rate r (params.yaml grid.rates)

(…/fold_<k>/seed_<s> under a protocol with several folds), named `<model>/<strategy>` in every output
downstream. Here: the names and folders, the model file format, reading it back and finding runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

from pipeline.core.store import atomic_path
from pipeline.models.registry import ModelError, build_model, check_layout
from pipeline.runs.feed import STANDARD, EvaluateError, TrainError
from pipeline.runs.params import TrainParams
from pipeline.segment.contract import Segments

MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"
# 3: models carry an input convention (`missing_input`); see `load_trained`. (MCT-HFR's default became
# `token` later without a new format: a file without `missing_tokens` fills zeros under it, as under `zero`.)
FORMAT_VERSION = 3
# the input convention each model followed before format 3 (when it was not yet a param): MCT-HFR
# attended zero-filled missing steps, every other model masked them
LEGACY_MISSING_INPUT = {"mct_hfr": "zero"}
_SEED_DIR = re.compile(r"^seed_(-?\d+)$")
_FOLD_DIR = re.compile(r"^fold_(\d+)$")
_RATE_DIR = re.compile(r"^rate_(\d+(?:\.\d*)?(?:e-?\d+)?)$")



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
    weights (per modality, the feature backbone's weights statement), missing_tokens ({mod: [D] tensor}, the
    input convention `token`'s fill, only under it), format. Written atomically."""
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
    if blob.get("missing_tokens"):  # the tokens the input convention `token` filled in during training
        model.missing_tokens = {m: t.numpy() for m, t in blob["missing_tokens"].items()}
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
    info = {k: v for k, v in blob.items() if k not in ("state_dict", "missing_tokens")}
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
