"""The report's instance view: for one run and replicate (params report.instances), the test clips whose
predicted class changes when a condition removes a modality, with the steps it removed from each clip
(evaluate's masked_steps.csv, else the condition's share). The one section that lists single clips; the
replicate labels of its captions (`replicate_label`) serve the opening table too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from pipeline.report import robust as rb
from pipeline.report import tables as tb
from pipeline.report.eval_files import ReportError
from pipeline.report.params import ReportParams
from pipeline.report.render import Heading, Para, Table
from pipeline.segment.protocols import REPLICATE

if TYPE_CHECKING:  # annotations only: build imports this module
    from pipeline.report.inputs import Inputs


def replicate_label(r: int) -> str:
    """A replicate as the reader knows it: 'seed 2', or 'fold 1, seed 0' under several folds."""
    if r < REPLICATE:
        return f"seed {r}"
    fold, seed = divmod(r, REPLICATE)
    return f"fold {fold - 1}, seed {seed}"


def _masked_text(info: tb.ConditionInfo) -> str:
    """What a condition masks, as far as its columns say (where masked_steps.csv has no row)."""
    mod = "every modality" if info.modality == tb.EVERY_MODALITY else info.modality
    if info.family == tb.MISSING_FAMILY:
        return f"every step of {mod} (100 %)"
    if info.level is None:
        return f"{info.family} on {mod}"
    if info.family == "availability":
        return f"{1 - info.level:.0%} of {mod} steps (the condition's share)"
    if info.family in ("random_missing", "frame_zero", "frame_repeat"):
        return f"{info.level:.0%} of {mod} steps (the condition's share)"
    if info.family == "clip_zero":
        return f"all of {mod} in {info.level:.0%} of clips"
    return f"{info.family} on {mod} at {info.level:g}"


def instance_choice(inp: Inputs, params: ReportParams, runs: list[str], mods: list[str]) -> tuple[str, int, list[str]]:
    """(run, replicate, conditions) of the instance view from params report.instances (empty: the first
    run, its first replicate, each modality it takes missing); a ReportError naming the key when one
    names something that was not evaluated."""
    ip = params.instances
    run = ip.run or runs[0]
    if run not in runs:
        raise ReportError(f"params.yaml: report.instances.run {run!r} is not an evaluated run (evaluated: {', '.join(runs)})")
    reps = tb.seeds(inp.results, run)
    rep = reps[0] if ip.seed is None else ip.seed
    if rep not in reps:
        raise ReportError(f"params.yaml: report.instances.seed {rep} is not a replicate of {run} (it has {reps})")
    conds = list(ip.conditions) or [f"{tb.MISSING}{m}" for m in mods if f"{tb.MISSING}{m}" in inp.conditions
                                    and not rb.blind(inp.conditions[f"{tb.MISSING}{m}"], inp.inputs.get(run))]
    unknown = [c for c in conds if c not in inp.conditions]
    if unknown:
        raise ReportError(f"params.yaml: report.instances.conditions {unknown} were not evaluated "
                          f"(e.g. {', '.join(sorted(inp.conditions)[:4])})")
    return run, rep, conds


def instance_blocks(inp: Inputs, limit: int, run: str, rep: int, conds: list[str]) -> list:
    """The test clips whose prediction changes when a modality goes missing, for one run and replicate
    (keyed by clip_id and, under the windows layout, origin: a clip id repeats once per window)."""
    preds = inp.predictions.get(run)
    out: list = [Heading("Instances", 2, "instances")]
    if preds is None:
        return out + [Para(f"{run} has no classification predictions (data/evaluate/{run}/predictions.csv absent or "
                           "a regression run): no instance view.")]
    key = ["clip_id", "origin"] if "origin" in preds.columns else ["clip_id"]
    mine = preds.filter(pl.col("seed") == rep)
    base = mine.filter(pl.col("condition") == tb.ALL_PRESENT).select(*key, "true", pl.col("pred").alias("with"))
    if base.height == 0:
        return out + [Para(f"{run}, {replicate_label(rep)}: no predictions with all modalities present: no instance view.")]
    steps = _masked_by_clip(inp.masked.get(run), rep)
    out.append(Para(
        f"{run}, {replicate_label(rep)} (params report.instances): test clips whose predicted class changes "
        "from all modalities present to the condition. 'masked': the steps of each modality the condition "
        "removed from that clip (present in the data, absent under the condition; the clip's own steps at "
        f"{inp.segments.rate_hz:g} Hz, evaluate's masked_steps.csv), else the condition's share."))
    for cond in conds:
        info = inp.conditions[cond]
        other = mine.filter(pl.col("condition") == cond).select(*key, pl.col("pred").alias("without"))
        if other.height == 0:
            out.append(Para(f"{tb.condition_label(cond)}: no predictions of {run} under this condition."))
            continue
        header = ["clip"] + (["origin"] if "origin" in key else []) + [
            "true", "predicted, all present", f"predicted, {tb.condition_label(cond)}", "masked"]
        changed = base.join(other, on=key, how="inner").filter(pl.col("with") != pl.col("without")).sort(key)
        fixed = changed.filter(pl.col("without") == pl.col("true")).height
        broke = changed.filter(pl.col("with") == pl.col("true")).height
        rows = [[*(str(r[k]) for k in key), r["true"], r["with"], r["without"],
                 steps.get((cond, str(r["clip_id"]))) or _masked_text(info)]
                for r in changed.head(limit).iter_rows(named=True)]
        unit = "windows" if "origin" in key else "clips"
        caption = (f"{tb.condition_label(cond)}: {changed.height} of {base.height} {unit} change prediction "
                   f"({broke} right → wrong, {fixed} wrong → right)"
                   + (f"; first {limit} shown" if changed.height > limit else ""))
        out.append(Table(tb.TableData(header, rows), caption, numeric=False) if rows else Para(caption + "."))
    return out


def _masked_by_clip(masked: pl.DataFrame | None, rep: int) -> dict[tuple[str, str], str]:
    """{(condition, clip_id): 'face: steps 0–12, 20–31 (25 of 40)'} of the replicate's fold (conditions do
    not depend on the seed); {} without masked_steps.csv."""
    if masked is None:
        return {}
    fold = rep // REPLICATE - 1 if rep >= REPLICATE else 0
    out: dict[tuple[str, str], list[str]] = {}
    for r in masked.filter(pl.col("fold") == fold).iter_rows(named=True):
        text = (f"steps {r['steps'].replace('-', '–').replace(',', ', ')} ({r['n_masked']} of {r['n_steps']})"
                if r["n_masked"] else f"none (absent in all {r['n_steps']} steps already)")
        out.setdefault((r["condition"], r["clip_id"]), []).append(f"{r['modality']}: {text}")
    return {k: "; ".join(v) for k, v in out.items()}
