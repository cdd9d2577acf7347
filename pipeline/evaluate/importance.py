"""The automated importance search of 000 §4 ("optimized training", step 1).

For every model trained with the `standard` strategy: evaluate each seed on the DEVEL partition with
all modalities present and with each modality missing (`pipeline.missing.MissingModality`, the
evaluation conditions). A modality is *important* when its absence degrades the model's selection
metric (macro-F1, or mean CCC for regression) significantly: a paired t-test across seeds of
all-present against missing (`pipeline.evaluate.stats.paired_ttest`) at `alpha` (000 §6: p < 0.05), with a
lower score when missing.

How 000 tests (§6): "We use the Holm-Bonferroni method to assert statistically significant difference
in the comparisons in Section 6.1" (Table 1, the model against several baselines). "For other
results, we do a t-test using a threshold of p-value < 0.05 … a two-sided t-test to check for
statistical difference" — §6.2's Table 2 marks (✓) a missing-modality result "not statistically
significantly different" from all-present, and the important modalities are those without the mark
and with a drop ("With these results, we can identify the most important modalities"). So by default
(000's scope) the search runs two-sided tests without Holm:

    alternative  two-sided (default, 000 §6.2) | greater (one-sided: all-present better than missing)
    holm         false (default: 000 applies Holm only across §6.1's baselines) | true: Holm–Bonferroni
                 across the model's modalities (stricter; `p_holm` is recorded either way)
    min_drop     also require a mean drop of at least this much (default 0 = the paper): with few seeds a
                 tiny but consistent drop (a noise modality the model slightly overfits to) is
                 significant too.

ρ_eliminate (000 §4): each batch drops important modality i with probability ρ_i and keeps everything
with ρ_none = 1 − Σ ρ_i. The paper chose the ρ "empirically … keeping the best ones for the validation
set" (§6.2): 0.25 for one important modality (arousal: video; ρ_none 0.75), 0.333 each for two
(valence: audio and video; ρ_none 0.334). `rho` is:

    paper    (default) 000 §6.2's values by the number n of important modalities: n = 1: 0.25;
             n = 2: 0.333 each; n ≥ 3 (the paper has no such case): 1/(n+1) each, as 'equal'
    equal    1/(n+1) each, so ρ_none = ρ_i (n = 1: 0.5; n = 2: 1/3 each)
    a number the same ρ for every important modality (0.25: 000's single-modality value)
    {modality: ρ}  per modality (must name every important one)

Σ ρ_i must not exceed 1. ρ_none is 1 − Σ ρ_i rounded to 12 decimals (0.334, not 0.33399999999999996).

Output (data/importance/<model>.json, one file per model, the `importance@<model>` stage):
    {model: {"important": [mod…], "rho": {mod: ρ}, "rho_none": ρ_none, "metric": name,
             "partition": "devel", "alpha": α, "alternative": …, "holm": bool, "seeds": [s…],
             "tests": {mod: {"all_present": mean, "missing": mean, "mean_drop": mean, "t": t, "p": p,
                             "p_holm": Holm-adjusted p (recorded even when `holm` is off),
                             "significant": bool (by the scope in force), "important": bool}}}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from pipeline.core.config import Section
from pipeline.core.device import pick_device
from pipeline.core.errors import PipelineError
from pipeline.core.paths import IMPORTANCE_DIR, MODELS_DIR
from pipeline.core.store import write_json
from pipeline.evaluate.scoring import ScoreJob, ScoringContext, score_runs
from pipeline.evaluate.stats import holm, paired_ttest
from pipeline.missing import AllPresent, MissingModality
from pipeline.runs.feed import STANDARD, selection_metric, task_split
from pipeline.runs.files import check_fits, find_trained, read_trained_info
from pipeline.segment.contract import Segments
from pipeline.segment.protocols import replicate


class ImportanceParams(Section):
    """The `importance` section: the automated importance search before `eliminate` training (000 §4, §6)."""

    alpha: float = Field(0.05, gt=0, lt=1, description="significance level (000 §6: p < 0.05)")
    alternative: Literal["two-sided", "greater"] = Field(
        "two-sided", description="000 §6: two-sided tests for a difference from all-present (Table 2's ✓); "
        "greater: one-sided (all-present better)",
    )
    holm: bool = Field(
        False, description="Holm–Bonferroni across the modalities (000 §6 applies it only to §6.1's comparisons "
        "against the baselines, not here: false)",
    )
    min_drop: float = Field(
        0.0, ge=0, description="also require a mean drop of at least this much (paper: none, 0.0); guards against "
        "tiny but consistent drops flagged with few seeds",
    )
    rho: Literal["paper", "equal"] | float | dict[str, float] = Field(
        "paper", description="ρ_eliminate: 'paper' (000 §6.2: 0.25 for one important modality, 0.333 each for two), "
        "'equal' = 1/(n+1) each, a number for each, or {modality: ρ} (000 §4)",
    )

    @field_validator("rho")
    @classmethod
    def _valid_rho(cls, v: Any) -> Any:
        if isinstance(v, str):
            return v
        values = list(v.values()) if isinstance(v, dict) else [v]
        if any(not 0 < x <= 1 for x in values):
            raise ValueError(f"ρ_eliminate must lie in (0, 1], got {v!r}")
        if isinstance(v, dict) and sum(values) > 1 + 1e-9:
            raise ValueError(f"ρ_eliminate {v!r} sums to {sum(values):.4g} > 1 (000 §4: ρ_none = 1 − Σρ ≥ 0)")
        return v


# 000 §6.2: ρ_eliminate per important modality by their number (arousal: 1 → 0.25; valence: 2 → 0.333)
PAPER_RHO = {1: 0.25, 2: 0.333}


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
    if rho == "paper":
        each = PAPER_RHO.get(len(important), 1.0 / (len(important) + 1))
        out = {m: each for m in important}
    elif rho == "equal":
        out = {m: 1.0 / (len(important) + 1) for m in important}
    elif isinstance(rho, dict):
        lacking = [m for m in important if m not in rho]
        if lacking:
            raise ImportanceError(f"importance.rho gives no ρ for the important modalities {lacking}")
        out = {m: float(rho[m]) for m in important}
    elif isinstance(rho, (int, float)) and not isinstance(rho, bool):
        out = {m: float(rho) for m in important}
    else:
        raise ImportanceError(f"importance.rho: {rho!r} is not 'paper', 'equal', a number or {{modality: ρ}}")
    if any(not 0 < v <= 1 for v in out.values()) or sum(out.values()) > 1 + 1e-9:
        raise ImportanceError(f"importance.rho: ρ_eliminate {out} must lie in (0, 1] and sum to at most 1")
    return out


def rho_none(rho: dict[str, float]) -> float:
    """ρ_none = 1 − Σ ρ_i (000 §4), rounded to 12 decimals so that 000's 0.333 + 0.333 gives 0.334."""
    return round(1.0 - sum(rho.values()), 12)


def decide(
    all_present: dict[int, float],
    missing: dict[str, dict[int, float]],
    alpha: float,
    min_drop: float = 0.0,
    holm_scope: bool = False,
    alternative: str = "two-sided",
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(important modalities, per-modality tests) from seed-paired scores {seed: score} (higher is
    better): a significant paired t-test (`alternative`; Holm-adjusted across the modalities when
    `holm_scope`) with a mean drop > 0 and at least `min_drop`. Defaults: 000 §6.2's (two-sided, no Holm)."""
    if alternative not in ("two-sided", "greater"):
        raise ImportanceError(f"importance.alternative: {alternative!r}; use 'two-sided' or 'greater'")
    tests = {m: paired_ttest(all_present, s, alternative) for m, s in missing.items()}
    reject, adjusted = holm({m: t.p for m, t in tests.items()}, alpha)
    table = {}
    for m, t in tests.items():
        significant = bool(reject[m]) if holm_scope else bool(t.p < alpha)  # 000 §6: "p-value < 0.05"
        table[m] = {
            "all_present": float(np.mean(list(all_present.values()))),
            "missing": float(np.mean(list(missing[m].values()))),
            "mean_drop": t.mean_diff,
            "t": t.statistic,
            "p": t.p,
            "p_holm": adjusted[m],
            "significant": significant,
            "important": bool(significant and t.mean_diff > 0 and t.mean_diff >= min_drop),
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
    # with several folds each (fold, seed) is one paired replicate (pipeline.segment.protocols.replicate)
    runs = [(fold, r) for fold in segments.fold_ids for r in find_trained(models_dir, fold) if wanted(r)]
    if not runs:
        return {}
    dev = pick_device(device)
    scores: dict[str, dict[str, dict[int, float]]] = {}  # model -> condition -> replicate -> score
    meta: dict[str, tuple[str, list[str]]] = {}
    contexts: dict[tuple, ScoringContext] = {}
    jobs: list[ScoreJob] = []
    for fold, (name, seed, path) in runs:
        view = segments.for_fold(fold or 0)
        info = read_trained_info(path)
        check_fits(path, info, view)
        key = (fold, info["task"], tuple(info["targets"]), tuple(info["modalities"]))
        if key not in contexts:
            split = task_split(view, "devel", list(info["modalities"]), info["task"], info["targets"] or ("arousal", "valence"), who="importance search")
            if len(split) == 0:
                raise ImportanceError("no labelled sequences in the 'devel' partition; the importance search needs it")
            contexts[key] = ScoringContext(split, (AllPresent(),) + tuple(MissingModality(m) for m in info["modalities"]))
        metric = selection_metric(info["task"])
        model_name = name.rsplit("/", 1)[0]
        if meta.setdefault(model_name, (metric, list(info["modalities"]))) != (metric, list(info["modalities"])):
            raise ImportanceError(f"{path}: the seeds of '{name}' differ in task or modalities; retrain them together")
        jobs.append(ScoreJob(path, key))
    # each context's runs together (runs come fold by fold)
    order = sorted(range(len(jobs)), key=lambda i: list(contexts).index(jobs[i].context))
    # each run's metrics only: its outputs under every condition are dropped as it comes back
    scored = {i: (r.info, {cond: metrics for cond, (metrics, _) in r.scores.items()})
              for i, r in zip(order, tqdm(score_runs([jobs[i] for i in order], contexts, dev), total=len(order),
                                          desc="importance", disable=not progress))}
    for i, (fold, (name, seed, _)) in enumerate(runs):  # in the runs' order, as the files list them
        info, by_cond = scored[i]
        metric, model_name = selection_metric(info["task"]), name.rsplit("/", 1)[0]
        for cond, metrics in by_cond.items():
            scores.setdefault(model_name, {}).setdefault(cond, {})[replicate(fold, seed)] = metrics[metric]

    out: dict[str, dict[str, Any]] = {}
    for model_name, by_cond in scores.items():
        metric, mods = meta[model_name]
        seeds = sorted(by_cond["all_present"])
        if len(seeds) < 2:
            raise ImportanceError(
                f"'{model_name}/{STANDARD}' has {len(seeds)} seed(s); the importance search's paired t-test needs at "
                "least 2 (000 §6 uses 30): list more train.seeds"
            )
        important, tests = decide(
            by_cond["all_present"], {m: by_cond[f"missing:{m}"] for m in mods}, params.alpha, params.min_drop,
            params.holm, params.alternative,
        )
        rho = derive_rho(important, params.rho)
        out[model_name] = {
            "important": important,
            "rho": rho,
            "rho_none": rho_none(rho),
            "metric": metric,
            "partition": "devel",
            "alpha": params.alpha,
            "alternative": params.alternative,
            "holm": params.holm,
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
