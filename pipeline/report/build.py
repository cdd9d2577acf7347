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

from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline import stats

from pipeline.config import EVALUATE_DIR, ReportParams
from pipeline.report import figures as figs
from pipeline.report import robust as rb
from pipeline.report import tables as tb
from pipeline.report.inputs import (
    RESULTS,
    SUMMARY,
    CorpusSummary,
    History,
    ReportError,
    SegmentsMeta,
    read_corpus,
    Trace,
    read_history,
    read_importance,
    read_results,
    read_trace,
    read_segments_meta,
    read_summary,
)
from pipeline.report.provenance import Provenance, provenance
from pipeline.report.render import Callout, Code, Document, Figure, Heading, Para, Table, to_html, to_markdown
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
    histories = {m: {s: read_history(root, m, s) for s in tb.seeds(results, m)} for m in tb.models(results)}
    trace = None
    if rb.main_metric(results) == "ccc_mean":
        first = tb.models(results)[0]
        trace = read_trace(root, first, tb.seeds(results, first)[0], tb.ALL_PRESENT)
    return Inputs(results, summary, conditions, std_convention, histories, segments, corpus, read_importance(root), trace)


def _random_backbones(seg: SegmentsMeta) -> list[str]:
    return [f"{m} ({info.feature}): {info.weights_statement}" for m, info in seg.modalities.items() if not info.pretrained]


def _summary_text(inp: Inputs, conditions: dict[str, list[str]]) -> str:
    c = inp.corpus
    mods = list(inp.segments.modalities)
    models = tb.models(inp.results)
    n_seeds = sorted({len(tb.seeds(inp.results, m)) for m in models})
    text = (
        f"This report evaluates {', '.join(models)} on the '{c.name}' corpus ({c.n_clips} clips from "
        f"{c.n_speakers} speakers; classes: {', '.join(inp.segments.classes)}) with the modalities "
        f"{', '.join(mods)}, over {'/'.join(map(str, n_seeds))} training seed(s) per model, and measures "
        "how each model holds up when one modality is missing at test time."
    )
    main = rb.main_metric(inp.results)
    label = tb.metric_label(main)
    for m in models:
        full = inp.summary.get((m, tb.ALL_PRESENT, main))
        if full is None:
            continue
        text += f" With all modalities present, {m} reaches {label} {tb.fmt_stat(full)}."
        changes = {cond: tb.paired_change(inp.results, m, cond, main) for cond in conditions[m] if cond != tb.ALL_PRESENT}
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes:
            worst = min(changes, key=lambda k: changes[k].mean)
            best = max(changes, key=lambda k: changes[k].mean)
            text += f" Its {label} changes most with {tb.condition_label(worst)} ({tb.fmt_stat(changes[worst], signed=True)})"
            text += (f" and least with {tb.condition_label(best)} ({tb.fmt_stat(changes[best], signed=True)})."
                     if best != worst else ".")
    if _random_backbones(inp.segments):
        text += " Some backbones ran on RANDOM weights (see the warning below): these results test the pipeline only."
    return text


def compose(inp: Inputs, params: ReportParams, prov: Provenance) -> Document:
    mods = list(inp.segments.modalities)
    models = tb.models(inp.results)
    conditions, metrics = {}, {}
    for m in models:
        cs, ms = tb.cells_of(inp.results, m)
        conditions[m], metrics[m] = tb.condition_order(cs, mods), tb.metric_order(ms)
    blocks: list = [Para(_summary_text(inp, conditions))]

    random = _random_backbones(inp.segments)
    if random:
        blocks.append(Callout(
            "Warning: backbones with RANDOM weights",
            "These feature extractors ran on random, untrained weights. Their features carry no learned "
            "knowledge, so every number in this report only tests that the pipeline runs end to end; it "
            "says nothing about how well the method recognises emotions. Point the stage at real "
            "pretrained weights (params.yaml) before drawing any conclusion.",
            random,
        ))
    else:
        blocks.append(Callout(
            "All backbones pretrained",
            "Every feature extractor ran on pretrained weights:",
            [f"{m} ({i.feature}): {i.weights_statement}" for m, i in inp.segments.modalities.items()],
            alarm=False,
        ))

    c = inp.corpus
    blocks.append(Heading("Corpus"))
    rows = [
        ["name", c.name],
        ["clips", str(c.n_clips)],
        ["speakers", str(c.n_speakers)],
        ["classes (clips)", ", ".join(f"{k} ({n})" for k, n in c.class_counts.items())],
    ]
    if c.partition_counts:
        rows.append([f"partitions (from {c.partition_source})",
                     ", ".join(f"{p} {n}" for p, n in c.partition_counts.items())])
    if inp.segments.classes != c.classes:
        rows.append(["classes modelled (segments)", ", ".join(inp.segments.classes)])
    blocks.append(Table(tb.TableData(["", ""], rows), numeric=False))

    blocks.append(Heading("Results"))
    blocks.append(Para(
        "Test-partition scores per condition. 'all modalities present' uses every modality; '<m> missing' "
        "removes modality <m> at test time. Cells are mean ± "
        f"{inp.std_convention} over training seeds. "
        + " ".join(f"{lab} = {desc}." for k, (lab, desc) in tb.METRICS.items() if any(x[2] == k for x in inp.summary))
    ))
    for m in models:
        blocks.append(Heading(f"Model: {m}", 3))
        blocks.append(Table(tb.results_table(inp.summary, m, conditions[m], metrics[m]),
                            f"{m}: scores per condition (mean ± std over seeds)"))
        if tb.ALL_PRESENT in conditions[m]:
            if len(conditions[m]) > 1:
                blocks.append(Table(
                    tb.change_table(inp.results, m, conditions[m], metrics[m]),
                    f"{m}: change against all modalities present, paired by seed (condition − all present; "
                    "negative = worse)",
                ))
        else:
            blocks.append(Para(f"{m} was not evaluated with all modalities present, so no change is shown."))

    blocks += _robustness_blocks(inp, models, mods)

    main = rb.main_metric(inp.results)
    label = tb.metric_label(main)
    blocks.append(Heading("Figures"))
    # bars only for the whole-modality conditions: the leveled grids have their own curves above
    bar_conditions = [c for c in tb.condition_order({k[1] for k in inp.summary}, mods)
                      if inp.conditions[c].family in (tb.ALL_PRESENT, tb.MISSING_FAMILY)]
    blocks.append(Figure(
        f"{label.lower().replace(' ', '_')}_by_condition.png",
        figs.metric_by_condition(inp.summary, inp.results, models, bar_conditions, main),
        f"{label} ({main}) on the test partition with all modalities present and with whole modalities "
        "missing: bars are means over seeds, error bars one standard deviation, dots the individual seeds.",
    ))
    blocks.append(Figure(
        "training_curves.png",
        figs.training_curves(inp.histories),
        "Training: the devel-partition selection metric per epoch (one line per seed; dot: the best epoch) "
        "and the losses.",
    ))
    if inp.trace is not None:
        t = inp.trace
        blocks.append(Figure(
            "regression_trace.png",
            figs.regression_trace(t),
            f"Predicted (dashed) and true (solid) {', '.join(t.targets)} over time for test clip {t.clip_id}: "
            f"run {t.model}, seed {t.seed}, all modalities present.",
        ))

    blocks.append(Heading("Provenance"))
    seeds = "; ".join(f"{m}: {', '.join(map(str, tb.seeds(inp.results, m)))}" for m in models)
    blocks.append(Table(tb.TableData(["", ""], [
        ["corpus", f"{c.name} ({c.n_clips} clips, {c.n_speakers} speakers)"],
        ["params.yaml sha256", prov.params_sha256],
        *[[f"params section '{n}' hash", h] for n, h in prov.section_hashes.items()],
        ["seeds", seeds],
        ["code (sha256 of pipeline/ and stages/)", prov.code_version],
        *([["generated", prov.generated_utc]] if prov.generated_utc else []),
    ]), numeric=False))
    blocks.append(Table(
        tb.TableData(
            ["modality", "feature table", "backbone", "dim", "rate (Hz)", "pretrained", "weights"],
            [[m, i.feature, i.backbone, str(i.dim), "irregular" if i.rate_hz is None else f"{i.rate_hz:g}",
              "yes" if i.pretrained else "NO (random)", i.weights_statement]
             for m, i in inp.segments.modalities.items()],
        ),
        f"Feature tables, aligned by `segment` to a common {inp.segments.rate_hz:g} Hz grid",
        numeric=False,
    ))
    if c.params:
        blocks.append(Code(yaml.safe_dump(c.params, sort_keys=True), "Corpus generator parameters:"))
    for name, values in prov.sections.items():
        blocks.append(Code(yaml.safe_dump({name: values}, sort_keys=False), f"params.yaml section '{name}' (with defaults):"))
    return Document(params.title, blocks)


def _robustness_blocks(inp: Inputs, runs: list[str], mods: list[str]) -> list:
    """Main table with markers, robustness curves + AUILC, modality importance."""
    main = rb.main_metric(inp.results)
    label = tb.metric_label(main)
    out: list = [Heading("Main table")]
    conds = rb.main_conditions(inp.results, mods)
    out.append(Table(
        rb.main_table(inp.summary, inp.results, runs, conds, main),
        f"{label} ({main}) per run and condition: mean ± {inp.std_convention} over seeds",
    ))
    out.append(Para(
        f"Markers (000 §6, Table 2; α = {stats.ALPHA}): {rb.BETTER} = the run is significantly better than "
        f"its model's '{rb.STANDARD}' run under that condition (one-sided paired t-test across seeds, Holm-"
        f"corrected across the model's other runs); {rb.SAME} = the score is not significantly different "
        "from the run's own all-present score (two-sided paired t-test). No marker is given where fewer "
        "than two seeds are shared. With few seeds these tests have little power: a missing ‡ is not "
        "evidence of no difference."
    ))

    fam_curves = rb.curves(inp.results, inp.conditions, runs, mods, main)
    if fam_curves:
        out.append(Heading("Robustness curves"))
        out.append(Para(
            "Each condition family applied at several levels (pipeline/missing.py): lines are seed means, "
            f"bands ± one standard deviation over seeds. 'all modalities' = every modality affected at once."
        ))
        for fam, by_mod in fam_curves.items():
            out.append(Figure(f"curves_{fam}.png",
                              figs.robustness_curves(fam, by_mod, runs, main, rb.LEVELED[fam]),
                              f"{fam}: {label} against {rb.LEVELED[fam]}, per affected modality, one line per run."))
        if "random_missing" in fam_curves:
            grid = ", ".join(f"{r:.1f}" for r in stats.AUILC_RATES)
            out.append(Table(
                rb.auilc_table(fam_curves["random_missing"], runs),
                f"AUILC (003 Eq. 19): trapezoidal area under the {label} curve over the seed means at missing "
                f"rates {grid}; 'n/a (incomplete grid)' where a run was not evaluated at exactly these rates.",
            ))

    drops = {r: rb.drops(inp.results, r, mods, main) for r in runs}
    drops = {r: d for r, d in drops.items() if d}
    if drops or inp.importance:
        out.append(Heading("Modality importance"))
    if drops:
        out.append(Figure("modality_importance.png", figs.importance_bars(drops, mods, main),
                          f"Drop in {label} when one modality is missing (all present − missing, paired by seed): "
                          "larger = the run relies more on that modality."))
    if inp.importance:
        out.append(Para(
            "The `importance` stage's search for the `eliminate` strategy (000 §4): a modality is important "
            "when the standard model's score drops significantly without it (one-sided paired t-test, Holm "
            "across modalities); ρ is the probability of eliminating it in a training batch. "
            + " ".join(s + "." for s in rb.importance_summary(inp.importance))
        ))
        out.append(Table(rb.importance_table(inp.importance), "Importance search (data/importance/<model>.json)"))
    return out


def build_report(root: Path, out_dir: Path, params: ReportParams) -> Path:
    """Build the report from the inputs under `root`; return the path of index.html.

    `out_dir` may be relative (to `root`). Raises ReportError naming the first missing or bad input.
    """
    root = Path(root)
    out_dir = out_dir if Path(out_dir).is_absolute() else root / out_dir
    prov = provenance(root)
    inputs = load_inputs(root, prov.sections["train"]["modalities"])
    doc = compose(inputs, params, prov)
    files: dict[str, bytes | str] = {f"{FIGURES}/{f.name}": f.png for f in doc.figures}
    files[MARKDOWN] = to_markdown(doc, FIGURES)
    files[INDEX] = to_html(doc)
    publish_dir(out_dir, files)
    return out_dir / INDEX
