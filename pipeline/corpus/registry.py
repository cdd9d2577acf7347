"""The corpora the pipeline reads: `corpus.name` → its adapter, and the `corpus` section's schema.

    demo        the generated demo corpus (pipeline/corpus/demo/, params in demo/params.py)
    crema_d     pipeline/corpus/crema_d.py        docs/corpora/crema_d.md
    ravdess     pipeline/corpus/ravdess.py        docs/corpora/ravdess.md
    iemocap     pipeline/corpus/iemocap.py        docs/corpora/iemocap.md
    msp_improv  pipeline/corpus/msp_improv.py     docs/corpora/msp_improv.md
    ulm_tsst    pipeline/corpus/ulm_tsst.py       docs/corpora/ulm_tsst.md
    aff_wild2   pipeline/corpus/aff_wild2.py      docs/corpora/aff_wild2.md
    manifest    pipeline/corpus/manifest_csv.py   docs/corpora/manifest.md (a user's own CSV; MMSA layout)

The section is a union discriminated on `name` (default `demo`) over the demo's `CorpusParams` and each
adapter's `Params`. Validating it imports only the chosen adapter (the adapters import PyAV through
pipeline.media; the demo's params import nothing heavy), so `load_section("corpus")` stays cheap. Each
adapter is imported by an explicit `from pipeline.corpus import <name>` inside `adapter()`: the static
import closure (pipeline/core/dvc_deps.py) sees every adapter as code of the corpus stage.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from pipeline.corpus.demo.params import CorpusParams

NAMES = ("demo", "crema_d", "ravdess", "iemocap", "msp_improv", "ulm_tsst", "aff_wild2", "manifest")
ADAPTERS = NAMES[1:]
CorpusName = Literal["demo", "crema_d", "ravdess", "iemocap", "msp_improv", "ulm_tsst", "aff_wild2", "manifest"]
DOCS = {name: f"docs/corpora/{name}.md" for name in ADAPTERS} | {"demo": "docs/demo-corpus.md"}


def adapter(name: str) -> ModuleType:
    """The adapter module of corpus `name` (imported now); KeyError for the demo or an unknown name."""
    if name == "crema_d":
        from pipeline.corpus import crema_d

        return crema_d
    if name == "ravdess":
        from pipeline.corpus import ravdess

        return ravdess
    if name == "iemocap":
        from pipeline.corpus import iemocap

        return iemocap
    if name == "msp_improv":
        from pipeline.corpus import msp_improv

        return msp_improv
    if name == "ulm_tsst":
        from pipeline.corpus import ulm_tsst

        return ulm_tsst
    if name == "aff_wild2":
        from pipeline.corpus import aff_wild2

        return aff_wild2
    if name == "manifest":
        from pipeline.corpus import manifest_csv

        return manifest_csv
    raise KeyError(name)


def params_class(name: str) -> type[BaseModel]:
    """The schema of `corpus` when its name is `name`."""
    return CorpusParams if name == "demo" else adapter(name).Params


class _Name(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: CorpusName = "demo"


class CorpusSection:
    """params.yaml's `corpus` (pipeline/core/config.py SCHEMAS points here): `model_validate(raw)` returns the
    chosen corpus's params (a `CorpusParams` or an adapter's `Params`), or raises pydantic's
    ValidationError whose locations are keys of the section (`name`, `root`, an option): an unknown
    key is named, with the known ones."""

    @classmethod
    def model_validate(cls, raw: Any) -> BaseModel:
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            return CorpusParams.model_validate(raw)  # pydantic's own "should be a valid dictionary"
        name = _Name.model_validate(raw).name  # an unknown name: 'name: Input should be 'demo', …'
        model = params_class(name)
        try:
            return model.model_validate(raw)
        except ValidationError as e:
            raise _with_known_keys(e, name, list(model.model_fields)) from None

    @classmethod
    def union(cls) -> Any:
        """The full discriminated union as a pydantic TypeAdapter (imports every adapter: for docs and
        tests, not for validating params.yaml)."""
        from typing import Annotated, Union

        from pydantic import Field, TypeAdapter

        members = tuple(params_class(n) for n in NAMES)
        return TypeAdapter(Annotated[Union[members], Field(discriminator="name")])  # type: ignore[valid-type]


def _with_known_keys(e: ValidationError, name: str, known: list[str]) -> ValidationError:
    """`e` with each 'Extra inputs are not permitted' replaced by one that says which options exist."""
    from pipeline.core.config import did_you_mean

    errors = []
    for err in e.errors():
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            key = str(err["loc"][0])
            err = dict(err, type=PydanticCustomError(
                "extra_forbidden",
                "unknown option of corpus '{corpus}'{hint}; its options: {known}",
                {"corpus": name, "hint": did_you_mean(key, known), "known": ", ".join(known)},
            ))
        errors.append({k: err[k] for k in ("type", "loc", "input", "ctx") if k in err})
    return ValidationError.from_exception_data(e.title, errors)  # type: ignore[arg-type]
