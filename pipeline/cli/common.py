"""What every `mer` command shares: the console it prints to and `fail`, its one way to stop on an
error. Apart from the package's `__init__` so that the command modules can import it without a cycle."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console()


def fail(message: str) -> None:
    """Print each line of `message` as `error: <line>` and exit with status 1."""
    for line in str(message).splitlines() or [""]:
        console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
    raise typer.Exit(1)
