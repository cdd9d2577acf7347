"""The report's per-run detail: one closed <details> per run with every condition's scores, the change
against all modalities present, the training curves, the confusion matrices (all present and each
modality missing) and, for regression, one test clip's predicted and true curves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from sklearn.metrics import confusion_matrix

from pipeline.report import figures as figs
from pipeline.report import robust as rb
from pipeline.report import tables as tb
from pipeline.report.render import Details, Figure, Heading, Para, Table

if TYPE_CHECKING:  # annotations only: build imports this module
    from pipeline.report.inputs import Inputs


def inputs_text(run_inputs: list[str] | None) -> str:
    """A run's inputs as the reader sees them (each run's heading here, the opening table in `build`)."""
    return "inputs unknown (no model.pt)" if run_inputs is None else ", ".join(run_inputs)


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


def run_blocks(inp: Inputs, runs: list[str], mods: list[str]) -> list:
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
        out.append(Details(f"{run} — inputs: {inputs_text(inputs)}; {len(tb.seeds(inp.results, run))} replicate(s)",
                           blocks))
    return out
