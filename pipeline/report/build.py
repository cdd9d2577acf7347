"""Assemble the report: read the inputs, compose one document, write it as HTML and Markdown.

`build_report(root, out_dir, params)` writes

    <out_dir>/index.html          self-contained page (figures embedded)
    <out_dir>/report.md           the same content in Markdown
    <out_dir>/figures/*.png       the figures the Markdown refers to

Everything is composed in memory first, written into a staging folder beside `out_dir` with the store's
atomic writes, and only then swapped into place (`pipeline.store.publish_dir`): a failed run leaves the
previous report (or none), never a half one. What the report was built from: `provenance`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import yaml
from sklearn.metrics import confusion_matrix

from pipeline import stats

from pipeline.config import EVALUATE_DIR, ReportParams
from pipeline.report import figures as figs
from pipeline.report import robust as rb
from pipeline.report import scorecard as sc
from pipeline.report import tables as tb
from pipeline.report.inputs import (
    RESULTS,
    SUMMARY,
    CorpusSummary,
    History,
    ReportError,
    SegmentsMeta,
    Trace,
    read_corpus,
    read_headlines,
    read_history,
    read_importance,
    read_masked_steps,
    read_predictions,
    read_results,
    read_results_table,
    read_run_inputs,
    read_segments_meta,
    read_summary,
    read_trace,
    read_train_test,
)
from pipeline.report.provenance import Provenance, provenance
from pipeline.protocols import REPLICATE
from pipeline.report.render import (Callout, Code, Details, Document, Figure, Heading, Para, Table, Toc, to_html,
                                    to_markdown)
from pipeline.robustness import RobustnessError
from pipeline.store import publish_dir

INDEX = "index.html"
MARKDOWN = "report.md"
FIGURES = "figures"


@dataclass
class Inputs:
    results: dict[tb.Key, dict[int, float]]
    summary: dict[tb.Key, tb.Stat]
    conditions: dict[str, tb.ConditionInfo]  # family, modality, level of every condition (tidy columns)
    std_convention: str
    histories: dict[str, dict[int, History]]
    segments: SegmentsMeta
    corpus: CorpusSummary
    importance: dict
    trace: Trace | None  # regression only: one test clip's curves
    inputs: dict[str, list[str] | None] = field(default_factory=dict)  # run -> the modalities it takes
    predictions: dict[str, pl.DataFrame | None] = field(default_factory=dict)  # run -> classification predictions
    headlines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # metrics/*.json
    table: pl.DataFrame | None = None  # every family's results.csv as one table (the scorecard's input)
    train_test: pl.DataFrame | None = None  # every family's train_test.csv
    masked: dict[str, pl.DataFrame | None] = field(default_factory=dict)  # run -> masked_steps.csv


def load_inputs(root: Path, modality_order: list[str] = ()) -> Inputs:
    """Read and cross-check every input. Modalities follow `modality_order` (train.modalities; segments.json
    is written with sorted keys), then any others alphabetically."""
    # upstream first: the input a fresh checkout lacks first is the one named
    corpus = read_corpus(root)
    segments = read_segments_meta(root)
    listed = [m for m in modality_order if m in segments.modalities]
    order = listed + sorted(set(segments.modalities) - set(listed))
    segments.modalities = {m: segments.modalities[m] for m in order}
    try:
        result_rows, summary_rows = read_results(root), read_summary(root)
        results = tb.index_results(result_rows)
        summary = tb.index_summary(summary_rows)
        conditions = tb.index_conditions([*result_rows, *summary_rows])
        std_convention = tb.check_summary(summary, results)
    except ReportError as e:
        if str(e).startswith((RESULTS, SUMMARY)):  # the pure checks name the file briefly
            raise ReportError(f"{root / EVALUATE_DIR}/{e}") from None
        raise
    runs = tb.models(results)
    histories = {m: {s: read_history(root, m, s) for s in tb.seeds(results, m)} for m in runs}
    trace = None
    if rb.main_metric(results) == "ccc_mean":
        trace = read_trace(root, runs[0], tb.seeds(results, runs[0])[0], tb.ALL_PRESENT)
    return Inputs(results, summary, conditions, std_convention, histories, segments, corpus, read_importance(root),
                  trace, inputs={r: read_run_inputs(root, r, tb.seeds(results, r)[0]) for r in runs},
                  predictions={r: read_predictions(root, r) for r in runs}, headlines=read_headlines(root),
                  table=read_results_table(root), train_test=read_train_test(root),
                  masked={r: read_masked_steps(root, r) for r in runs})


def _random_backbones(seg: SegmentsMeta) -> list[str]:
    return [f"{m} ({info.feature}): {info.weights_statement}" for m, info in seg.modalities.items() if not info.pretrained]


def replicate_label(r: int) -> str:
    """A replicate as the reader knows it: 'seed 2', or 'fold 1, seed 0' under several folds."""
    if r < REPLICATE:
        return f"seed {r}"
    fold, seed = divmod(r, REPLICATE)
    return f"fold {fold - 1}, seed {seed}"


def _replicates_text(inp: Inputs, runs: list[str]) -> str:
    per = {tuple(tb.seeds(inp.results, r)) for r in runs}
    texts = sorted({f"{len(reps)} ({_replicate_set(list(reps))})" for reps in per})
    return " / ".join(texts) + " per run" + ("" if len(per) == 1 else " (runs differ)")


def _replicate_set(reps: list[int]) -> str:
    """'seed 0; seed 1', or '2 folds × seeds 0, 1' when the replicates are every (fold, seed) pair."""
    if reps and all(r >= REPLICATE for r in reps):
        pairs = {divmod(r, REPLICATE) for r in reps}
        folds, seeds = sorted({f - 1 for f, _ in pairs}), sorted({s for _, s in pairs})
        if len(pairs) == len(folds) * len(seeds) and len(pairs) > 1:
            return f"folds {', '.join(map(str, folds))} × seeds {', '.join(map(str, seeds))}"
    return "; ".join(replicate_label(x) for x in reps)


def _inputs_text(run_inputs: list[str] | None) -> str:
    return "inputs unknown (no model.pt)" if run_inputs is None else ", ".join(run_inputs)


def _opening(inp: Inputs, runs: list[str], main: str) -> str:
    text = (f"{len(runs)} run(s) evaluated on the test partition of '{inp.corpus.name}' under "
            f"{len(inp.conditions)} missing-modality conditions; headline metric "
            f"{tb.metric_label(main)} ({main}), mean ± sd over replicates.")
    if _random_backbones(inp.segments):
        text += " Some backbones ran on RANDOM weights (see the warning below): these results test the pipeline only."
    return text


def _glance(inp: Inputs, runs: list[str], main: str) -> tb.TableData:
    """What was run, in one small table: the first thing on the page."""
    c, extra = inp.corpus, inp.segments.extra
    models: dict[str, list[str] | None] = {}
    for r in runs:
        models.setdefault(rb.split_run(r)[0], inp.inputs.get(r))
    strategies = sorted({rb.split_run(r)[1] for r in runs if rb.split_run(r)[1]})
    families = sorted({i.family for i in inp.conditions.values()})
    protocol = str(extra.get("protocol", "corpus"))
    folds = extra.get("folds")
    rows = [
        ["corpus", f"{c.name}: {c.n_clips} clips, {c.n_speakers} speakers; classes {', '.join(inp.segments.classes)}"],
        ["protocol", protocol + (f", {folds} fold(s)" if folds else "")],
        ["models (inputs)", "; ".join(f"{m} ({_inputs_text(i)})" for m, i in models.items())],
        ["strategies", ", ".join(strategies) or "–"],
        ["replicates", _replicates_text(inp, runs)],
        ["conditions", f"{len(inp.conditions)} in {len(families)} families: {', '.join(families)}"],
    ]
    return tb.TableData(["", ""], rows)


def _weights_callout(inp: Inputs) -> Callout:
    random = _random_backbones(inp.segments)
    if random:
        return Callout(
            "Warning: backbones with RANDOM weights",
            "These feature extractors ran on random, untrained weights. Their features carry no learned "
            "knowledge, so every number in this report only tests that the pipeline runs end to end; it "
            "says nothing about how well the method recognises emotions. Point the stage at real "
            "pretrained weights (params.yaml) before drawing any conclusion.",
            random,
        )
    return Callout(
        "All backbones pretrained",
        "Every feature extractor ran on pretrained weights:",
        [f"{m} ({i.feature}): {i.weights_statement}" for m, i in inp.segments.modalities.items()],
        alarm=False,
    )


def _paper_blocks(inp: Inputs, params: ReportParams, runs: list[str], mods: list[str], main: str) -> list:
    label = tb.metric_label(main)
    table, notes = rb.paper_table(inp.summary, inp.results, inp.conditions, runs, rb.main_conditions(inp.results, mods),
                                  main, inp.inputs, params.published)
    out: list = [Heading("Main table", 2, "main-table"), Table(
        table, f"{label} ({main}) on the test partition: mean ± {inp.std_convention} over replicates. AUILC: area "
               "under the curve over random missing rates 0.0–0.9 of all modalities (003 Eq. 19), per replicate."
               + (" 'paper:' rows: published numbers (params report.published), other corpus and features: for "
                  "orientation, not comparison." if params.published else ""))]
    out.append(Para(
        f"{rb.BETTER} = significantly better than the model's '{rb.STANDARD}' run (one-sided paired t-test, Holm "
        f"across the model's runs); {rb.SAME} = not significantly different from the run's own all-present score "
        f"(two-sided paired t-test); α = {stats.ALPHA}, 000 §6 Table 2. No marker with fewer than two shared "
        "replicates; with few replicates a missing marker is not evidence of no difference."
    ))
    if notes:
        out.append(Para("Published numbers under conditions without a column here: " + "; ".join(notes) + "."))
    return out


def compose(inp: Inputs, params: ReportParams, prov: Provenance) -> Document:
    mods = list(inp.segments.modalities)
    runs = tb.models(inp.results)
    main = rb.main_metric(inp.results)
    instance = _instance_choice(inp, params, runs, mods)  # a bad report.instances fails before any drawing
    blocks: list = [Para(_opening(inp, runs, main)), Table(_glance(inp, runs, main), numeric=False),
                    _weights_callout(inp)]
    blocks += _paper_blocks(inp, params, runs, mods, main)
    blocks.append(Toc())
    blocks += _robustness_blocks(inp, runs, mods)
    blocks += _importance_blocks(inp, runs, mods)
    blocks += scorecard_blocks(inp, runs, main)
    blocks += _instance_blocks(inp, params.instances.limit, *instance)
    blocks += _run_blocks(inp, runs, mods)
    blocks += _provenance_blocks(inp, prov, runs)
    return Document(params.title, blocks)


def _robustness_blocks(inp: Inputs, runs: list[str], mods: list[str]) -> list:
    """One figure per condition family that has levels (a new family is a new figure), panels per
    affected modality, runs as lines; then the per-modality AUILC."""
    main = rb.main_metric(inp.results)
    label = tb.metric_label(main)
    fam_curves = rb.curves(inp.results, inp.conditions, runs, mods, main, inp.inputs)
    if not fam_curves:
        return []
    out: list = [Heading("Robustness curves", 2, "robustness-curves"), Para(
        f"One figure per condition family (pipeline/missing/): {label} against the family's level, one panel per "
        "affected modality ('all modalities' = every modality at once), one line per run in the same colour "
        f"everywhere; lines are means over replicates, bands ± one {inp.std_convention}. A run that does not "
        "take a panel's modality has no line there (the panel names it).")]
    for fam, by_mod in fam_curves.items():
        blind = _blind_by_modality(inp, runs, fam, list(by_mod))
        out.append(Figure(f"curves_{fam}.png",
                          figs.robustness_curves(fam, by_mod, runs, main, rb.level_label(fam), blind),
                          f"{fam}: {label} against {rb.level_label(fam)}."))
    if "random_missing" in fam_curves:
        grid = ", ".join(f"{r:.1f}" for r in stats.AUILC_RATES)
        out.append(Table(
            rb.auilc_table(fam_curves["random_missing"], runs, inp.inputs),
            f"AUILC (003 Eq. 19): trapezoidal area under the {label} curve over the replicate means at missing "
            f"rates {grid}, per affected modality; 'n/a (incomplete grid)' where a run was not evaluated at "
            "exactly these rates.",
        ))
    return out


def _blind_by_modality(inp: Inputs, runs: list[str], family: str, panels: list[str]) -> dict[str, list[str]]:
    """{panel modality: [runs that do not take it]} from the runs' inputs (model.pt), so a panel names
    the runs it leaves out whether or not evaluate scored them there."""
    out: dict[str, list[str]] = {}
    for mod in panels:
        if mod == rb.ALL:
            continue
        unseen = [r for r in runs if rb.blind(tb.ConditionInfo(family, mod, None), inp.inputs.get(r))]
        if unseen:
            out[mod] = unseen
    return out


def _importance_blocks(inp: Inputs, runs: list[str], mods: list[str]) -> list:
    main = rb.main_metric(inp.results)
    label = tb.metric_label(main)
    drops = {r: rb.drops(inp.results, r, mods, main, inp.inputs.get(r)) for r in runs}
    drops = {r: d for r, d in drops.items() if d}
    if not (drops or inp.importance):
        return []
    out: list = [Heading("Modality importance", 2, "modality-importance")]
    if drops:
        out.append(Figure("modality_importance.png", figs.importance_bars(drops, mods, main),
                          f"Drop in {label} when one modality is missing (all present − missing, paired by replicate): "
                          "larger = the run relies more on that modality; no bar where the modality is not an input."))
    if inp.importance:
        out.append(Para(
            "The `importance` stage's search for the `eliminate` strategy (000 §4): a modality is important "
            "when the standard model's score drops significantly without it (one-sided paired t-test, Holm "
            "across modalities); ρ is the probability of eliminating it in a training batch. "
            + " ".join(s + "." for s in rb.importance_summary(inp.importance))
        ))
        out.append(Table(rb.importance_table(inp.importance), "Importance search (data/importance/<model>.json)"))
    return out


# how a family gets several training rates (the training-rate helper's grid.rates, docs/training.md)
RATES_HINT = ("list several training missing rates for a strategy in params.yaml `grid.rates` (e.g. "
              "`clip_zero: [0.1, 0.3, 0.5]`) and rerun `dvc repro`")


def scorecard_blocks(inp: Inputs, runs: list[str], main: str) -> list:
    """SCORECARD: the robustness figures of every run (report.scorecard: RR and ER per curve family,
    mean ± sd over replicates, † vs the late-fusion reference, Holm) and the train-rate × test-rate
    heat map where a family was trained at several rates (else one line saying how to get that)."""
    try:
        card = sc.scorecard(inp.table, main, inp.inputs, rb.blind) if inp.table is not None else None
    except RobustnessError as e:
        raise ReportError(f"{EVALUATE_DIR}/<model>/<strategy>/{RESULTS}: no scorecard ({e}); rerun the `evaluate` stages") from None
    tt = inp.train_test if inp.train_test is not None else pl.DataFrame()
    if (card is None or card.card.height == 0) and tt.height == 0:
        return []
    label = tb.metric_label(main)
    out: list = [Heading("Scorecard", 2, "scorecard")]
    if card is not None and card.card.height:
        refs = sorted({r for r in card.references.values() if r})
        rr, er = sc.table(card, runs), sc.table(card, runs, "effective_robustness")
        mark = (f" {sc.SIGNIFICANT} = significantly higher than the reference's ({', '.join(refs)}): one-sided paired "
                f"t-test over shared replicates, Holm across the runs, α = {stats.ALPHA} (000 §6.1)." if refs else "")
        out.append(Para(
            f"Robustness of {label} ({main}) against the missing rate, per curve family (docs/robustness.md), for the "
            "all-modality curve where a family has one, else the mean over its per-modality curves the run takes; "
            "mean ± sd over replicates."))
        out.append(Table(rr, "RR = relative robustness: the mean score over the family's missing rates (normalised "
                             "trapezoid area, MultiBench §3)." + mark))
        if er is not None:
            out.append(Table(er, "ER = effective robustness: the mean gain over the late-fusion reference shifted to "
                                 "the same clean score (Taori et al. 2020), where the reference was evaluated on the "
                                 "same curve; positive = degrades more slowly than late fusion." + mark))
        else:
            out.append(Para("No late-fusion reference (late_fusion_lstm) was evaluated: no effective robustness and "
                            "no test."))
    several = sc.several_rates(tt)
    if several.height:
        metric = str(several["metric"][0])
        out.append(Figure("train_test.png", figs.train_test_heatmap(sc.heat_panels(several), metric),
                          f"Train rate × test rate (train_test.csv): {tb.metric_label(metric)} ({metric}) of runs trained "
                          "at each missing rate (rows) and tested at each level of the matching condition family "
                          "(columns; 0 = all present), mean over replicates."))
    else:
        out.append(Para("Train rate × test rate: no family was trained at more than one missing rate, so there is "
                        f"no heat map; to get one, {RATES_HINT}."))
    return out


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


def _instance_choice(inp: Inputs, params: ReportParams, runs: list[str], mods: list[str]) -> tuple[str, int, list[str]]:
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


def _instance_blocks(inp: Inputs, limit: int, run: str, rep: int, conds: list[str]) -> list:
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


def _run_tables(inp: Inputs, run: str, mods: list[str]) -> list:
    conds, metrics = tb.cells_of(inp.results, run)
    conds, metrics = tb.condition_order(conds, mods), tb.metric_order(metrics)
    inputs = inp.inputs.get(run)
    na = {c for c in conds if rb.blind(inp.conditions.get(c), inputs)}
    scores = tb.results_table(inp.summary, run, conds, metrics)
    for row, c in zip(scores.rows, conds):
        if c in na:
            row[1:-1] = [rb.not_an_input(run)] * (len(row) - 2)
    out = [Table(scores, f"{run}: every condition (mean ± std over replicates)")]
    if tb.ALL_PRESENT in conds and len(conds) > 1:
        others = [c for c in conds if c != tb.ALL_PRESENT]
        change = tb.change_table(inp.results, run, conds, metrics)
        for row, c in zip(change.rows, others):
            if c in na:
                row[1:] = [rb.not_an_input(run)] * (len(row) - 1)
        out.append(Table(change, f"{run}: change against all modalities present, paired by replicate "
                                 "(condition − all present; negative = worse)"))
    return out


def _confusions(inp: Inputs, run: str, mods: list[str]) -> dict[str, np.ndarray]:
    preds = inp.predictions.get(run)
    if preds is None:
        return {}
    classes = inp.segments.classes
    inputs = inp.inputs.get(run)
    conds = [tb.ALL_PRESENT] + [f"{tb.MISSING}{m}" for m in mods]
    out = {}
    for c in conds:
        if c not in inp.conditions or rb.blind(inp.conditions[c], inputs):
            continue
        rows = preds.filter(pl.col("condition") == c)
        if rows.height:
            out[c] = confusion_matrix(rows["true"].to_list(), rows["pred"].to_list(), labels=classes)
    return out


def _run_blocks(inp: Inputs, runs: list[str], mods: list[str]) -> list:
    """Per-run detail, each run in its own closed <details>: every condition, training curves,
    confusion matrices (all present and each modality missing)."""
    out: list = [Heading("Per-run detail", 2, "per-run-detail"), Para(
        "Every condition of every run, its training curves and its confusion matrices; click a run to open it.")]
    for run in runs:
        blocks = _run_tables(inp, run, mods)
        safe = run.replace("/", "-")
        blocks.append(Figure(f"training_{safe}.png", figs.training_curves(run, inp.histories[run]),
                             f"{run}: training, one line per replicate (dot: the epoch kept)."))
        cms = _confusions(inp, run, mods)
        if cms:
            blocks.append(Figure(f"confusion_{safe}.png", figs.confusion_matrices(run, cms, inp.segments.classes),
                                 f"{run}: confusion matrices on the test partition, counts summed over replicates "
                                 "(rows: true class; shade: share of the row)."))
        if inp.trace is not None and inp.trace.model == run:
            t = inp.trace
            blocks.append(Figure(
                "regression_trace.png", figs.regression_trace(t),
                f"Predicted (dashed) and true (solid) {', '.join(t.targets)} over time for test clip {t.clip_id}: "
                f"run {t.model}, seed {t.seed}, all modalities present."))
        inputs = inp.inputs.get(run)
        out.append(Details(f"{run} — inputs: {_inputs_text(inputs)}; {len(tb.seeds(inp.results, run))} replicate(s)",
                           blocks))
    return out


def _provenance_blocks(inp: Inputs, prov: Provenance, runs: list[str]) -> list:
    c = inp.corpus
    rows = [
        ["name", c.name],
        ["clips", str(c.n_clips)],
        ["speakers", str(c.n_speakers)],
        ["classes (clips)", ", ".join(f"{k} ({n})" for k, n in c.class_counts.items())],
    ]
    if c.partition_counts:
        rows.append([f"partitions (from {c.partition_source})", ", ".join(f"{p} {n}" for p, n in c.partition_counts.items())])
    if inp.segments.classes != c.classes:
        rows.append(["classes modelled (segments)", ", ".join(inp.segments.classes)])
    seeds = "; ".join(f"{m}: {', '.join(map(str, tb.seeds(inp.results, m)))}" for m in runs)
    out: list = [Heading("Corpus and provenance", 2, "corpus-and-provenance"), Table(tb.TableData(["", ""], rows), "Corpus", numeric=False)]
    out.append(Table(tb.TableData(["", ""], [
        ["corpus", f"{c.name} ({c.n_clips} clips, {c.n_speakers} speakers)"],
        ["params.yaml sha256", prov.params_sha256],
        *[[f"params section '{n}' hash", h] for n, h in prov.section_hashes.items()],
        ["seeds", seeds],
        ["code (sha256 of pipeline/ and stages/)", prov.code_version],
        *([["generated", prov.generated_utc]] if prov.generated_utc else []),
    ]), "Provenance", numeric=False))
    out.append(Table(
        tb.TableData(
            ["modality", "feature table", "backbone", "dim", "rate (Hz)", "pretrained", "weights"],
            [[m, i.feature, i.backbone, str(i.dim), "irregular" if i.rate_hz is None else f"{i.rate_hz:g}",
              "yes" if i.pretrained else "NO (random)", i.weights_statement]
             for m, i in inp.segments.modalities.items()],
        ),
        f"Feature tables, aligned by `segment` to a common {inp.segments.rate_hz:g} Hz grid",
        numeric=False,
    ))
    params_blocks: list = []
    if c.params:
        params_blocks.append(Code(yaml.safe_dump(c.params, sort_keys=True), "Corpus generator parameters:"))
    for name, values in prov.sections.items():
        params_blocks.append(Code(yaml.safe_dump({name: values}, sort_keys=False), f"params.yaml section '{name}' (with defaults):"))
    out.append(Details("Parameters (params.yaml sections with defaults)", params_blocks))
    return out


def build_report(root: Path, out_dir: Path, params: ReportParams, log: Callable[[str], None] | None = None) -> Path:
    """Build the report from the inputs under `root`; return the path of index.html.

    `out_dir` may be relative (to `root`). Raises ReportError naming the first missing or bad input.
    `log` gets one line per step (the stage prints them).
    """
    say = log or (lambda _line: None)
    root = Path(root)
    out_dir = out_dir if Path(out_dir).is_absolute() else root / out_dir
    prov = provenance(root)
    inputs = load_inputs(root, prov.sections["train"]["modalities"])
    runs = tb.models(inputs.results)
    say(f"report: read {len(runs)} run(s), {len(inputs.conditions)} conditions, "
        f"{sum(len(tb.seeds(inputs.results, r)) for r in runs)} replicate results")
    doc = compose(inputs, params, prov)
    files: dict[str, bytes | str] = {f"{FIGURES}/{f.name}": f.png for f in doc.figures}
    say(f"report: drew {len(doc.figures)} figure(s)")
    files[MARKDOWN] = to_markdown(doc, FIGURES)
    files[INDEX] = to_html(doc)
    publish_dir(out_dir, files)
    return out_dir / INDEX
