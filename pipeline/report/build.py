"""Assemble the report: read the inputs, compose one document, write it as HTML and Markdown.

`build_report(root, out_dir, params)` writes

    <out_dir>/index.html          self-contained page (figures embedded)
    <out_dir>/report.md           the same content in Markdown
    <out_dir>/figures/*.png       the figures the Markdown refers to

Everything is composed in memory first, written into a staging folder beside `out_dir` with the store's
atomic writes, and only then swapped into place (`pipeline.core.store.publish_dir`): a failed run leaves the
previous report (or none), never a half one. What the report was built from: `provenance`.

The opening blocks, main table, robustness curves, modality importance and scorecard are composed here;
the later sections have their own modules: `instances` (the clips whose prediction changes),
`run_details` (per run) and `provenance_section` (corpus and provenance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import polars as pl

from pipeline.core.paths import EVALUATE_DIR
from pipeline.core.store import publish_dir
from pipeline.evaluate import stats
from pipeline.evaluate.robustness import RobustnessError
from pipeline.report import figures as figs
from pipeline.report import robust as rb
from pipeline.report import scorecard as sc
from pipeline.report import tables as tb
from pipeline.report.eval_files import (
    RESULTS,
    ReportError,
)
from pipeline.report.inputs import Inputs, load_inputs
from pipeline.report.instances import instance_blocks, instance_choice, replicate_label
from pipeline.report.params import ReportParams
from pipeline.report.provenance import Provenance, provenance
from pipeline.report.provenance_section import provenance_blocks
from pipeline.report.render import (
    Callout,
    Document,
    Figure,
    Heading,
    Para,
    Table,
    Toc,
    to_html,
    to_markdown,
)
from pipeline.report.run_details import inputs_text, run_blocks
from pipeline.report.run_files import (
    SegmentsMeta,
)
from pipeline.segment.protocols import REPLICATE

INDEX = "index.html"
MARKDOWN = "report.md"
FIGURES = "figures"


def _random_backbones(seg: SegmentsMeta) -> list[str]:
    return [f"{m} ({info.feature}): {info.weights_statement}" for m, info in seg.modalities.items() if not info.pretrained]


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
        ["models (inputs)", "; ".join(f"{m} ({inputs_text(i)})" for m, i in models.items())],
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
    instance = instance_choice(inp, params, runs, mods)  # a bad report.instances fails before any drawing
    # the first screen at 1280 × 900: the compact summary and warning, then the main table with every row
    blocks: list = [Para(_opening(inp, runs, main)), Table(_glance(inp, runs, main), numeric=False, compact=True),
                    _weights_callout(inp)]
    blocks += _paper_blocks(inp, params, runs, mods, main)
    blocks.append(Toc())
    blocks += _robustness_blocks(inp, runs, mods)
    blocks += _importance_blocks(inp, runs, mods)
    blocks += scorecard_blocks(inp, runs, main)
    blocks += instance_blocks(inp, params.instances.limit, *instance)
    blocks += run_blocks(inp, runs, mods)
    blocks += provenance_blocks(inp, prov, runs)
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
        diagonal = sc.one_to_one(several)
        if diagonal is not None:
            out.append(Table(diagonal, f"One-to-one training (003 §6): each model trained at one missing rate and "
                                       f"tested at the same rate (the heat map's diagonal), {tb.metric_label(metric)}, "
                                       "mean over replicates; AUILC (003 Eq. 19) where the rates are exactly 0.0 … 0.9."))
    else:
        out.append(Para("Train rate × test rate: no family was trained at more than one missing rate, so there is "
                        f"no heat map; to get one, {RATES_HINT}."))
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
