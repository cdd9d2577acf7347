"""Models by name: `build_model(name, dims, n_outputs, task, overrides)` and `list_models(...)`.

Each model module defines a pydantic `Params` (its paper's hyper-parameters as defaults, each citing
its section) and a builder `(dims, n_outputs, task, params: Params) -> nn.Module`; `MODELS` maps a
registry name to that module's builder and Params. Modules are imported only when used.

Every model takes `forward(x: {mod: [B,T,D]}, mask: {mod: bool [B,T]})` and returns logits [B, n_outputs]
for task 'classification' or predictions [B, T, n_outputs] for task 'regression'. A model may also take
`valid: {mod: bool [B,T_m]}` (the steps within each sequence's true length; MCT-HFR's Eq. 6 counts them).
Callers never call a model directly: `pipeline.models.registry.forward` applies the model's input convention
(`missing_input`, the field every Params has through `ModelParams`; `pipeline.missing.inputs`) and passes
`valid` to models whose forward takes it, identically in training and evaluation.

`ModelEntry.layouts`: the segment layouts (`segment.layout`, pipeline/segment/contract.py) a model takes;
`check_layout` fails with one line otherwise. `native` (each modality its own T_m) is for per-sequence
classification only: per-step regression needs one time grid. A model may also
define `training_loss(batch, task_loss) -> dict[str, Tensor]` (key 'total' plus named parts) when its
paper trains with more than the task loss (auxiliary heads, reconstruction); see pipeline/train/loop.py.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.missing.inputs import model_inputs

TASKS = ("classification", "regression")
LAYOUTS = ("aligned", "windows", "frames", "native")
GRID = ("aligned", "windows", "frames")  # one common T for every modality
ANY_LAYOUT = LAYOUTS  # also `native`: each modality its own T_m (classification only)


class ModelParams(BaseModel):
    """Base of every model's Params: the input convention (pipeline/missing/inputs.py).

    `missing_input`: "mask" = missing and padded steps are masked out of attention/pooling; "zero" =
    missing values are zeros the model is not told about (its mask = the padding mask only); "token" =
    as zero, but a modality whose extractor records a missing token (BERT's [UNK]) gets that token
    (the model's `missing_tokens`, set by training and by `load_trained`). Each model
    overrides the default with its paper's. A `missing` key (this field's name in model.pt files and
    params written before it existed) is read as `missing_input`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    missing_input: Literal["mask", "zero", "token"] = Field("mask", description="input convention for missing steps")

    @model_validator(mode="before")
    @classmethod
    def _legacy_missing(cls, data: Any) -> Any:
        if isinstance(data, dict) and "missing" in data and "missing_input" not in data:
            data = {**data, "missing_input": data["missing"]}
            data.pop("missing")
        return data


@dataclass(frozen=True)
class ModelEntry:
    module: str  # pipeline.models.<module>
    builder: str  # function in it: (dims, n_outputs, task, params) -> nn.Module
    params: str = "Params"  # pydantic class in it with the paper's defaults
    paper: str = ""
    arity: tuple[int, int] = (1, 99)  # how many modalities it takes (min, max)
    layouts: tuple[str, ...] = GRID  # the segment layouts it takes


# layouts: a model whose fusion is per step (a sum, concatenation or joint FC per time step, a band mask
# over step indices) needs one grid; a model that fuses by attention between whole sequences and pools
# each (002's sum of per-step components is per step) also takes `native`.
MODELS: dict[str, ModelEntry] = {
    "crossmodal": ModelEntry("crossmodal", "build", "Params", "002 §2.1", layouts=GRID),
    "mct_hfr": ModelEntry("mct_hfr", "build", "Params", "003 §4", layouts=ANY_LAYOUT),
    "mmte_ammtd": ModelEntry("mmte", "build", "Params", "000 §3, §5.3", layouts=GRID),
    "mmte_fc": ModelEntry("mmte", "build_fc", "FCParams", "000 §6.1", layouts=GRID),
    "mmte_lstm": ModelEntry("mmte", "build_lstm", "LSTMParams", "000 §6.1", layouts=GRID),
    "late_fusion_lstm": ModelEntry("late_fusion", "build", "Params", "000 §6.1 (MuSe 2022)", layouts=ANY_LAYOUT),
    "auxformer": ModelEntry("auxformer", "build", "Params", "001 §3", arity=(2, 2), layouts=ANY_LAYOUT),
    "auxformer_noaux": ModelEntry("auxformer", "build_noaux", "NoAuxParams", "001 §4.5.1", arity=(2, 2), layouts=ANY_LAYOUT),
    "unimodal": ModelEntry("auxformer", "build_unimodal", "UnimodalParams", "001 §4.5.4", arity=(1, 1), layouts=ANY_LAYOUT),
    "mult": ModelEntry("mult", "build", "Params", "001 §4.5.2 (Tsai et al. 2019)", arity=(2, 3), layouts=ANY_LAYOUT),
    "jmt": ModelEntry("jmt", "build", "Params", "004 §3", arity=(2, 2), layouts=GRID),
}


class ModelError(PipelineError, ValueError):
    """Unknown model name or a model that cannot be built from the given dimensions/params."""


def available_models() -> list[str]:
    return sorted(MODELS)


def _entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ModelError(f"unknown model '{name}'; available: {', '.join(available_models())}")
    return MODELS[name]


def model_params(name: str, overrides: dict[str, Any] | None = None) -> BaseModel:
    """The model's validated hyper-parameters: its paper defaults with `overrides` applied."""
    entry = _entry(name)
    cls = getattr(importlib.import_module(f"pipeline.models.{entry.module}"), entry.params)
    try:
        return cls.model_validate(overrides or {})
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ModelError(f"train.model_params.{name}: invalid:\n" + "\n".join(lines)) from None


def build_model(
    name: str, dims: dict[str, int], n_outputs: int, task: str = "classification", overrides: dict[str, Any] | None = None
) -> nn.Module:
    entry = _entry(name)
    if task not in TASKS:
        raise ModelError(f"model '{name}': task must be one of {TASKS}, got {task!r}")
    if not dims:
        raise ModelError(f"model '{name}': no input modalities")
    if n_outputs < 1:
        raise ModelError(f"model '{name}': n_outputs must be >= 1, got {n_outputs}")
    params = model_params(name, overrides)
    builder = getattr(importlib.import_module(f"pipeline.models.{entry.module}"), entry.builder)
    try:
        model = builder(dict(dims), n_outputs, task, params)
    except ValueError as e:
        raise ModelError(f"model '{name}': {e}") from None
    # the input convention `pipeline.models.registry.forward` applies (pipeline/missing/inputs.py)
    model.missing_input = params.missing_input
    return model


def takes_valid(model: nn.Module) -> bool:
    """Whether the model's forward takes `valid` (the padding mask) besides x and mask."""
    return "valid" in inspect.signature(model.forward).parameters


def forward(model: nn.Module, x: dict[str, Any], mask: dict[str, Any], valid: dict[str, Any] | None = None) -> Any:
    """THE forward pass of a registered model, in training and evaluation alike: the model's input
    convention (`missing_input`, pipeline/missing/inputs.py, with the model's `missing_tokens`) applied to
    the presence masks `mask` and the padding masks `valid`, and `valid` passed to a model whose forward
    takes it."""
    xs, ms = model_inputs(getattr(model, "missing_input", "mask"), x, mask, valid, getattr(model, "missing_tokens", None))
    if takes_valid(model):
        return model(xs, ms, valid=valid)
    return model(xs, ms)


def check_layout(name: str, layout: str, task: str = "classification") -> None:
    """ModelError (one line) unless model `name` takes segment layout `layout` for `task`."""
    accepted = _entry(name).layouts
    if layout not in accepted:
        raise ModelError(f"model '{name}' does not take segment layout '{layout}'; it takes {', '.join(accepted)}")
    if layout == "native" and task == "regression":
        raise ModelError(
            f"model '{name}': segment layout 'native' (each modality its own length) cannot be used for per-step "
            f"regression, which needs one time grid; use {', '.join(g for g in GRID if g in accepted)}"
        )


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def fit_modalities(name: str, dims: dict[str, int]) -> dict[str, int]:
    """The first modalities of `dims` that the model takes (all of them for a model of any arity)."""
    low, high = _entry(name).arity
    if len(dims) < low:
        raise ModelError(f"model '{name}' needs at least {low} modalities, got {list(dims)}")
    return dict(list(dims.items())[:high])


def list_models(
    dims: dict[str, int], n_outputs: int, task: str = "classification", overrides: dict[str, dict] | None = None
) -> dict[str, int]:
    """{name: trainable parameter count} of every registered model, each built for the first
    modalities of `dims` that it takes."""
    overrides = overrides or {}
    return {
        name: count_parameters(build_model(name, fit_modalities(name, dims), n_outputs, task, overrides.get(name)))
        for name in available_models()
    }


# ---- the papers' settings and published sizes ------------------------------------------------------
#
# Counting convention (`count_parameters`): trainable parameters (requires_grad), weights AND biases,
# LayerNorm scales and shifts included, a tensor shared by several layers counted once. It is the one
# that reproduces 001 Table 5 to the parameter (AuxFormer, baseline 1, MulT) with the authors' code's
# settings (`exact`); 003 Table 4 reports millions of "trainable parameters" too.


@dataclass(frozen=True)
class PaperSetting:
    """A model at its paper's inputs: feature dims, outputs and task, and the paper's published size."""

    dims: dict[str, int]
    n_outputs: int
    task: str
    source: str  # where the dims/outputs come from
    published: int | None = None  # the paper's trainable-parameter figure, None where it gives none
    published_source: str = ""
    exact: dict[str, Any] | None = None  # param overrides (the authors' code) that reproduce `published`
    note: str = ""  # why the defaults differ from `published`


_001_DIMS = {"video": 4096, "audio": 130}  # 001 §3.1, §4.2: VGG-Face fc6 4,096-d, ComParE LLDs 130-d
_001_SOURCE = "001 §3.1/§4.2: VGG-Face 4,096 + ComParE LLD 130; 4 classes (MSP-IMPROV)"
_001_CODE = {"project_all": True, "shared_kv_norm": True}
_001_NOTE = ("paper text: only the video is projected (§3.1, −16,900) and blocks.py gives keys/values their own "
             "LayerNorm (+2,600); the authors' code (both projected, one LayerNorm) gives the figure exactly")
_000_DIMS = {"audio": 88, "video": 20, "physio": 3}  # 000 §5.2: eGeMAPS 88, FAU 20, ECG+RESP+BPM 3
_000_SOURCE = "000 §5.2: eGeMAPS 88 + FAU 20 + ECG/RESP/BPM 3 at 2 Hz; one target (arousal or valence)"

PAPER_SETTINGS: dict[str, PaperSetting] = {
    "crossmodal": PaperSetting({"video": 4096, "audio": 3900}, 2, "regression",
                               "002 §3.2: VGG-Face 4,096 + 65 LLDs × 60 = 3,900; valence and arousal per frame",
                               note="002 gives no size (001 Table 5's baseline 3, 2,211,628, is 001's own "
                                    "re-implementation on 001's inputs, not this model)"),
    "mct_hfr": PaperSetting({"audio": 512, "vision": 512, "text": 768}, 4, "classification",
                            "003 §5.2: wav2vec 2.0 512 + ResNet-50 512 + BERT 768; 4 classes (IEMOCAP)",
                            published=4_720_000, published_source="003 Table 4, model-wise for training (4.72 M)",
                            note="Table 4: layer 0.45 M, training 4.72 M, inference 2.41 M; ours 0.59 M / 5.68 M / "
                                 "2.92 M: with the code's 4·d feed-forward an MRAU has 594,816 parameters; the "
                                 "paper does not state its FFN width (0.45 M fits no whole multiple of d)"),
    "mmte_ammtd": PaperSetting(_000_DIMS, 1, "regression", _000_SOURCE, note="000 gives no size"),
    "mmte_fc": PaperSetting(_000_DIMS, 1, "regression", _000_SOURCE, note="000 gives no size"),
    "mmte_lstm": PaperSetting(_000_DIMS, 1, "regression", _000_SOURCE, note="000 gives no size"),
    "late_fusion_lstm": PaperSetting(_000_DIMS, 1, "regression", _000_SOURCE, note="000 / MuSe 2022 give no size"),
    "auxformer": PaperSetting(_001_DIMS, 4, "classification", _001_SOURCE, 7_054_748, "001 Table 5, our model",
                              _001_CODE, _001_NOTE),
    "auxformer_noaux": PaperSetting(_001_DIMS, 4, "classification", _001_SOURCE, 4_776_994, "001 Table 5, baseline 1",
                                    _001_CODE, _001_NOTE),
    "unimodal": PaperSetting({"audio": 130}, 4, "classification",
                             "001 §4.5.4: the acoustic-only model, ComParE 130-d; 4 classes",
                             4_364_354, "001 Table 5, baseline 4",
                             note="001 describes baseline 4 only by Fig. 2 and gives one count without naming the "
                                  "modality; the audio model with untied auxiliary passes (the default) is +0.63 %; "
                                  "the 4,096-d video model adds the 532,480-parameter projection "
                                  "(see auxformer.UnimodalAuxFormer)"),
    "mult": PaperSetting(_001_DIMS, 4, "classification", _001_SOURCE, 358_384, "001 Table 5, baseline 2",
                         {"shared_kv_norm": True},
                         "blocks.py gives keys/values their own LayerNorm (+600); MulT's code (one LayerNorm) "
                         "gives the figure exactly"),
    "jmt": PaperSetting({"visual": 512, "audio": 512}, 2, "regression",
                        "004 §4.2: R(2+1)D visual 512 + audio 512; valence and arousal per frame (Aff-Wild2)",
                        note="004 gives no size; without the regressor the defaults have the official code's "
                             "11,039,232 (self-attention head) and readout=fc its 11,557,376 (FC head), exactly"),
}


# ---- models at another paper's settings (a preset's `model.<name>.params` overrides) ----------------
#
# A model that a paper runs at its own size, different from the model's defaults: `exact` holds the
# overrides the preset sets, `published` the paper's figure. tests/test_model_counts.py pins each and
# checks that the preset sets the same overrides.

PAPER_VARIANTS: dict[str, tuple[str, PaperSetting]] = {
    # 001 §4.5.3 re-implements 002's cross-modal transformer on 001's inputs and gives no width; 002 §3.3's
    # 2 layers and 4 heads with d_model 164 (41 per head) have Table 5's size: 2,210,070 (−0.07 %)
    "001 baseline 3": ("crossmodal", PaperSetting(
        _001_DIMS, 4, "classification", _001_SOURCE, 2_211_628, "001 Table 5, baseline 3",
        {"d_model": 164},
        "001 gives no width for baseline 3; 002 §3.3's 2 layers × 4 heads at d_model 164 give its count "
        "(−1,558); 002's own 512 nodes give 16,877,574")),
    # 003 §6.1.2: 4 layers, 4 heads × 32 nodes; self-attention layers 2 as in the authors' baselines/model.py
    "003 MulT": ("mult", PaperSetting(
        {"audio": 512, "vision": 512, "text": 768}, 4, "classification",
        "003 §5.2: wav2vec 2.0 512 + ResNet-50 512 + BERT 768; 4 classes (IEMOCAP)",
        890_000, "003 Table 4, MulT layer-wise (0.89 M; model-wise 7.16 M)",
        {"d_model": 128, "heads": 4, "layers": 4, "self_layers": 2, "shared_kv_norm": True},
        "Table 4's layer figures fit a count without the attention in-projections (W_Q, W_K, W_V), as a "
        "MACs-counting tool reports them (003 §6.1.2 does not name its tool): one MulT layer (6 crossmodal "
        "units) is then 892,416 (+0.27 %), MCT-HFR's MRAU 446,208 (0.45 M), TFR-Net's 9 units 1,338,624 "
        "(1.34 M); model-wise the authors' MulT "
        "(baselines/model.py) has 10,913,796, 8,540,676 in Table 4's convention against 7.16 M (+19 %): "
        "no setting of 003 §6.1.2's size reproduces it")),
}


def variant_count(key: str, without_in_projections: bool = False) -> int:
    """Trainable parameters of PAPER_VARIANTS[key] built with its overrides; `without_in_projections`
    leaves out attention Q/K/V projections (003 Table 4's convention)."""
    name, s = PAPER_VARIANTS[key]
    model = build_model(name, s.dims, s.n_outputs, s.task, s.exact)
    return count_parameters(model) - (in_projection_parameters(model) if without_in_projections else 0)


def in_projection_parameters(model: nn.Module) -> int:
    """Parameters of the attention query/key/value projections (blocks.MultiHeadAttention q/k/v_proj)."""
    projections = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj")]
    return sum(count_parameters(m) for m in projections)  # named_modules lists a shared projection once


def paper_count(name: str, exact: bool = False) -> int:
    """Trainable parameters of model `name` at its paper's settings (PAPER_SETTINGS), with its defaults
    (or, `exact`, with the overrides that reproduce the published figure)."""
    s = PAPER_SETTINGS[name]
    return count_parameters(build_model(name, s.dims, s.n_outputs, s.task, s.exact if exact and s.exact else None))
