"""Experiment presets: each paper's experiment as the paper ran it, as a set of params.yaml edits.

A preset is a YAML file `presets/<name>.yaml` (one per experiment, see presets/README.md):

    paper: "001"                        # the seed paper (../shared/seeds/README.md)
    title: AuxFormer and its baselines on CREMA-D
    reproduces: 001 Table 1, Table 2, Fig. 5
    differs:                            # what differs from the paper, and why (printed by `mer preset show`)
    - ...
    params:                             # edits of params.yaml: mappings are merged key by key; lists,
      train: {epochs: 25}               # scalars and the keys named in `replace` are replaced whole
    replace: [corpus, segment.modalities]
    demo:                               # the scaled-down overlay for the demo corpus (CI, a first try)
      params: {...}
      replace: [...]
    published:                          # the paper's own numbers, printed beside ours by the report
    - {model: auxformer, strategy: auxformer, condition: all_present, metric: macro_f1, value: 0.772,
       source: 001 Table 1}

`mer preset apply <name> [--demo]` writes the merged params.yaml (validated first, written atomically,
comments and block style kept through ruamel, as `dvc exp run -S` keeps them) and prints the keys it
changed; `dvc exp run -n <name>` (or `dvc repro`) then runs the experiment. `published` goes to
`report.published`. The merging is hand-written (a few lines): neither DVC's `-S` overrides (they merge
mappings, so a key cannot be removed) nor OmegaConf's merge (it cannot replace a mapping whole) do it.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.core.errors import PipelineError
from pipeline.core.paths import PARAMS_FILE, REPO_ROOT
from pipeline.core.store import write_text
from pipeline.report.params import (
    Published,  # one schema: the report prints these beside ours
)

PRESETS_DIR = REPO_ROOT / "presets"


class PresetError(PipelineError):
    """A preset that does not exist, does not parse, or would make params.yaml invalid."""


class Overlay(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = Field(default_factory=dict)
    replace: list[str] = Field(default_factory=list)


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    paper: str
    title: str
    corpus: str = Field(description="the corpus adapter the paper's experiment reads")
    reproduces: str
    differs: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    replace: list[str] = Field(default_factory=list)
    demo: Overlay = Overlay()
    published: list[Published] = Field(default_factory=list)


def preset_names(directory: Path = PRESETS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def load_preset(name: str, directory: Path = PRESETS_DIR) -> Preset:
    path = Path(directory) / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(preset_names(directory)) or "none"
        raise PresetError(f"no preset '{name}' ({path} not found); presets: {known}")
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:  # ruamel: a key given twice is an error (PyYAML would keep the last one silently)
        data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
        return Preset.model_validate({**data, "name": name})
    except YAMLError as e:
        raise PresetError(f"{path}: not valid YAML: {e}") from None
    except (TypeError, ValidationError) as e:
        raise PresetError(f"{path}: not a preset: {e}") from None


def merge(base: dict[str, Any], edits: dict[str, Any], replace: list[str] = (), prefix: str = "") -> list[str]:
    """Apply `edits` to `base` in place: mappings merged key by key, anything else (and the dotted keys in
    `replace`) replaced whole. Returns the dotted keys whose value changed."""
    changed = []
    for key, value in edits.items():
        where = f"{prefix}{key}"
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if where in replace:  # whole: keys the edit lacks go; the kept keys keep their comments
                gone = [k for k in old if k not in value]
                for k in gone:
                    del old[k]
                changed += [f"{where}.{k}" for k in gone]
                changed += merge(old, value, [f"{where}.{k}" for k in value], f"{where}.")
            else:
                changed += merge(old, value, replace, f"{where}.")
        elif old != value or key not in base:
            base[key] = copy.deepcopy(value)
            changed.append(where)
    return changed


def preset_edits(preset: Preset, demo: bool = False) -> list[tuple[dict[str, Any], list[str]]]:
    """The (edits, replace) overlays a preset applies in order: its params, `report.published`, and with
    `demo` the scaled-down overlay."""
    published = {"report": {"published": [p.model_dump(exclude_none=True) for p in preset.published]}}
    out = [(preset.params, list(preset.replace)), (published, ["report.published"])]
    grid = preset.params.get("grid", {})
    if "strategies" in grid and "rates" not in grid:  # extra training rates belong to one experiment:
        out.insert(1, ({"grid": {"rates": {s: [] for s in _strategy_names()}}}, []))  # none unless it says
    if demo:
        out.append((preset.demo.params, list(preset.demo.replace)))
    return out


def _strategy_names() -> list[str]:
    from pipeline.runs.params import strategy_names

    return [s for s in strategy_names() if s != "eliminate"]  # eliminate has no rate and no rates entry


def apply_preset(name: str, params_file: str | Path = PARAMS_FILE, demo: bool = False,
                 directory: Path = PRESETS_DIR) -> list[str]:
    """Rewrite params.yaml with the preset applied (see the module docstring); returns the changed keys.
    The result is validated (`pipeline.params_checks.check_params`) before it replaces the file."""
    from ruamel.yaml import YAML

    from pipeline.params_checks import check_params

    preset = load_preset(name, directory)
    params_file = Path(params_file)
    rt = YAML()  # round trip: comments, key order and block style survive
    rt.indent(mapping=2, sequence=2, offset=0)
    rt.width = 4096
    data = rt.load(params_file.read_text(encoding="utf-8"))
    before = _flat(copy.deepcopy(dict(data)))
    for edits, replace in preset_edits(preset, demo):
        for section in edits:
            if section not in data:
                raise PresetError(f"preset '{name}': params.yaml has no section '{section}'")
        merge(data, _plain_to_block(edits), replace)
    after = _flat(dict(data))
    changed = [k for k in {**before, **after} if before.get(k, _ABSENT) != after.get(k, _ABSENT)]
    buf = io.StringIO()
    rt.dump(data, buf)
    text = buf.getvalue()
    probe = params_file.with_name(f".{params_file.name}.preset-check.yaml")
    try:
        probe.write_text(text, encoding="utf-8")
        problems = check_params(probe)
    finally:
        probe.unlink(missing_ok=True)
    if problems:
        lines = "\n".join("  " + p.replace(str(probe), str(params_file)) for p in problems)
        raise PresetError(f"preset '{name}' would make params.yaml invalid:\n{lines}")
    write_text(params_file, text)
    return changed


_ABSENT = object()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} of nested mappings (lists are leaves)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): _plain(value)}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _plain_to_block(value: Any) -> Any:
    """Plain dicts/lists as ruamel block-style nodes, so the written params.yaml keeps block lists (the
    style `dvc exp run -S` round-trips without rewriting lines; tests/test_dvc_contract.py)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        out = CommentedMap((k, _plain_to_block(v)) for k, v in value.items())
        out.fa.set_block_style()
        return out
    if isinstance(value, list):
        seq = CommentedSeq(_plain_to_block(v) for v in value)
        seq.fa.set_block_style()
        return seq
    return value
