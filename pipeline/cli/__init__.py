"""The `mer` command line (typer). Run it from the repository root, like `dvc`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.config import SECTIONS, check_params, did_you_mean, load_section
from pipeline.errors import PipelineError
from pipeline.paths import FEATURES_DIR, PARAMS_FILE

app = typer.Typer(help="Multimodal emotion recognition under missing modalities.", no_args_is_help=True)
console = Console()

DVC_FILE = "dvc.yaml"


def _fail(message: str) -> None:
    for line in str(message).splitlines() or [""]:
        console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
    raise typer.Exit(1)


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
        _fail(str(e))
    if stage not in stages:
        expanded = [s for s in stages if s.startswith(f"{stage}@")]
        if expanded:
            _fail(f"'{stage}' runs once per item in dvc.yaml; run one of: {', '.join(expanded)}")
        _fail(f"unknown stage '{stage}'{did_you_mean(stage, list(stages))}; stages in {DVC_FILE}: {', '.join(stages)}")
    cmd = stages[stage]
    if cmd is None:
        _fail(f"stage '{stage}' expands over items (foreach/matrix) and DVC is not installed: run `dvc repro {stage}`")
    problems = check_params(PARAMS_FILE)  # the cwd is the root
    if problems:
        _fail("\n".join(problems))
    # dvc.yaml's commands call `python`: the interpreter running `mer`, as under an activated venv
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    console.print(f"[bold]{escape(stage)}[/bold]: {escape(cmd)}", soft_wrap=True)
    code = subprocess.run(cmd, shell=True, cwd=root, env=env).returncode
    if code:
        raise typer.Exit(code)


@app.command()
def params(section: str = typer.Argument(None, help="a params.yaml section; all when omitted")) -> None:
    """Print the validated parameters, defaults filled in; every problem of params.yaml (one line
    each, exit 1) instead when there is one."""
    if section is not None and section not in SECTIONS:
        _fail(f"unknown section '{section}'; sections: {', '.join(SECTIONS)}")
    problems = check_params(PARAMS_FILE)
    if problems:
        _fail("\n".join(problems))
    for name in [section] if section else list(SECTIONS):
        try:
            values = load_section(name, PARAMS_FILE).model_dump(mode="json")
        except PipelineError as e:
            _fail(str(e))
        console.print(escape(yaml.safe_dump({name: values}, sort_keys=False).rstrip()))


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


def _model_overrides(train) -> dict[str, dict]:
    """{model: overrides of its paper defaults}: the `model` section's `<name>.params` where
    params.yaml has that section, else train.model_params."""
    if "model" in SECTIONS:
        return {name: dict(entry.params) for name, entry in load_section("model", PARAMS_FILE).root.items()}
    return {name: dict(v) for name, v in train.model_params.items()}


# dimensions of the demo's feature tables, used when no segments exist yet
DEMO_DIMS = {"face": 4096, "acoustic": 25, "speech": 64, "text": 384}


@app.command()
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

    from pipeline.models.registry import MODELS, ModelError, build_model, count_parameters, fit_modalities, model_params
    from pipeline.segments import META, SEGMENTS_DIR

    unknown = [n for n in names or [] if n not in MODELS]
    if unknown:
        _fail(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(MODELS))}")
    if paper:
        _paper_models(names or sorted(MODELS), as_json)
        return
    try:
        train = load_section("train", PARAMS_FILE)
    except PipelineError as e:
        _fail(str(e))
    task = task or train.task
    if task not in ("classification", "regression"):
        _fail(f"--task must be classification or regression, got '{task}'")
    meta_path = SEGMENTS_DIR / META
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        dims, n_classes = {m: int(i["dim"]) for m, i in meta["modalities"].items()}, len(meta["classes"])
        source = str(meta_path)
    else:
        dims, n_classes, source = DEMO_DIMS, 4, "the demo's feature dimensions"
    lacking = [m for m in train.modalities if m not in dims]
    if lacking:
        _fail(f"train.modalities {lacking} have no feature dimension in {source} (it has {', '.join(dims)}); "
              "run `dvc repro segment`")
    n_outputs = n_classes if task == "classification" else len(train.targets)
    try:
        model_overrides = _model_overrides(train)
    except PipelineError as e:
        _fail(str(e))
    rows: dict[str, tuple[list[str], int | None, str]] = {}  # name -> (modalities, count, why not)
    for name in names or sorted(MODELS):
        try:  # exactly as pipeline/train.py: a model of fixed arity takes the first of train.modalities
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


@app.command()
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

    from pipeline.predict import Predictor, check_transcript, expand_inputs, read_transcript_file

    try:
        if transcript is not None and transcript_file is not None:
            _fail("give --transcript or --transcript-file, not both")
        text = read_transcript_file(transcript_file) if transcript_file is not None else check_transcript(transcript)
        files = expand_inputs(videos)
        if text is not None and len(files) > 1:
            _fail(f"a transcript belongs to one file, but {len(files)} files were given; predict the file with a transcript on its own")
        predictor = Predictor(model=model)
    except PipelineError as e:
        _fail(str(e))
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
        _fail(failed[0][1])
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

    from pipeline.store import atomic_path

    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv_module.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    app()


preset_app = typer.Typer(help="Each paper's experiment as a preset: list, show, apply (presets/*.yaml).",
                         no_args_is_help=True)
app.add_typer(preset_app, name="preset")


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
        _fail(str(e))
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
        _fail(str(e))
    console.print(f"{params_file}: {len(changed)} setting(s) changed by preset {name}{' (demo)' if demo else ''}:")
    for key in changed:
        console.print(f"  {escape(key)}")
    console.print(f"next: dvc exp run -n {name}   (or dvc repro)")
