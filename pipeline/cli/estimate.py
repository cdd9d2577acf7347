"""`mer estimate`: time, disk and peak memory of each stage before a long run (pipeline/estimate/
computes them; docs/estimate.md says how each figure is obtained). `--calibrate` measures this
machine's extraction rates into benchmarks/rates.json."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.common import console, fail
from pipeline.core.errors import PipelineError
from pipeline.core.paths import MANIFEST, PARAMS_FILE


def _duration(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 172_800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def _size(b: float | None) -> str:
    if b is None:
        return "—"
    for unit, div in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if b >= div:
            return f"{b / div:,.1f} {unit}"
    return f"{b:.0f} B"


def estimate(
    preset: str = typer.Option(None, "--preset", help="estimate this preset's experiment (applied in memory; params.yaml is not changed)"),
    demo: bool = typer.Option(False, "--demo", help="with --preset: its scaled-down demo overlay"),
    clips: int = typer.Option(None, "--clips", min=1, help="the corpus's clip count (default: the manifest's or the corpus's known size); with --calibrate: clips to measure on"),
    mean_seconds: float = typer.Option(None, "--mean-seconds", min=0.1, help="mean clip duration (with --clips, for a corpus of unknown size)"),
    params_file: Path = typer.Option(Path(PARAMS_FILE), "--params", help="the params file"),
    as_json: bool = typer.Option(False, "--json", help="print the estimate as one JSON object"),
    calibrate: bool = typer.Option(False, "--calibrate", help="measure this machine's extraction rates on a few demo clips, and the training step of each grid model (of --preset when given), into benchmarks/rates.json"),
    train_only: bool = typer.Option(False, "--train-only", help="with --calibrate: only the training steps (e.g. of a --preset's models)"),
    rates_file: Path = typer.Option(None, "--rates", help="rates table (default benchmarks/rates.json)"),
) -> None:
    """Expected wall time, disk written and peak memory of every stage `dvc repro` would run, on CPU (and
    on GPU where rates were measured there), from the corpus's size and this machine's measured rates,
    with how each figure is obtained; a line with the numbers when a stage cannot fit this machine."""
    import pipeline.estimate as est

    rates_path = rates_file or est.RATES_FILE
    try:
        if calibrate:
            entry = est.calibrate(clips or 3, params_file, rates_path, log=lambda m: console.print(escape(m), soft_wrap=True),
                                  preset=preset, extractors=not train_only)
            console.print(f"wrote the rates of CPU kind {est.cpu_kind()} to {escape(str(rates_path))} "
                          f"({len(entry.get('extract') or {})} extractors, training steps of {len(entry['train_step_s'])} models)")
            return
        params = est.load_params(params_file, preset, demo)
        # the manifest counts only when it is this corpus's (a preset names another corpus than the last run's)
        size = est.corpus_size(params, MANIFEST, clips, mean_seconds)
        rehearsal, skipped = est.read_rehearsals(preset) if preset else (None, [])
        result = est.estimate(params, size, est.load_rates(rates_path), est.this_machine("data"), rehearsal)
        result.notes[:0] = skipped
    except PipelineError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result.to_json(), sort_keys=True))
        return
    c = result.corpus
    console.print(f"[bold]{escape(c.name)}[/bold]: {c.clips:,} clips, {c.media_s / 3600:,.2f} h of media "
                  f"(mean {c.mean_s:.1f} s) — {escape(c.source)}", soft_wrap=True)
    console.print(f"this machine: {result.kind}, {result.machine.ram_bytes / 2**30:.0f} GB RAM, "
                  f"{result.machine.disk_free_bytes / 2**30:,.0f} GB free under {escape(result.machine.disk_path)}; "
                  f"rates of {result.rates_kind or 'none'}", soft_wrap=True)
    table = Table("stage", "runs", "CPU time", "GPU time", "disk written", "peak RAM")
    for s in result.stages:
        table.add_row(s.stage, str(s.processes), _duration(s.cpu_s), _duration(s.gpu_s), _size(s.disk_bytes),
                      _size(None if s.peak_mb is None else s.peak_mb * 2**20))
    t = result.totals()
    table.add_row("[bold]total[/bold]", "", _duration(t["cpu_s"]), _duration(t["gpu_s"]), _size(t["disk_bytes"]),
                  _size(None if t["peak_mb"] is None else t["peak_mb"] * 2**20))
    console.print(table)
    console.print("the total's peak is the largest stage's (DVC runs the stages one at a time); how each figure is obtained:", soft_wrap=True)
    for s in result.stages:
        console.print(f"[bold]{escape(s.stage)}[/bold] time: {escape(s.how_time)}; disk: {escape(s.how_disk)}; "
                      f"memory: {escape(s.how_memory)}" + "".join(f"; {escape(n)}" for n in s.notes), soft_wrap=True)
    for n in result.notes:
        console.print(f"note: {escape(n)}", soft_wrap=True)
    for w in result.warnings:
        console.print(f"[bold red]does not fit:[/bold red] {escape(w)}", soft_wrap=True)
