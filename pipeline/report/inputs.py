"""Everything the report draws, read and cross-checked once (`load_inputs`): the evaluate stages' tables
(eval_files.py), the runs' histories and inputs, the segments' and the corpus's summaries (run_files.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline.core.paths import EVALUATE_DIR
from pipeline.report import robust as rb
from pipeline.report import tables as tb
from pipeline.report.eval_files import (
    RESULTS,
    SUMMARY,
    ReportError,
    Trace,
    read_headlines,
    read_masked_steps,
    read_predictions,
    read_results,
    read_results_table,
    read_summary,
    read_trace,
    read_train_test,
)
from pipeline.report.run_files import (
    CorpusSummary,
    History,
    SegmentsMeta,
    read_corpus,
    read_history,
    read_importance,
    read_run_inputs,
    read_segments_meta,
)

__all__ = ["Inputs", "load_inputs"]


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
