"""Pure table logic: evaluation rows in, ordered and formatted table cells out. No files here.

Naming (MCT-HFR §5.5, seed paper 003): UA = unweighted accuracy = mean per-class recall (balanced accuracy),
WA = weighted accuracy = plain accuracy, UF1 = macro F1, WF1 = support-weighted F1.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from pipeline.report.eval_files import ReportError, Result, SummaryRow

ALL_PRESENT = "all_present"
MISSING = "missing:"
MISSING_FAMILY = "missing"  # whole modalities absent: missing:<m>[+<m>…]
EVERY_MODALITY = "all"  # the modality column of a condition on every modality (pipeline.evaluate.grid.condition_columns)
MAIN_METRIC = "macro_f1"

# metric name in results.csv -> (column label, meaning); this order is the table's column order
METRICS: dict[str, tuple[str, str]] = {
    "balanced_accuracy": ("UA", "unweighted accuracy: mean of the per-class recalls (balanced accuracy)"),
    "accuracy": ("WA", "weighted accuracy: share of test clips classified correctly"),
    "macro_f1": ("UF1", "unweighted F1: mean of the per-class F1 scores (macro F1)"),
    "weighted_f1": ("WF1", "weighted F1: per-class F1 weighted by class support"),
    "micro_f1": ("micro F1", "micro F1: F1 over all test clips pooled (equals WA for single-label data)"),
    "ccc_mean": ("CCC", "concordance correlation coefficient, mean over the regression targets"),
}

Key = tuple[str, str, str]  # model, condition, metric


@dataclass(frozen=True)
class Stat:
    """Mean and spread of one metric over seeds; std is NaN when it is undefined (one seed)."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class ConditionInfo:
    """A condition as evaluate describes it beside its name: family, modality (a name, 'a+b' for several,
    EVERY_MODALITY for every one) and level (None where the family has none)."""

    family: str
    modality: str
    level: float | None


@dataclass
class TableData:
    header: list[str]
    rows: list[list[str]]


def metric_label(metric: str) -> str:
    return METRICS[metric][0] if metric in METRICS else metric


def metric_order(metrics: Iterable[str]) -> list[str]:
    """The four classification metrics in UA, WA, UF1, WF1 order, then any others alphabetically."""
    present = set(metrics)
    return [m for m in METRICS if m in present] + sorted(present - set(METRICS))


def condition_label(condition: str) -> str:
    if condition == ALL_PRESENT:
        return "all modalities present"
    if condition.startswith(MISSING):
        return f"{condition[len(MISSING):]} missing"
    return condition


def condition_order(conditions: Iterable[str], modalities: Sequence[str]) -> list[str]:
    """all_present, then missing:<m> in the order of `modalities`, then any other condition sorted."""
    present = set(conditions)
    head = [ALL_PRESENT] if ALL_PRESENT in present else []
    missing = [f"{MISSING}{m}" for m in modalities if f"{MISSING}{m}" in present]
    return head + missing + sorted(present - set(head) - set(missing))


def fmt_number(x: float, digits: int = 3, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_stat(stat: Stat | None, digits: int = 3, signed: bool = False) -> str:
    """'0.650 ± 0.071'; the mean alone when the spread is undefined (one seed); 'n/a' for no data."""
    if stat is None or not math.isfinite(stat.mean):
        return "n/a"
    mean = fmt_number(stat.mean, digits, signed)
    if stat.n < 2 or not math.isfinite(stat.std):
        return mean
    return f"{mean} ± {stat.std:.{digits}f}"


def seed_stat(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (n − 1) over seeds."""
    v = np.asarray(values, dtype=np.float64)
    std = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
    return Stat(float(np.mean(v)) if len(v) else math.nan, std, len(v))


def index_results(results: Iterable[Result]) -> dict[Key, dict[int, float]]:
    """(model, condition, metric) -> {seed: value}; a repeated row is an error, not an overwrite."""
    out: dict[Key, dict[int, float]] = defaultdict(dict)
    for r in results:
        cell = out[(r.model, r.condition, r.metric)]
        if r.seed in cell:
            raise ReportError(
                f"results.csv: two rows for model {r.model!r}, seed {r.seed}, condition {r.condition!r}, "
                f"metric {r.metric!r}"
            )
        cell[r.seed] = r.value
    return dict(out)


def index_conditions(rows: Iterable[Result | SummaryRow]) -> dict[str, ConditionInfo]:
    """condition -> its family, modality and level; a condition described two ways is an error."""
    out: dict[str, ConditionInfo] = {}
    for r in rows:
        info = ConditionInfo(r.family, r.modality, r.level)
        if out.setdefault(r.condition, info) != info:
            raise ReportError(
                f"results.csv and summary.csv: condition {r.condition!r} is described both as {out[r.condition]} "
                f"and as {info}; rerun the `evaluate` stage"
            )
    return out


def index_summary(summary: Iterable[SummaryRow]) -> dict[Key, Stat]:
    out: dict[Key, Stat] = {}
    for s in summary:
        key = (s.model, s.condition, s.metric)
        if key in out:
            raise ReportError(f"summary.csv: two rows for model {s.model!r}, condition {s.condition!r}, "
                              f"metric {s.metric!r}")
        out[key] = Stat(s.mean, s.std, s.n_seeds)
    return out


def _close(a: float, b: float, tol: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def check_summary(summary: dict[Key, Stat], results: dict[Key, dict[int, float]], tol: float = 1e-4) -> str:
    """Check that summary.csv aggregates results.csv and say which standard deviation it uses.

    Raises ReportError where they disagree (a stale or hand-edited file); returns a plain-words name
    of the std convention ('sample standard deviation (n − 1)', 'population standard deviation (n)')
    or 'standard deviation' where the data cannot tell (every cell has fewer than two seeds or no
    spread). `tol` allows for CSV rounding.
    """
    if set(summary) != set(results):
        only_s, only_r = sorted(set(summary) - set(results)), sorted(set(results) - set(summary))
        raise ReportError(
            "summary.csv and results.csv cover different (model, condition, metric) cells: "
            f"only in summary {only_s[:5]}, only in results {only_r[:5]}; rerun the `evaluate` stage"
        )
    fits = {"sample standard deviation (n − 1)": True, "population standard deviation (n)": True}
    for key, stat in summary.items():
        values = np.asarray(list(results[key].values()), dtype=np.float64)
        if stat.n != len(values) or not _close(stat.mean, float(np.mean(values)), tol):
            raise ReportError(
                f"summary.csv disagrees with results.csv for {key}: summary mean {stat.mean} over "
                f"{stat.n} seeds, results mean {float(np.mean(values))} over {len(values)} seeds; "
                "rerun the `evaluate` stage"
            )
        if len(values) < 2 or not np.all(np.isfinite(values)):
            continue
        sample, pop = float(np.std(values, ddof=1)), float(np.std(values, ddof=0))
        fits["sample standard deviation (n − 1)"] &= _close(stat.std, sample, tol)
        fits["population standard deviation (n)"] &= _close(stat.std, pop, tol)
    matching = [name for name, ok in fits.items() if ok]
    if not matching:
        raise ReportError("summary.csv: its std is neither the sample nor the population standard "
                          "deviation of the seeds in results.csv; rerun the `evaluate` stage")
    return matching[0] if len(matching) == 1 else "standard deviation"


def models(results: dict[Key, dict[int, float]]) -> list[str]:
    return sorted({k[0] for k in results})


def seeds(results: dict[Key, dict[int, float]], model: str) -> list[int]:
    return sorted({s for k, cell in results.items() if k[0] == model for s in cell})


def cells_of(results: dict[Key, dict[int, float]], model: str) -> tuple[list[str], list[str]]:
    """The conditions and metrics evaluated for `model` (unordered)."""
    keys = [k for k in results if k[0] == model]
    return sorted({k[1] for k in keys}), sorted({k[2] for k in keys})


def paired_change(results: dict[Key, dict[int, float]], model: str, condition: str, metric: str) -> Stat | None:
    """Mean ± std over seeds of (condition − all_present), paired by seed; None without common seeds."""
    cond = results.get((model, condition, metric), {})
    base = results.get((model, ALL_PRESENT, metric), {})
    common = sorted(set(cond) & set(base))
    if not common:
        return None
    return seed_stat([cond[s] - base[s] for s in common])


def results_table(summary: dict[Key, Stat], model: str, conditions: Sequence[str], metrics: Sequence[str]) -> TableData:
    """Rows = conditions (ordered), columns = metrics as mean ± std, then the number of seeds."""
    header = ["Condition"] + [metric_label(m) for m in metrics] + ["seeds"]
    rows = []
    for c in conditions:
        stats = [summary.get((model, c, m)) for m in metrics]
        ns = sorted({s.n for s in stats if s is not None})
        rows.append([condition_label(c)] + [fmt_stat(s) for s in stats] + ["/".join(map(str, ns)) or "0"])
    return TableData(header, rows)


def change_table(results: dict[Key, dict[int, float]], model: str, conditions: Sequence[str],
                 metrics: Sequence[str]) -> TableData:
    """Change of every metric against all modalities present, for every other condition."""
    header = ["Condition"] + [f"Δ {metric_label(m)}" for m in metrics]
    rows = [
        [condition_label(c)] + [fmt_stat(paired_change(results, model, c, m), signed=True) for m in metrics]
        for c in conditions
        if c != ALL_PRESENT
    ]
    return TableData(header, rows)
