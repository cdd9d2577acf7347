"""The `mer` command line (typer). Run it from the repository root, like `dvc`.

Here: the app, the small commands (`run`, `params`, `features`) and the one reading of dvc.yaml's
stages (`dvc_stages`). The larger commands have a module each, registered below in `mer --help`'s
order: `repro` (repro.py), `models` (models.py), `predict` (predict.py), the `preset` sub-app (presets.py) and `estimate`
(estimate.py); what they all print with is in common.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from pipeline.cli import estimate, models, predict, presets, repro
from pipeline.cli.common import console, fail
from pipeline.cli.models import DEMO_DIMS  # re-exported: tests read cli.DEMO_DIMS
from pipeline.core.config import SECTIONS, did_you_mean, load_section
from pipeline.core.errors import PipelineError
from pipeline.core.paths import FEATURES_DIR, PARAMS_FILE
from pipeline.params_checks import check_params
from pipeline.repro import stage_env

__all__ = ["app", "DVC_FILE", "dvc_stages", "dvc_stage_names", "DEMO_DIMS"]

app = typer.Typer(help="Multimodal emotion recognition under missing modalities.", no_args_is_help=True)

DVC_FILE = "dvc.yaml"


def dvc_stages(root: str | Path = ".") -> dict[str, str | None]:
    """{stage name: its shell command} of `<root>/dvc.yaml`, in file order, with the names DVC shows:
    a `foreach:`/`matrix:` stage expands to one `name@key` per item, its `${item…}` filled in (DVC
    itself does the expansion and interpolation). Without DVC installed the file is read as YAML and
    an expanding stage maps to None (`dvc repro <name>` runs it). PipelineError when the file is
    missing or invalid. The one list of stages: `mer run` and the tests read it here."""
    root = Path(root)
    path = root / DVC_FILE
    if not path.exists():
        raise PipelineError(f"{path}: not found; run `mer` from the repository root")
    try:
        from dvc.repo import Repo
    except ImportError:
        return _yaml_stages(path)
    try:
        with Repo(str(root), uninitialized=True) as repo:
            stages = [s for s in repo.index.stages if s.path_in_repo == DVC_FILE]
            return {s.addressing: _command(s.cmd) for s in stages}
    except Exception as e:  # DVC's own errors (invalid dvc.yaml, bad interpolation) carry the reason
        raise PipelineError(f"{path}: DVC cannot read it: {e}") from None


def dvc_stage_names(root: str | Path = ".") -> list[str]:
    """The names of `dvc_stages(root)`, in dvc.yaml's order."""
    return list(dvc_stages(root))


def _command(cmd: str | list[str] | None) -> str | None:
    return " && ".join(cmd) if isinstance(cmd, list) else cmd


def _yaml_stages(path: Path) -> dict[str, str | None]:
    try:
        stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    except yaml.YAMLError as e:
        raise PipelineError(f"{path}: not valid YAML: {e}") from None
    return {name: None if "foreach" in st or "matrix" in st else _command(st.get("cmd")) for name, st in stages.items()}


@app.command()
def run(stage: str = typer.Argument(..., help="a stage of dvc.yaml (`dvc stage list` shows them)")) -> None:
    """Run one stage of dvc.yaml outside DVC: its `cmd`, from the repository root (DVC's caching and
    dependency checks are skipped: prefer `dvc repro`). params.yaml is checked first."""
    root = Path.cwd()
    try:
        stages = dvc_stages(root)
    except PipelineError as e:
        fail(str(e))
    if stage not in stages:
        expanded = [s for s in stages if s.startswith(f"{stage}@")]
        if expanded:
            fail(f"'{stage}' runs once per item in dvc.yaml; run one of: {', '.join(expanded)}")
        fail(f"unknown stage '{stage}'{did_you_mean(stage, list(stages))}; stages in {DVC_FILE}: {', '.join(stages)}")
    cmd = stages[stage]
    if cmd is None:
        fail(f"stage '{stage}' expands over items (foreach/matrix) and DVC is not installed: run `dvc repro {stage}`")
    problems = check_params(PARAMS_FILE)  # the cwd is the root
    if problems:
        fail("\n".join(problems))
    console.print(f"[bold]{escape(stage)}[/bold]: {escape(cmd)}", soft_wrap=True)
    code = subprocess.run(cmd, shell=True, cwd=root, env=stage_env()).returncode
    if code:
        raise typer.Exit(code)


@app.command()
def params(section: str = typer.Argument(None, help="a params.yaml section; all when omitted")) -> None:
    """Print the validated parameters, defaults filled in; every problem of params.yaml (one line
    each, exit 1) instead when there is one."""
    if section is not None and section not in SECTIONS:
        fail(f"unknown section '{section}'; sections: {', '.join(SECTIONS)}")
    problems = check_params(PARAMS_FILE)
    if problems:
        fail("\n".join(problems))
    for name in [section] if section else list(SECTIONS):
        try:
            values = load_section(name, PARAMS_FILE).model_dump(mode="json")
        except PipelineError as e:
            fail(str(e))
        console.print(escape(yaml.safe_dump({name: values}, sort_keys=False).rstrip()))


@app.command()
def features(directory: Path = typer.Option(FEATURES_DIR, help="where the feature tables are")) -> None:
    """List the feature tables with their dimension, rate and backbone weights."""
    from pipeline.core.features import read_feature_meta
    from pipeline.core.store import read_table

    table = Table("feature", "modality", "dim", "rate (Hz)", "rows", "backbone", "weights")
    paths = sorted(Path(directory).glob("*.parquet"))
    if not paths:
        fail(f"no feature tables in {directory}; run `dvc repro`")
    for path in paths:
        try:
            meta = read_feature_meta(path)
            rows = read_table(path, columns=["t"]).num_rows
        except PipelineError as e:
            fail(str(e))
        weights = "fixed set" if not meta.learned else "pretrained" if meta.pretrained else "[bold red]RANDOM[/bold red]"
        rate = "words" if meta.rate_hz is None else f"{meta.rate_hz:g}"
        table.add_row(meta.name, meta.modality, str(meta.dim), rate, str(rows), meta.backbone, weights)
    console.print(table)


# the larger commands, after the small ones: the order `mer --help` lists them in
app.command()(repro.repro)
app.command()(models.models)
app.command()(predict.predict)
app.add_typer(presets.preset_app, name="preset")
app.command()(estimate.estimate)
