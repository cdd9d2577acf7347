"""The `mer` command line (typer). Run it from the repository root, like `dvc`."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.table import Table

from pipeline.config import FEATURES_DIR, PARAMS_FILE, SECTIONS, load_section
from pipeline.errors import PipelineError

app = typer.Typer(help="Multimodal emotion recognition under missing modalities.", no_args_is_help=True)
console = Console()

STAGES = ["corpus", "faces", "face_embed", "lld", "wav2vec2", "bert", "segment", "train", "evaluate", "report"]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


@app.command()
def run(stage: str = typer.Argument(..., help=f"one of: {', '.join(STAGES)}")) -> None:
    """Run one stage outside DVC (DVC's caching and dependency checks are skipped: prefer `dvc repro`)."""
    if stage not in STAGES:
        _fail(f"unknown stage '{stage}'; stages: {', '.join(STAGES)}")
    script = Path("stages") / f"{stage}.py"
    if not script.exists():
        _fail(f"{script} not found: run `mer` from the repository root")
    sys.argv = [str(script)]
    runpy.run_path(str(script), run_name="__main__")


@app.command()
def params(section: str = typer.Argument(None, help="a params.yaml section; all when omitted")) -> None:
    """Print the validated parameters, defaults filled in."""
    names = [section] if section else list(SECTIONS)
    for name in names:
        if name not in SECTIONS:
            _fail(f"unknown section '{name}'; sections: {', '.join(SECTIONS)}")
        try:
            values = load_section(name, PARAMS_FILE).model_dump(mode="json")
        except PipelineError as e:
            _fail(str(e))
        console.print(yaml.safe_dump({name: values}, sort_keys=False).rstrip())


@app.command()
def features(directory: Path = typer.Option(FEATURES_DIR, help="where the feature tables are")) -> None:
    """List the feature tables with their dimension, rate and backbone weights."""
    from pipeline.store import read_feature_meta, read_table

    table = Table("feature", "modality", "dim", "rate (Hz)", "rows", "backbone", "weights")
    paths = sorted(Path(directory).glob("*.parquet"))
    if not paths:
        _fail(f"no feature tables in {directory}; run `dvc repro`")
    for path in paths:
        try:
            meta = read_feature_meta(path)
            rows = read_table(path, columns=["t"]).num_rows
        except PipelineError as e:
            _fail(str(e))
        weights = "fixed set" if not meta.learned else "pretrained" if meta.pretrained else "[bold red]RANDOM[/bold red]"
        rate = "words" if meta.rate_hz is None else f"{meta.rate_hz:g}"
        table.add_row(meta.name, meta.modality, str(meta.dim), rate, str(rows), meta.backbone, weights)
    console.print(table)


# dimensions of the demo's feature tables, used when no segments exist yet
DEMO_DIMS = {"face": 4096, "acoustic": 25, "speech": 64, "text": 384}


@app.command()
def models(
    as_json: bool = typer.Option(False, "--json", help="print {name: parameter count} as JSON"),
    task: str = typer.Option("classification", help="classification | regression"),
) -> None:
    """List every registered model with its parameter count (paper defaults, this corpus's inputs)."""
    import json

    from pipeline.models.registry import MODELS, count_parameters, build_model, fit_modalities
    from pipeline.segments import META, SEGMENTS_DIR

    meta_path = SEGMENTS_DIR / META
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        dims, n_classes = {m: int(i["dim"]) for m, i in meta["modalities"].items()}, len(meta["classes"])
        source = str(meta_path)
    else:
        dims, n_classes, source = DEMO_DIMS, 4, "the demo's feature dimensions"
    n_outputs = n_classes if task == "classification" else 2
    counts: dict[str, int] = {}
    for name in sorted(MODELS):
        try:
            counts[name] = count_parameters(build_model(name, fit_modalities(name, dims), n_outputs, task))
        except PipelineError as e:
            _fail(str(e))
    if as_json:
        print(json.dumps(counts, indent=2))
        return
    table = Table("model", "paper", "modalities", "parameters", title=f"inputs: {source}; task: {task}")
    for name, n in counts.items():
        entry = MODELS[name]
        table.add_row(name, entry.paper, ", ".join(fit_modalities(name, dims)), f"{n:,}")
    console.print(table)


@app.command()
def predict(
    video: Path = typer.Argument(..., help="a video (or audio) file in any container FFmpeg reads"),
    transcript: str = typer.Option(None, help="what is said, for the text modality (missing when omitted)"),
    model: str = typer.Option(None, help="only runs of this model (e.g. crossmodal or crossmodal/standard)"),
    csv: Path = typer.Option(None, help="write the prediction as CSV here"),
) -> None:
    """Predict the emotion (or arousal/valence over time) of a new file with the trained models."""
    import csv as csv_module

    from pipeline.predict import predict_file

    try:
        result = predict_file(video, transcript=transcript, model=model)
    except PipelineError as e:
        _fail(str(e))
    for modality, why in result.missing.items():
        console.print(f"[yellow]{modality} missing:[/yellow] {why}")
    if result.task == "classification":
        console.print(f"{result.clip}: [bold]{result.label}[/bold]  (mean of {len(result.runs)} runs)")
        for cls, p in zip(result.classes, result.probabilities):
            console.print(f"  {cls:<10} {p:.3f}")
    else:
        console.print(f"{result.clip}: {', '.join(result.targets)} over time (mean of {len(result.runs)} runs)")
        for t, row in zip(result.t, result.values):
            console.print(f"  {t:6.2f} s  " + "  ".join(f"{v:+.3f}" for v in row))
    if csv is not None:
        rows = result.rows()
        from pipeline.store import atomic_path

        with atomic_path(csv, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv_module.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        console.print(f"written: {csv}")


if __name__ == "__main__":
    app()
