"""`mer predict`: the trained models on new files, and how their predictions are shown: the one-file
and many-file printouts, the JSON list and the CSV."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.cli.common import console, fail
from pipeline.core.errors import PipelineError


def predict(
    videos: list[Path] = typer.Argument(
        ..., help="media files (video or audio, any container FFmpeg reads) and folders (their media files, sorted)"
    ),
    transcript: str = typer.Option(None, help="what is said, for the text modality (missing when omitted; one file only)"),
    transcript_file: Path = typer.Option(None, help="a UTF-8 text file holding what is said (instead of --transcript; one file only)"),
    model: str = typer.Option(None, help="only runs of this model (e.g. crossmodal or crossmodal/standard)"),
    csv: Path = typer.Option(None, help="write the predictions as CSV here (the rows of every file predicted)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object per file (a list) instead of the table"),
) -> None:
    """Predict the emotion (or arousal/valence over time) of new files with the trained models, loaded once."""
    import json
    import time

    from pipeline.predict import (
        Predictor,
        check_transcript,
        expand_inputs,
        read_transcript_file,
    )

    try:
        if transcript is not None and transcript_file is not None:
            fail("give --transcript or --transcript-file, not both")
        text = read_transcript_file(transcript_file) if transcript_file is not None else check_transcript(transcript)
        files = expand_inputs(videos)
        if text is not None and len(files) > 1:
            fail(f"a transcript belongs to one file, but {len(files)} files were given; predict the file with a transcript on its own")
        predictor = Predictor(model=model)
    except PipelineError as e:
        fail(str(e))
    t0 = time.perf_counter()
    results = [(f, *_predict_one(predictor, f, text)) for f in files]
    total = time.perf_counter() - t0
    failed = [(f, err) for f, _, err in results if err is not None]
    summary = (f"loaded in {predictor.load_seconds:.2f} s; {len(files)} file{'s' if len(files) != 1 else ''} in {total:.2f} s "
               f"({total / max(len(files), 1):.2f} s/file)" + (f"; {len(failed)} failed" if failed else ""))
    out = Console(stderr=True) if as_json else console
    if as_json:
        print(json.dumps([_prediction_json(f, p, err) for f, p, err in results], indent=2))
    elif len(files) == 1 and failed:
        fail(failed[0][1])
    else:
        for modality, statement in predictor.random_weights.items():
            out.print(f"[bold red]RANDOM weights:[/bold red] {escape(modality)}: {escape(statement)}", soft_wrap=True)
        if len(files) == 1:
            _print_prediction(results[0][1])
        else:
            _print_predictions(results)
    if csv is not None:
        rows = [row for _, p, _ in results if p is not None for row in p.rows()]
        if rows:
            _write_csv(csv, rows)
            out.print(f"written: {csv}")
    out.print(summary, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _predict_one(predictor, path: Path, text: str | None):
    """(Prediction, None), or (None, a one-line error naming the file): one bad file does not stop the others."""
    try:
        return predictor.predict(path, transcript=text), None
    except PipelineError as e:
        message = " ".join(str(e).split())
    except Exception as e:  # a library's own error on a file it cannot handle: still one line, naming the file
        message = f"{type(e).__name__}: {' '.join(str(e).split())}"
    return None, message if str(path) in message else f"{path}: {message}"


def _prediction_json(path: Path, p, error: str | None) -> dict:
    if p is None:
        return {"file": str(path), "error": error}
    out = {"file": str(path), "clip": p.clip, "task": p.task, "runs": len(p.runs), "missing": p.missing,
           "seconds": round(p.seconds, 3)}
    if p.probabilities is not None:
        return out | {"label": p.label, "probabilities": {c: round(float(v), 6) for c, v in zip(p.classes, p.probabilities)}}
    return out | {"t": [round(float(t), 4) for t in p.t], "values": {k: [round(float(v), 6) for v in p.values[:, i]] for i, k in enumerate(p.targets)}}


def _print_prediction(result) -> None:
    """One file: its missing modalities, then the class probabilities or the values over time."""
    for modality, why in result.missing.items():
        console.print(f"[yellow]{escape(modality)} missing:[/yellow] {escape(why)}", soft_wrap=True)
    if result.task == "classification":
        console.print(f"{result.clip}: [bold]{result.label}[/bold]  (mean of {len(result.runs)} runs)")
        for cls, p in zip(result.classes, result.probabilities):
            console.print(f"  {cls:<10} {p:.3f}")
    else:
        console.print(f"{result.clip}: {', '.join(result.targets)} over time (mean of {len(result.runs)} runs)")
        for t, row in zip(result.t, result.values):
            console.print(f"  {t:6.2f} s  " + "  ".join(f"{v:+.3f}" for v in row))


def _print_predictions(results) -> None:
    """Several files: one line each (never wrapped) — the label and its probability (classification) or
    each target's mean over time (regression), the missing modalities, the seconds it took; a file that
    failed: `error: <file>: <cause>`."""
    for path, p, error in results:
        if p is None:
            console.print(f"[red]error:[/red] {escape(error)}", soft_wrap=True)
            continue
        if p.probabilities is not None:
            what = f"[bold]{escape(p.label)}[/bold] {float(max(p.probabilities)):.3f}"
        else:
            what = ", ".join(f"{escape(k)} {v:+.3f}" for k, v in zip(p.targets, p.values.mean(axis=0))) + " (mean over time)"
        missing = "".join(f"; [yellow]{escape(m)} missing:[/yellow] {escape(why)}" for m, why in p.missing.items())
        console.print(f"{escape(str(path))}: {what}{missing}  ({p.seconds:.2f} s)", soft_wrap=True)


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv as csv_module

    from pipeline.core.store import atomic_path

    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv_module.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
