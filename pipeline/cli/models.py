"""`mer models`: the registered models with their parameter counts, built as the train stage builds
them or (--paper) at each paper's own settings."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.common import console, fail
from pipeline.core.config import SECTIONS, load_section
from pipeline.core.errors import PipelineError
from pipeline.core.paths import PARAMS_FILE


def _model_overrides(train) -> dict[str, dict]:
    """{model: overrides of its paper defaults}: the `model` section's `<name>.params` where
    params.yaml has that section, else train.model_params."""
    if "model" in SECTIONS:
        return {name: dict(entry.params) for name, entry in load_section("model", PARAMS_FILE).root.items()}
    return {name: dict(v) for name, v in train.model_params.items()}


# dimensions of the demo's feature tables, used when no segments exist yet
DEMO_DIMS = {"face": 4096, "acoustic": 25, "speech": 64, "text": 384}


def models(
    names: list[str] = typer.Argument(None, help="only these models (all when omitted)"),
    as_json: bool = typer.Option(False, "--json", help="print {name: parameter count} as JSON (null: cannot be built)"),
    paper: bool = typer.Option(
        False, "--paper", help="each model at its PAPER's settings (feature dims, outputs, task) beside the published size"
    ),
    defaults: bool = typer.Option(False, "--defaults", help="the papers' default sizes, without train.model_params"),
    task: str = typer.Option(None, help="classification | regression (default: train.task)"),
) -> None:
    """List the registered models with their parameter counts, each built as the train stage builds
    it: on the modalities it takes of train.modalities, with train.model_params applied (--defaults:
    without them), for this corpus's feature dimensions (the demo's before `dvc repro segment`).
    --paper: each model at its paper's inputs with the paper's published count where it gives one
    (trainable parameters, biases and LayerNorm included, shared tensors once)."""
    import json

    from pipeline.models.registry import (
        MODELS,
        ModelError,
        build_model,
        count_parameters,
        fit_modalities,
        model_params,
    )
    from pipeline.segment.contract import META, SEGMENTS_DIR

    unknown = [n for n in names or [] if n not in MODELS]
    if unknown:
        fail(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(MODELS))}")
    if paper:
        _paper_models(names or sorted(MODELS), as_json)
        return
    try:
        train = load_section("train", PARAMS_FILE)
    except PipelineError as e:
        fail(str(e))
    task = task or train.task
    if task not in ("classification", "regression"):
        fail(f"--task must be classification or regression, got '{task}'")
    meta_path = SEGMENTS_DIR / META
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        dims, n_classes = {m: int(i["dim"]) for m, i in meta["modalities"].items()}, len(meta["classes"])
        source = str(meta_path)
    else:
        dims, n_classes, source = DEMO_DIMS, 4, "the demo's feature dimensions"
    lacking = [m for m in train.modalities if m not in dims]
    if lacking:
        fail(f"train.modalities {lacking} have no feature dimension in {source} (it has {', '.join(dims)}); "
              "run `dvc repro segment`")
    n_outputs = n_classes if task == "classification" else len(train.targets)
    try:
        model_overrides = _model_overrides(train)
    except PipelineError as e:
        fail(str(e))
    rows: dict[str, tuple[list[str], int | None, str]] = {}  # name -> (modalities, count, why not)
    for name in names or sorted(MODELS):
        try:  # exactly as pipeline/train/loop.py: a model of fixed arity takes the first of train.modalities
            mods = list(fit_modalities(name, {m: dims[m] for m in train.modalities}))
        except ModelError as e:
            rows[name] = ([], None, str(e))
            continue
        overrides = None if defaults else model_overrides.get(name)
        try:
            n = count_parameters(build_model(name, {m: dims[m] for m in mods}, n_outputs, task, overrides))
        except PipelineError as e:
            rows[name] = (mods, None, str(e))
            continue
        rows[name] = (mods, n, "")
    if as_json:
        print(json.dumps({name: n for name, (_, n, _) in rows.items()}, indent=2))
        return
    sizes = "paper defaults" if defaults else "paper defaults with train.model_params"
    table = Table("model", "paper", "modalities", "parameters", "missing input", "layouts",
                  title=f"inputs: {source}; task: {task}; sizes: {sizes}")
    for name, (mods, n, why) in rows.items():
        try:  # the input convention (pipeline/missing/inputs.py) it is trained and evaluated with
            convention = model_params(name, None if defaults else model_overrides.get(name)).missing_input
        except PipelineError:
            convention = ""
        table.add_row(name, MODELS[name].paper, ", ".join(mods), f"{n:,}" if n is not None else f"[red]{escape(why)}[/red]",
                      convention, ", ".join(MODELS[name].layouts))
    console.print(table)


def _paper_models(names: list[str], as_json: bool) -> None:
    """`mer models --paper`: each model at its paper's settings (registry.PAPER_SETTINGS)."""
    import json

    from pipeline.models.registry import MODELS, PAPER_SETTINGS, paper_count

    counts = {name: paper_count(name) for name in names}
    if as_json:
        print(json.dumps(counts, indent=2))
        return
    table = Table("model", "paper", "inputs (source)", "ours", "published", "difference", "authors' code",
                  title="each model at its paper's settings: trainable parameters (biases, LayerNorm; shared once)")
    for name in names:
        s = PAPER_SETTINGS[name]
        ours = counts[name]
        published = f"{s.published:,} ({s.published_source})" if s.published else "—"
        diff = f"{ours - s.published:+,}" if s.published else "—"
        code = f"{paper_count(name, exact=True):,} with {s.exact}" if s.exact else ""
        table.add_row(name, MODELS[name].paper, s.source, f"{ours:,}", published, diff, code)
        if s.note:
            table.add_row("", "", f"[dim]{escape(s.note)}[/dim]", "", "", "", "")
    console.print(table)
