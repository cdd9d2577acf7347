"""The automated importance search of 000 §4 ("optimized training", step 1).

For every model trained with the `standard` strategy: evaluate each seed on the DEVEL partition with
all modalities present and with each modality missing (`pipeline.missing.MissingModality`, the
evaluation conditions). A modality is *important* when its absence degrades the model's selection
metric (macro-F1, or mean CCC for regression) significantly: one-sided paired t-test across seeds
(all-present > missing, `pipeline.stats.paired_ttest`), Holm–Bonferroni across the modalities, at
`alpha` (000 §6: 0.05). Optionally (`min_drop`, default 0 = the paper) the mean drop must also reach a
minimum: with few seeds a tiny but consistent drop (a noise modality the model slightly overfits to)
is significant too.

ρ_eliminate (000 §4): each batch drops important modality i with probability ρ_i and keeps everything
with ρ_none = 1 − Σ ρ_i. The paper chose the ρ "empirically … keeping the best ones for the validation
set" (§6.2): 0.25 for one important modality (ρ_none 0.75), 0.333 each for two (ρ_none 0.334). Here
`rho` is: 'equal' (default; ρ_i = 1/(n+1), so ρ_none = ρ_i — the paper's choice for two modalities),
a number (the same ρ for every important modality; 0.25 is the paper's single-modality value), or
{modality: ρ}. Σ ρ_i must not exceed 1.

Output (data/importance/<model>.json, one file per model, the `importance@<model>` stage):
    {model: {"important": [mod…], "rho": {mod: ρ}, "rho_none": ρ_none, "metric": name,
             "partition": "devel", "alpha": α, "seeds": [s…],
             "tests": {mod: {"all_present": mean, "missing": mean, "mean_drop": mean, "t": t, "p": p,
                             "p_holm": p, "significant": bool, "important": bool}}}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from pipeline.config import Section
from pipeline.device import pick_device
from pipeline.errors import PipelineError
from pipeline.missing import AllPresent, MissingModality
from pipeline.paths import IMPORTANCE_DIR, MODELS_DIR
from pipeline.protocols import replicate
from pipeline.runs import STANDARD, apply_conditions, check_fits, find_trained, fold_ids, load_trained, score_conditions, selection_metric, task_split
from pipeline.segments import Segments
from pipeline.stats import holm, paired_ttest
from pipeline.store import write_json


class ImportanceParams(Section):
    """The `importance` section: the automated importance search before `eliminate` training (000 §4, §6)."""

    alpha: float = Field(0.05, gt=0, lt=1, description="significance level (000 §6: p < 0.05), Holm across modalities")
    min_drop: float = Field(
        0.0, ge=0, description="also require a mean drop of at least this much (paper: none, 0.0); guards against "
        "tiny but consistent drops flagged with few seeds",
    )
    rho: Literal["equal"] | float | dict[str, float] = Field(
        "equal", description="ρ_eliminate: 'equal' = 1/(n+1) each, a number for each, or {modality: ρ} (000 §4, §6.2)"
    )


# the eliminate runs keep a copy of the entry that drove them: data/models/<model>/eliminate/importance.json
IMPORTANCE_COPY = "importance.json"


def importance_file(model: str, root: str | Path = IMPORTANCE_DIR) -> Path:
    """data/importance/<model>.json: one model's entry (the `importance@<model>` stage's output)."""
    return Path(root) / f"{model}.json"


class ImportanceError(PipelineError):
    """The importance search cannot run (no standard runs, too few seeds…)."""


def derive_rho(important: Sequence[str], rho: Any) -> dict[str, float]:
    """ρ_eliminate per important modality from the `rho` setting (see the module docstring)."""
    important = list(important)
    if not important:
        return {}
    if rho == "equal":
        out = {m: 1.0 / (len(important) + 1) for m in important}
    elif isinstance(rho, dict):
        lacking = [m for m in important if m not in rho]
        if lacking:
            raise ImportanceError(f"importance.rho gives no ρ for the important modalities {lacking}")
        out = {m: float(rho[m]) for m in important}
    else:
        out = {m: float(rho) for m in important}
    if any(not 0 < v <= 1 for v in out.values()) or sum(out.values()) > 1 + 1e-9:
        raise ImportanceError(f"importance.rho: ρ_eliminate {out} must lie in (0, 1] and sum to at most 1")
    return out


def decide(
    all_present: dict[int, float], missing: dict[str, dict[int, float]], alpha: float, min_drop: float = 0.0
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(important modalities, per-modality tests) from seed-paired scores {seed: score} (higher is
    better): Holm-significant one-sided drop, and a mean drop of at least `min_drop`."""
    tests = {m: paired_ttest(all_present, s, "greater") for m, s in missing.items()}
    reject, adjusted = holm({m: t.p for m, t in tests.items()}, alpha)
    table = {
        m: {
            "all_present": float(np.mean(list(all_present.values()))),
            "missing": float(np.mean(list(missing[m].values()))),
            "mean_drop": t.mean_diff,
            "t": t.statistic,
            "p": t.p,
            "p_holm": adjusted[m],
            "significant": reject[m],
            "important": bool(reject[m] and t.mean_diff >= min_drop),
        }
        for m, t in tests.items()
    }
    return [m for m in missing if table[m]["important"]], table


def importance_search(
    segments: Segments,
    models_dir: str | Path = MODELS_DIR,
    params: ImportanceParams | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    only: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The importance entry of every model with `standard` runs under `models_dir` (only model `only`
    when given), see the module doc."""
    params = params or ImportanceParams()
    wanted = lambda r: r[0].endswith(f"/{STANDARD}") and (only is None or r[0] == f"{only}/{STANDARD}")  # noqa: E731
    # with several folds each (fold, seed) is one paired replicate (pipeline.protocols.replicate)
    runs = [(fold, r) for fold in fold_ids(segments) for r in find_trained(models_dir, fold) if wanted(r)]
    if not runs:
        return {}
    dev = pick_device(device)
    scores: dict[str, dict[str, dict[int, float]]] = {}  # model -> condition -> replicate -> score
    meta: dict[str, tuple[str, list[str]]] = {}
    splits: dict[tuple, Any] = {}
    for fold, (name, seed, path) in tqdm(runs, desc="importance", disable=not progress):
        view = segments.for_fold(fold or 0)
        model, info = load_trained(path, dev)
        check_fits(path, info, view)
        key = (fold, info["task"], tuple(info["targets"]), tuple(info["modalities"]))
        if key not in splits:
            split = task_split(view, "devel", list(info["modalities"]), info["task"], info["targets"] or ("arousal", "valence"), who="importance search")
            if len(split) == 0:
                raise ImportanceError("no labelled sequences in the 'devel' partition; the importance search needs it")
            conds = [AllPresent()] + [MissingModality(m) for m in info["modalities"]]
            splits[key] = (split, apply_conditions(conds, split))
        split, applied = splits[key]
        metric = selection_metric(info["task"])
        model_name = name.rsplit("/", 1)[0]
        if meta.setdefault(model_name, (metric, list(info["modalities"]))) != (metric, list(info["modalities"])):
            raise ImportanceError(f"{path}: the seeds of '{name}' differ in task or modalities; retrain them together")
        unit = replicate(fold, seed)
        for cond, (metrics, _) in score_conditions(model, info, split, applied, dev, path).items():
            scores.setdefault(model_name, {}).setdefault(cond, {})[unit] = metrics[metric]
        del model

    out: dict[str, dict[str, Any]] = {}
    for model_name, by_cond in scores.items():
        metric, mods = meta[model_name]
        seeds = sorted(by_cond["all_present"])
        if len(seeds) < 2:
            raise ImportanceError(
                f"'{model_name}/{STANDARD}' has {len(seeds)} seed(s); the importance search's paired t-test needs at "
                "least 2 (000 §6 uses 30): list more train.seeds"
            )
        important, tests = decide(by_cond["all_present"], {m: by_cond[f"missing:{m}"] for m in mods}, params.alpha, params.min_drop)
        rho = derive_rho(important, params.rho)
        out[model_name] = {
            "important": important,
            "rho": rho,
            "rho_none": 1.0 - sum(rho.values()),
            "metric": metric,
            "partition": "devel",
            "alpha": params.alpha,
            "seeds": seeds,
            "tests": tests,
        }
    return out


def write_importance(result: dict[str, Any], path: str | Path) -> None:
    write_json(path, result)


def read_importance(path: str | Path) -> dict[str, Any]:
    import json

    path = Path(path)
    if not path.exists():
        raise ImportanceError(f"{path}: not found; run the importance stage (`dvc repro importance@<model>`)")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ImportanceError(f"{path}: not valid JSON: {e}") from None
