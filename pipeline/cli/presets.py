"""`mer preset list|show|apply`: each paper's experiment as a preset (presets/*.yaml, read and applied
by pipeline/presets.py)."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from pipeline.cli.common import console, fail
from pipeline.core.paths import PARAMS_FILE

preset_app = typer.Typer(help="Each paper's experiment as a preset: list, show, apply (presets/*.yaml).",
                         no_args_is_help=True)


@preset_app.command("list")
def preset_list() -> None:
    """Every preset: the paper, its corpus and what it reproduces."""
    from pipeline.presets import load_preset, preset_names

    table = Table("preset", "paper", "corpus", "reproduces")
    for name in preset_names():
        p = load_preset(name)
        table.add_row(name, p.paper, p.corpus, p.reproduces)
    console.print(table)


@preset_app.command("show")
def preset_show(name: str = typer.Argument(..., help="a preset (`mer preset list`)")) -> None:
    """A preset's settings, what differs from its paper and why, and the published numbers it carries."""
    from pipeline.presets import PresetError, load_preset

    try:
        p = load_preset(name)
    except PresetError as e:
        fail(str(e))
    console.print(f"[bold]{escape(name)}[/bold] ({p.paper}): {escape(p.title)}\nreproduces: {escape(p.reproduces)}")
    console.print(escape(yaml.safe_dump(p.params, sort_keys=False, default_flow_style=False)))
    for line in p.differs:
        console.print(f"differs: {escape(line)}", soft_wrap=True)
    table = Table("model", "strategy", "condition", "metric", "value", "source", title="published")
    for e in p.published:
        table.add_row(e.model, e.strategy or "", e.condition, e.metric, f"{e.value:g}", e.source)
    console.print(table)


@preset_app.command("apply")
def preset_apply(
    name: str = typer.Argument(..., help="a preset (`mer preset list`)"),
    demo: bool = typer.Option(False, "--demo", help="scaled down, on the generated demo corpus and random weights"),
    params_file: Path = typer.Option(Path(PARAMS_FILE), "--params", help="the params file to rewrite"),
) -> None:
    """Rewrite params.yaml with the preset (validated first; comments kept); then `dvc exp run -n <name>`."""
    from pipeline.presets import PresetError, apply_preset

    try:
        changed = apply_preset(name, params_file, demo=demo)
    except PresetError as e:
        fail(str(e))
    console.print(f"{params_file}: {len(changed)} setting(s) changed by preset {name}{' (demo)' if demo else ''}:")
    for key in changed:
        console.print(f"  {escape(key)}")
    console.print(f"next: dvc exp run -n {name}   (or dvc repro)")
