"""Pure robustness analysis for the report: the papers' main table with significance markers, curves
per condition family, AUILC and modality importance. Numbers in, TableData / plain data out; no files.
Curves group conditions by the family, modality and level columns evaluate writes beside each name
(`tables.ConditionInfo`); no condition name is parsed here.

Run names are '<model>/<strategy>' (a bare '<model>' has no strategy and so no ‡ comparison).
Markers (000 §6, Table 2; tests in `pipeline.stats`):
    ‡  the run beats its model's `standard` run under the condition: one-sided paired t-test across
       seeds, Holm-corrected across the model's other runs compared under that condition
    ✓  the condition's score is not significantly different (two-sided paired t-test) from the run's
       own all-present score
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from pipeline import stats
from pipeline.report.inputs import ReportError
from pipeline.report.tables import (
    ALL_PRESENT,
    EVERY_MODALITY,
    MISSING,
    ConditionInfo,
    Key,
    Stat,
    TableData,
    fmt_number,
    fmt_stat,
    seed_stat,
)

BETTER, SAME = "‡", "✓"
STANDARD = "standard"
# families drawn as curves, in this order, with the meaning of their level
LEVELED = {
    "clip_zero": "p (share of clips with the modality zeroed)",
    "frame_zero": "p (share of frames zeroed)",
    "frame_repeat": "p (share of frames repeated)",
    "random_missing": "missing rate",
    "availability": "share of frames available",
}
ALL = "all modalities"
Results = dict[Key, dict[int, float]]


def main_metric(results: Results) -> str:
    """UF1 (macro_f1) for classification, the mean CCC over targets for regression."""
    metrics = {k[2] for k in results}
    for m in ("macro_f1", "ccc_mean"):
        if m in metrics:
            return m
    raise ReportError(f"results.csv holds neither 'macro_f1' nor 'ccc_mean' rows (has {sorted(metrics)}); "
                      "rerun the `evaluate` stage")


def split_run(run: str) -> tuple[str, str]:
    model, _, strategy = run.partition("/")
    return model, strategy


def _common(a: dict[int, float], b: dict[int, float]) -> tuple[dict[int, float], dict[int, float]] | None:
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    return {s: a[s] for s in seeds}, {s: b[s] for s in seeds}


def better_markers(results: Results, runs: Sequence[str], condition: str, metric: str,
                   higher_is_better: bool = True) -> dict[str, dict]:
    """{run: {p, p_holm, significant}} for every non-standard run whose model has a standard run with
    the condition: one-sided paired t-test against it, Holm across the model's tested runs."""
    out: dict[str, dict] = {}
    for model in sorted({split_run(r)[0] for r in runs}):
        base = results.get((f"{model}/{STANDARD}", condition, metric))
        if not base:
            continue
        pvals, diffs = {}, {}
        for run in runs:
            m, strategy = split_run(run)
            if m != model or strategy in ("", STANDARD):
                continue
            paired = _common(results.get((run, condition, metric), {}), base)
            if paired is None:
                continue
            try:
                t = stats.paired_ttest(*paired, "greater" if higher_is_better else "less")
            except stats.StatsError:  # non-finite scores: no test, no marker
                continue
            pvals[run], diffs[run] = t.p, t.mean_diff
        if pvals:
            reject, adjusted = stats.holm(pvals)
            for run in pvals:
                out[run] = {"p": pvals[run], "p_holm": adjusted[run], "significant": reject[run]}
    return out


def same_as_all_present(results: Results, run: str, condition: str, metric: str) -> bool | None:
    """✓ test; None when it cannot be run (fewer than two shared seeds)."""
    paired = _common(results.get((run, condition, metric), {}), results.get((run, ALL_PRESENT, metric), {}))
    if paired is None or condition == ALL_PRESENT:
        return None
    try:
        return stats.not_different_from_all_present(*paired)
    except stats.StatsError:  # non-finite scores: no test, no marker
        return None


def main_conditions(results: Results, modalities: Sequence[str]) -> list[str]:
    present = {k[1] for k in results}
    return [c for c in [ALL_PRESENT] + [f"{MISSING}{m}" for m in modalities] if c in present]


def main_table(summary: dict[Key, Stat], results: Results, runs: Sequence[str], conditions: Sequence[str],
               metric: str, higher_is_better: bool = True) -> TableData:
    """Rows = runs, columns = conditions; 'mean ± std' + markers."""
    header = ["Run"] + [("all present" if c == ALL_PRESENT else c[len(MISSING):] + " missing") for c in conditions]
    better = {c: better_markers(results, runs, c, metric, higher_is_better) for c in conditions}
    rows = []
    for run in runs:
        row = [run]
        for c in conditions:
            cell = fmt_stat(summary.get((run, c, metric)))
            marks = ""
            if better[c].get(run, {}).get("significant"):
                marks += BETTER
            if same_as_all_present(results, run, c, metric):
                marks += SAME
            row.append(f"{cell} {marks}".rstrip())
        rows.append(row)
    return TableData(header, rows)


@dataclass
class Curve:
    levels: list[float]
    mean: list[float]
    std: list[float]  # NaN where one seed


def curves(results: Results, conditions: dict[str, ConditionInfo], runs: Sequence[str], modalities: Sequence[str],
           metric: str) -> dict[str, dict[str, dict[str, Curve]]]:
    """{family: {modality or ALL: {run: Curve}}} for the leveled families present in `results`, with
    each condition's family, modality and level from `conditions` (`tables.index_conditions`);
    modalities outside `modalities` are left out."""
    points: dict[str, dict[str, dict[str, dict[float, Stat]]]] = {}
    for (run, cond, met), cell in results.items():
        c = conditions.get(cond)
        if met != metric or run not in runs or c is None or c.family not in LEVELED or c.level is None:
            continue
        mod = ALL if c.modality == EVERY_MODALITY else c.modality
        if mod != ALL and mod not in modalities:
            continue
        points.setdefault(c.family, {}).setdefault(mod, {}).setdefault(run, {})[c.level] = seed_stat(list(cell.values()))
    out: dict[str, dict[str, dict[str, Curve]]] = {}
    for fam in LEVELED:
        if fam not in points:
            continue
        mods = [m for m in [ALL, *modalities] if m in points[fam]]
        out[fam] = {}
        for mod in mods:
            out[fam][mod] = {}
            for run in runs:
                pts = points[fam][mod].get(run)
                if pts:
                    lv = sorted(pts)
                    out[fam][mod][run] = Curve(lv, [pts[x].mean for x in lv], [pts[x].std for x in lv])
    return out


def auilc_table(fam_curves: dict[str, dict[str, Curve]], runs: Sequence[str]) -> TableData:
    """AUILC (003 Eq. 19) per run and random_missing modality, over the seed means at AUILC_RATES."""
    mods = list(fam_curves)
    rows = []
    for run in runs:
        row = [run]
        for mod in mods:
            c = fam_curves[mod].get(run)
            if c is None:
                row.append("n/a")
                continue
            try:
                row.append(fmt_number(stats.auilc(c.levels, c.mean)))
            except stats.StatsError:
                row.append("n/a (incomplete grid)")
        rows.append(row)
    return TableData(["Run"] + [f"AUILC ({m})" for m in mods], rows)


def drops(results: Results, run: str, modalities: Sequence[str], metric: str) -> dict[str, Stat]:
    """{modality: all_present − missing:<m>} paired by seed (positive = the modality helps)."""
    base = results.get((run, ALL_PRESENT, metric), {})
    out = {}
    for m in modalities:
        miss = results.get((run, f"{MISSING}{m}", metric), {})
        common = sorted(set(base) & set(miss))
        if common:
            out[m] = seed_stat([base[s] - miss[s] for s in common])
    return out


def importance_table(importance: dict) -> TableData:
    """One row per (model, modality) of the `importance` stage's search (000 §4)."""
    header = ["Model", "Modality", "all present", "missing", "mean drop", "t", "p", "p (Holm)", "important", "ρ"]
    rows = []
    for model, entry in sorted(importance.items()):
        if not isinstance(entry, dict):
            raise ReportError(f"importance.json: entry for {model!r} is not an object; rerun the `importance` stage")
        rho = entry.get("rho") or {}
        for mod, t in (entry.get("tests") or {}).items():
            def num(k):
                v = t.get(k)
                return fmt_number(float(v)) if isinstance(v, (int, float)) and v is not None else "n/a"
            rows.append([model, mod, num("all_present"), num("missing"), num("mean_drop"), num("t"), num("p"),
                         num("p_holm"), "yes" if t.get("important") else "no",
                         fmt_number(float(rho[mod])) if mod in rho else "–"])
    return TableData(header, rows)


def importance_summary(importance: dict) -> list[str]:
    return [f"{model}: important = {', '.join(e.get('important') or []) or 'none'}"
            + (f" (metric {e['metric']}, α = {e['alpha']}, seeds {e.get('seeds')})" if "metric" in e and "alpha" in e else "")
            for model, e in sorted(importance.items()) if isinstance(e, dict)]

