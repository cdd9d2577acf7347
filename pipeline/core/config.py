"""Typed, validated view of `params.yaml`: one pydantic model per section, each beside the code it configures.

Every stage reads only its own section (`load_section("faces")`), so a DVC stage lists exactly the
keys it depends on and an edit elsewhere does not rerun it. Unknown keys are errors: a typo in
`params.yaml` must not silently fall back to a default.

This module holds what every section shares: the `Section` base, the helpers validators report with
(`Problems`, `did_you_mean`, …), reading and checking params.yaml (`read_params`, `load_section`,
`section_problems`, `check_params`) and `SECTIONS`, the table of sections: each name and where its
schema lives (`SCHEMAS`), the schema imported when the section is first looked up, so reading
`corpus` imports neither torch nor any other section's code. The paths under data/ are in
pipeline/core/paths.py.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.core.errors import PipelineError
from pipeline.core.paths import PARAMS_FILE

# Each section's schema is imported only when it is looked up; a stage that merely reads its section does
# not import the others, so they are not its code dependencies (pipeline/core/dvc_deps.py): a stage
# reaches its section's schema through the code it runs (the owner module that defines it). The checks
# that need the model and strategy registries live above them (pipeline/runs/params.py,
# pipeline/evaluate/grid.py, pipeline/params_checks.py).
LAZY_IMPORTS_VALIDATE_ONLY = True


class Section(BaseModel):
    """A params.yaml section (or a part of one): unknown keys are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OnError = Literal["fail", "skip"]  # every extractor's `on_error`
ON_ERROR_HELP = "fail: stop at the first unusable clip; skip: mark the modality missing for it and log it"


class Problems(ValueError):
    """Several problems found by one validator, each `(where, message)` with `where` a dotted key
    path below the validated field ('' for the field itself); `load_section` reports one line each."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items
        super().__init__("; ".join(f"{w}: {m}" if w else m for w, m in items))


def did_you_mean(name: str, known: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the closest of `known`, or ''."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, known: list[str] | tuple[str, ...]) -> str:
    kinds = {"strategy": "strategies"}.get(kind, f"{kind}s")
    return f"unknown {kind} '{name}'{did_you_mean(name, known)}; known {kinds}: {', '.join(known)}"


def flat_errors(e: ValidationError) -> list[tuple[tuple[str, ...], str]]:
    """(location, message) of each problem of `e`, a validator's `Problems` expanded into its items."""
    out: list[tuple[tuple[str, ...], str]] = []
    for err in e.errors():
        loc = tuple(str(p) for p in err["loc"])
        cause = err.get("ctx", {}).get("error") if err["type"] == "value_error" else None
        if isinstance(cause, Problems):
            out += [(loc + tuple(w.split(".")) if w else loc, m) for w, m in cause.items]
        else:
            out.append((loc, str(cause) if cause is not None else err["msg"]))
    return out


def pydantic_problems(e: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for err in e.errors():
        where = ".".join([prefix] * bool(prefix) + [str(p) for p in err["loc"]])
        out.append((where, str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]))
    return out


def entry_problems(name: str, overrides: Any, params_cls: type[BaseModel], what: str) -> list[tuple[str, str]]:
    """Problems of one per-name entry (`{d_model: 128}`) validated against `params_cls`: an unknown
    key names the known ones."""
    if overrides is None:
        return []
    if not isinstance(overrides, dict):
        return [(name, f"must be a mapping of parameters, got {overrides!r}")]
    fields = list(params_cls.model_fields)
    problems = [
        (f"{name}.{k}", f"unknown parameter{did_you_mean(k, fields)}; {what}: {', '.join(fields)}")
        for k in overrides if k not in fields
    ]
    try:
        params_cls.model_validate({k: x for k, x in overrides.items() if k in fields})
    except ValidationError as e:
        problems += pydantic_problems(e, name)
    return problems





# section name -> "module:Class" of its schema, beside the code it configures
SCHEMAS: dict[str, str] = {
    "corpus": "pipeline.corpus.registry:CorpusSection",  # union on `name`: the demo or an adapter
    "faces": "pipeline.extract.faces.params:FacesParams",
    "face_embed": "pipeline.extract.params:FaceEmbedParams",
    "resnet50": "pipeline.extract.params:ResNet50Params",
    "lld": "pipeline.extract.opensmile_lld:LldParams",
    "compare": "pipeline.extract.opensmile_lld:CompareParams",
    "import": "pipeline.extract.csv_import:ImportParams",
    "wav2vec2": "pipeline.extract.params:Wav2Vec2Params",
    "bert": "pipeline.extract.params:BertParams",
    "segment": "pipeline.segment.params:SegmentParams",
    "train": "pipeline.train.grid:TrainSection",
    "grid": "pipeline.train.grid:GridParams",
    "model": "pipeline.train.grid:ModelSettings",
    "strategy": "pipeline.train.grid:StrategySettings",
    "importance": "pipeline.evaluate.importance:ImportanceParams",
    "evaluate": "pipeline.evaluate.params:EvaluateParams",
    "report": "pipeline.report.params:ReportParams",
}


def schema_module(name: str) -> str:
    """The module that defines section `name`'s schema."""
    return SCHEMAS[name].partition(":")[0]


class _Sections(Mapping[str, type[BaseModel]]):
    """{section name: its schema class}, in params.yaml's order; a schema is imported when first
    looked up (iterating or testing names imports nothing)."""

    def __getitem__(self, name: str) -> type[BaseModel]:
        module, _, cls = SCHEMAS[name].partition(":")
        return getattr(importlib.import_module(module), cls)

    def __contains__(self, name: object) -> bool:
        return name in SCHEMAS

    def __iter__(self) -> Iterator[str]:
        return iter(SCHEMAS)

    def __len__(self) -> int:
        return len(SCHEMAS)


SECTIONS = _Sections()


class ConfigError(PipelineError):
    """params.yaml is missing, unreadable or holds an invalid value; the message says which."""


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as a dict of sections; ConfigError if it is unreadable or names a section that
    does not exist (a misspelled section must not leave its stage on the defaults)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found (run from the repository root)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    unknown = [str(k) for k in data if k not in SECTIONS]
    if unknown:
        raise ConfigError("\n".join(
            f"{path}: unknown section '{k}'{did_you_mean(k, list(SECTIONS))}; known sections: {', '.join(SECTIONS)}"
            for k in unknown
        ))
    return data


def section_problems(name: str, raw: Any) -> list[str]:
    """One line `<section>.<key>: <problem>` per problem of section `name`'s raw values."""
    model = SECTIONS[name]
    try:
        model.model_validate(raw or {})
    except ValidationError as e:
        lines = []
        for loc, msg in flat_errors(e):
            if msg == EXTRA_FORBIDDEN:  # a misspelled key: name the known ones, like sections and models
                known = known_keys(model, loc[:-1])
                if known is not None:
                    msg = f"unknown key{did_you_mean(loc[-1], known)}; known keys: {', '.join(known)}"
            lines.append(f"{'.'.join((name,) + loc)}: {msg}")
        return lines
    return []


EXTRA_FORBIDDEN = "Extra inputs are not permitted"  # pydantic's message for an unknown key


def known_keys(model: Any, loc: tuple[str, ...]) -> list[str] | None:
    """The keys of the (nested) schema at `loc` below `model`, or None where the path leaves the
    pydantic models (a dict of entries, a union)."""
    import typing

    def step(model: Any, key: str) -> Any:
        fields = getattr(model, "model_fields", None) if isinstance(model, type) else None
        if fields and key in fields:
            return fields[key].annotation
        if fields and set(fields) == {"root"}:  # a RootModel: {name: entry}
            model = fields["root"].annotation
        if typing.get_origin(model) is dict:  # an entry of {name: entry}
            return typing.get_args(model)[1]
        return None

    for key in loc:
        model = step(model, key)
        # X | None: the model among the union's members
        models = [a for a in typing.get_args(model) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = models[0] if typing.get_origin(model) in (typing.Union, type(int | None)) and models else model
    fields = getattr(model, "model_fields", None) if isinstance(model, type) else None
    return list(fields) if fields else None


def load_section(name: str, path: str | Path = PARAMS_FILE) -> Any:
    """The validated section `name` of params.yaml (defaults where the file omits a key)."""
    model = SECTIONS[name]
    raw = read_params(path).get(name) or {}
    try:
        return model.model_validate(raw)
    except ValidationError:
        lines = [f"  {line}" for line in section_problems(name, raw)]
        raise ConfigError(f"{path}: invalid section '{name}':\n" + "\n".join(lines)) from None


def section_hash(section: BaseModel) -> str:
    """Stable short hash of a section's values (provenance and cache keys)."""
    import hashlib
    import json

    blob = json.dumps(section.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
