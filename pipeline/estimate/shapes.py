"""What the run's tables and sequences look like under params: each feature table's width and rows per
second of media, the configured backbone against the one the rates were calibrated with, the segment
stage's sequences, and a model's training recipe."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.estimate.inputs import CorpusSize

#: The words per second of speech a BERT table has rows for: conversational English runs at about
#: 150 words per minute (Tauroza & Allison, 1990, Applied Linguistics 11(1): 90-105) ≈ 2.5 words/s.
WORDS_PER_SECOND = 2.5


def feature_dim(feature: str, params: dict) -> int:
    """The width of a feature table under `params` (the extractors' documented dims; params.yaml's
    comments and docs/extractors.md)."""
    if feature == "vggface":
        return 4096
    if feature == "resnet50":
        return 512 if (params.get("resnet50") or {}).get("layer") == "conv5_3_3x3" else 2048
    if feature == "egemaps":
        return 25
    if feature == "compare":
        return 130 if (params.get("compare") or {}).get("deltas", True) else 65
    if feature == "wav2vec2":
        w = params.get("wav2vec2") or {}
        if w.get("model", "random") == "random":
            cfg = w.get("random_config") or {}
            return int((cfg.get("conv_dim") or [512])[-1]) if w.get("output", "cnn") == "cnn" else int(cfg.get("hidden_size", 768))
        large = "large" in str(w.get("model"))
        return 512 if w.get("output", "cnn") == "cnn" else (1024 if large else 768)
    if feature == "bert":
        model = str((params.get("bert") or {}).get("model", ""))
        return 384 if "minilm" in model.lower() else 1024 if "large" in model else 768
    if feature == "import" or feature.startswith("import/"):
        cols = import_settings(feature, params).get("columns")
        return len(cols) if isinstance(cols, list) else 8  # 'all': unknown before the files are read
    raise KeyError(feature)


def import_settings(feature: str, params: dict) -> dict:
    """The params of an imported feature: `import`, or `import/<name>` (the source's over the section's)."""
    section = dict(params.get("import") or {})
    sources = section.pop("sources", None) or {}
    if feature == "import":
        return section
    return {**section, **(sources.get(feature.split("/", 1)[1]) or {})}


def feature_rate(feature: str, params: dict) -> float:
    """Rows per second of media of a feature table."""
    if feature in ("vggface", "resnet50", "faces"):
        return float((params.get("faces") or {}).get("rate_hz", 5.0))
    if feature in ("egemaps", "compare"):
        return 100.0  # openSMILE LLDs: 10 ms hop
    if feature == "wav2vec2":
        return 50.0  # 20 ms frames (003 §5.2.2)
    if feature == "bert":
        return WORDS_PER_SECOND
    if feature == "import" or feature.startswith("import/"):
        return float(import_settings(feature, params).get("rate_hz") or 2.0)
    raise KeyError(feature)


#: Compute of the configured backbone relative to the one the rate was calibrated with, where they
#: differ: the FLOPs ratio of the architectures (weights do not change compute).
#: wav2vec2 with output `cnn` runs only the CNN feature encoder: base's 7 convolutions of 512 channels
#: take ≈ 2.45 GMAC per second of 16 kHz audio, the demo's random 64-channel config ≈ 0.04 GMAC (×61).
#: With output `hidden` base also runs 12 transformer layers of 768 (≈ 85 M parameters × 50 frames/s
#: ≈ 4.3 GMAC/s more). BERT-base (12 × 768) vs all-MiniLM-L6 (6 × 384): ≈ 8× the MACs per token.
def backbone_factor(feature: str, params: dict, calibrated: dict) -> tuple[float, str | None]:
    config = backbone_config(feature, params)
    if config == calibrated.get("config") or not calibrated.get("config"):
        return 1.0, None
    if feature == "wav2vec2":
        w = params.get("wav2vec2") or {}
        if w.get("model", "random") != "random" and "random" in calibrated["config"]:
            f = 61.0 if w.get("output", "cnn") == "cnn" else 61.0 + 107.0
            return f, f"scaled ×{f:g} from the calibrated {calibrated['config']} (FLOPs ratio; not measured)"
    if feature == "bert" and "minilm" in calibrated["config"].lower() and "minilm" not in config.lower():
        return 8.0, f"scaled ×8 from the calibrated {calibrated['config']} (BERT-base MACs per token; not measured)"
    return 1.0, f"calibrated with {calibrated['config']}, this run uses {config}: rate taken as is"


def backbone_config(feature: str, params: dict) -> str:
    if feature == "wav2vec2":
        w = params.get("wav2vec2") or {}
        if w.get("model", "random") == "random":
            cfg = w.get("random_config") or {}
            return f"random {len(cfg.get('conv_dim') or [])}x{(cfg.get('conv_dim') or [0])[-1]} cnn, output {w.get('output', 'cnn')}"
        return f"{Path(str(w.get('model'))).name}, output {w.get('output', 'cnn')}"
    if feature == "bert":
        return Path(str((params.get("bert") or {}).get("model", ""))).name
    if feature == "resnet50":
        return f"layer {(params.get('resnet50') or {}).get('layer', 'pool5')}"
    return ""


def _sequences(params: dict, corpus: CorpusSize) -> tuple[float, dict[str, tuple[int, int]], str]:
    """(number of sequences, {modality: (steps, dim)}, how) of the segment stage's layout."""
    seg = params.get("segment") or {}
    layout = seg.get("layout", "aligned")
    rate = float(seg.get("rate_hz", 5.0))
    mods = seg.get("modalities") or {}
    dims = {m: feature_dim(f, params) for m, f in mods.items()}
    mean_steps = corpus.mean_s * rate
    if layout == "windows":
        win, hop = int(seg.get("win", 250)), int(seg.get("hop", 50))
        per_clip = max(1.0, math.floor(max(mean_steps - win, 0) / hop) + 1)
        return corpus.clips * per_clip, {m: (win, d) for m, d in dims.items()}, f"windows of {win} steps, hop {hop}"
    if layout == "frames":
        frames = int(seg.get("frames", 100))
        stacked = set(seg.get("stack") or [])
        k = round(float(seg["stack_seconds"]) * rate) if seg.get("stack_seconds") else 1
        shapes = {m: (frames, d * (k if m in stacked else 1)) for m, d in dims.items()}
        return corpus.clips * max(1.0, math.ceil(mean_steps / frames)), shapes, f"samples of {frames} frames"
    if layout == "native":
        caps = seg.get("native_max_steps") or {}
        default = int(seg.get("max_steps", 64))
        shapes = {m: (int(caps.get(m, default)), d) for m, d in dims.items()}
        return float(corpus.clips), shapes, "one sequence per clip, each modality at its own rate (padded to its maximum)"
    steps = min(int(seg.get("max_steps", 64)), max(1, math.ceil(mean_steps)))
    return float(corpus.clips), {m: (steps, d) for m, d in dims.items()}, f"one sequence per clip, {steps} steps"


def _recipe(params: dict, model: str) -> dict:
    """train's settings with model.<name>.train over them."""
    train = dict(params.get("train") or {})
    train.update(((params.get("model") or {}).get(model) or {}).get("train") or {})
    return train
