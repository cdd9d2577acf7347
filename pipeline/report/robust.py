"""Pure robustness analysis for the report: the papers' main table with significance markers, curves
per condition family, AUILC and modality importance. Numbers in, TableData / plain data out; no files.
Curves group conditions by the family, modality and level columns evaluate writes beside each name
(`tables.ConditionInfo`); no condition name is parsed here.

Run names are '<model>/<strategy>' (a bare '<model>' has no strategy and so no ‡ comparison).
Markers (000 §6, Table 2; tests in `pipeline.evaluate.stats`):
    ‡  the run beats its model's `standard` run under the condition: one-sided paired t-test across
       seeds, Holm-corrected across the model's other runs compared under that condition
    ✓  the condition's score is not significantly different (two-sided paired t-test) from the run's
       own all-present score
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pipeline.evaluate import stats
from pipeline.report.eval_files import ReportError
from pipeline.report.tables import (
    ALL_PRESENT,
    EVERY_MODALITY,
    MISSING,
    MISSING_FAMILY,
    ConditionInfo,
    Key,
    Stat,
    TableData,
    fmt_number,
    fmt_stat,
    metric_label,
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
    # the mechanisms beyond MCAR (docs/robustness.md)
    "imbalanced": "rate r missing of the modality (the others r/4)",
    "mnar": "share of steps missing, weakest first (MNAR)",
    "burst": "share of steps missing in bursts",
    "one_present": "rate missing of every other modality (this one kept)",
}
# families whose modality column is not (only) the affected modality: one_present names the one KEPT
# (every other loses steps), imbalanced the one losing most (the others lose a quarter as much)
KEPT_FAMILIES = ("one_present",)
SPREAD_FAMILIES = ("imbalanced",)
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


def blind(info: ConditionInfo | None, inputs: list[str] | None) -> bool:
    """True when a condition touches only modalities the run does not take (evaluate scores the run on
    its own, intact inputs there, so the number is its all-present score again, not a finding).
    `inputs` None (unknown) and conditions on every modality are never blind."""
    if info is None or inputs is None or info.modality in (EVERY_MODALITY, "") or info.family in SPREAD_FAMILIES:
        return False
    named = info.modality.split("+")
    if info.family in KEPT_FAMILIES:  # blind only when the run takes nothing but the kept modalities
        return not (set(inputs) - set(named))
    return not any(m in inputs for m in named)


def not_an_input(run: str) -> str:
    """The cell text where `blind` holds."""
    return f"n/a — not an input of {split_run(run)[0]}"


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


AUILC = "auilc"  # the paper table's column key and a published entry's condition for it


def column_label(condition: str) -> str:
    if condition == ALL_PRESENT:
        return "all present"
    if condition == AUILC:
        return "AUILC"
    return condition[len(MISSING):] + " missing" if condition.startswith(MISSING) else condition


def seed_auilc(results: Results, conditions: dict[str, ConditionInfo], run: str, metric: str) -> dict[int, float]:
    """{seed: AUILC} (003 Eq. 19) of `run` over random_missing on every modality at AUILC_RATES, one per
    seed evaluated on that whole grid (their mean is the AUILC of the seed means: the area is linear)."""
    by_seed: dict[int, dict[float, float]] = {}
    for (r, cond, met), cell in results.items():
        c = conditions.get(cond)
        if (r != run or met != metric or c is None or c.family != "random_missing"
                or c.modality != EVERY_MODALITY or c.level is None):
            continue
        for seed, v in cell.items():
            by_seed.setdefault(seed, {})[c.level] = v
    out = {}
    for seed, pts in sorted(by_seed.items()):
        levels = sorted(pts)
        try:
            out[seed] = stats.auilc(levels, [pts[x] for x in levels])
        except stats.StatsError:  # not the 0.0…0.9 grid
            continue
    return out


def paper_table(summary: dict[Key, Stat], results: Results, conditions: dict[str, ConditionInfo], runs: Sequence[str],
                columns: Sequence[str], metric: str, inputs: dict[str, list[str] | None] | None = None,
                published: Sequence = (), higher_is_better: bool = True) -> tuple[TableData, list[str]]:
    """The papers' main table (000 Table 2, 003 Table 3): rows = runs, columns = `columns` (all present,
    each modality missing) and AUILC where a run has the random-missing grid; cells 'mean ± std' over
    seeds with the ‡/✓ markers ('n/a — not an input of <model>' where `blind`). `published` entries
    (params report.published) follow their model's runs as 'paper: …' rows; those under a condition
    that is not a column come back as notes."""
    inputs = inputs or {}
    ext = dict(results)
    for run in runs:
        a = seed_auilc(results, conditions, run, metric)
        if a:
            ext[(run, AUILC, metric)] = a
    cols = list(columns) + ([AUILC] if any(k[1] == AUILC for k in ext) else [])
    better = {c: better_markers(ext, runs, c, metric, higher_is_better) for c in cols}
    header = ["Run"] + [column_label(c) for c in cols]
    by_model: dict[str, list[list[str]]] = {}
    for run in runs:
        row = [run]
        for c in cols:
            if blind(conditions.get(c), inputs.get(run)):
                row.append(not_an_input(run))
                continue
            cell = fmt_stat(seed_stat(list(ext[(run, c, metric)].values())) if c == AUILC and (run, c, metric) in ext
                            else summary.get((run, c, metric)))
            marks = BETTER if better[c].get(run, {}).get("significant") else ""
            if c != AUILC and same_as_all_present(results, run, c, metric):
                marks += SAME
            row.append(f"{cell} {marks}".rstrip())
        by_model.setdefault(split_run(run)[0], []).append(row)
    notes: list[str] = []
    paper_rows: dict[tuple[str, str, str], dict[str, list[str]]] = {}
    for e in published:
        what = " ".join(x for x in ("" if e.metric == metric else metric_label(e.metric), e.target or "") if x)
        text = fmt_number(e.value) + (f" ({what})" if what else "")
        if e.condition not in cols:
            notes.append(f"{e.model}{'/' + e.strategy if e.strategy else ''}, {e.condition}, "
                         f"{metric_label(e.metric)}: {text} ({e.source})")
            continue
        paper_rows.setdefault((e.model, e.strategy, e.source), {}).setdefault(e.condition, []).append(text)
    for (model, strategy, source), cells in paper_rows.items():
        label = f"paper: {model}{'/' + strategy if strategy else ''} ({source})"
        by_model.setdefault(model, []).append([label] + ["; ".join(cells.get(c, [])) for c in cols])
    return TableData(header, [r for rows in by_model.values() for r in rows]), notes


@dataclass
class Curve:
    levels: list[float]
    mean: list[float]
    std: list[float]  # NaN where one seed


def level_label(family: str) -> str:
    """What a family's level means (LEVELED), 'level' for a family this report does not know yet."""
    return LEVELED.get(family, "level")


def curves(results: Results, conditions: dict[str, ConditionInfo], runs: Sequence[str], modalities: Sequence[str],
           metric: str, inputs: dict[str, list[str] | None] | None = None) -> dict[str, dict[str, dict[str, Curve]]]:
    """{family: {modality or ALL: {run: Curve}}} for every family whose conditions carry a level (the
    LEVELED ones in that order, then any new family alphabetically: a family evaluate adds becomes a
    panel without code here), with each condition's family, modality and level from `conditions`
    (`tables.index_conditions`); modalities outside `modalities` are left out, and so is a run under
    a condition on modalities it does not take (`inputs`, see `blind`)."""
    inputs = inputs or {}
    points: dict[str, dict[str, dict[str, dict[float, Stat]]]] = {}
    for (run, cond, met), cell in results.items():
        c = conditions.get(cond)
        if met != metric or run not in runs or c is None or c.level is None or c.family == MISSING_FAMILY:
            continue
        mod = ALL if c.modality == EVERY_MODALITY else c.modality
        if mod != ALL and not all(m in modalities for m in mod.split("+")):
            continue
        if blind(c, inputs.get(run)):
            continue
        points.setdefault(c.family, {}).setdefault(mod, {}).setdefault(run, {})[c.level] = seed_stat(list(cell.values()))
    out: dict[str, dict[str, dict[str, Curve]]] = {}
    for fam in [f for f in LEVELED if f in points] + sorted(set(points) - set(LEVELED)):
        mods = [m for m in [ALL, *modalities] if m in points[fam]]
        mods += sorted(set(points[fam]) - set(mods))  # several modalities: a+b
        out[fam] = {}
        for mod in mods:
            out[fam][mod] = {}
            for run in runs:
                pts = points[fam][mod].get(run)
                if pts:
                    lv = sorted(pts)
                    out[fam][mod][run] = Curve(lv, [pts[x].mean for x in lv], [pts[x].std for x in lv])
    return out


def auilc_table(fam_curves: dict[str, dict[str, Curve]], runs: Sequence[str],
                inputs: dict[str, list[str] | None] | None = None) -> TableData:
    """AUILC (003 Eq. 19) per run and random_missing modality, over the seed means at AUILC_RATES."""
    mods = list(fam_curves)
    rows = []
    for run in runs:
        row = [run]
        for mod in mods:
            c = fam_curves[mod].get(run)
            if mod != ALL and blind(ConditionInfo("random_missing", mod, None), (inputs or {}).get(run)):
                row.append(not_an_input(run))
                continue
            if c is None:
                row.append("n/a")
                continue
            try:
                row.append(fmt_number(stats.auilc(c.levels, c.mean)))
            except stats.StatsError:
                row.append("n/a (incomplete grid)")
        rows.append(row)
    return TableData(["Run"] + [f"AUILC ({m})" for m in mods], rows)


def drops(results: Results, run: str, modalities: Sequence[str], metric: str,
          inputs: list[str] | None = None) -> dict[str, Stat]:
    """{modality: all_present − missing:<m>} paired by seed (positive = the modality helps); a modality
    the run does not take (`inputs`) is left out, not shown as a zero drop."""
    base = results.get((run, ALL_PRESENT, metric), {})
    out = {}
    for m in modalities:
        if inputs is not None and m not in inputs:
            continue
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
    """One sentence per model; where nothing is important it says what that means for `eliminate`."""
    out = []
    for model, e in sorted(importance.items()):
        if not isinstance(e, dict):
            continue
        line = f"{model}: important = {', '.join(e.get('important') or []) or 'none'}"
        line += f" (metric {e['metric']}, α = {e['alpha']}, seeds {e.get('seeds')})" if "metric" in e and "alpha" in e else ""
        if not e.get("important") and not e.get("rho"):
            line += (f"; so ρ_none = 1: {model}/eliminate never drops a modality and trains as {model}/standard "
                     "does, its numbers the same (unless strategy.eliminate.rho sets ρ)")
        out.append(line)
    return out

