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
        weights = "pretrained" if meta.pretrained else "[bold red]RANDOM[/bold red]"
        rate = "words" if meta.rate_hz is None else f"{meta.rate_hz:g}"
        table.add_row(meta.name, meta.modality, str(meta.dim), rate, str(rows), meta.backbone, weights)
    console.print(table)


if __name__ == "__main__":
    app()
