"""wav2vec 2.0 features (feature `wav2vec2`, 50 Hz).

003 §5.2.2 encodes speech with a pre-trained wav2vec 2.0 (facebook/wav2vec2-base-960h) into 512-d
features at 50 Hz. 512 is the width of wav2vec2-base's CNN feature encoder (its transformer is 768-d),
so the default `wav2vec2.output: cnn` exports the CNN feature encoder's output: transformers'
`Wav2Vec2Model(...).extract_features`, i.e. the last conv layer's output (conv_dim[-1]-d) after the
feature projection's LayerNorm and before its linear projection to hidden_size (the paper does not
say which of the two; `extract_features` is what transformers returns as the CNN features).
`output: hidden` exports the hidden states of transformer layer `wav2vec2.layer` instead (-1: the
last, 0: the transformer's input), hidden_size-d (768 for base): transformers' `hidden_states[layer]`
(for do_stable_layer_norm models such as large-lv60 the last entry is before the final LayerNorm, as
transformers records it). Only the layers up to the exported one are kept in memory and run.

Weights, from `wav2vec2.model`:
- a local Hugging Face directory (config.json + weights; a Wav2Vec2ForCTC checkpoint such as
  wav2vec2-base-960h loads too). Its `preprocessor_config.json`, when present, gives the input
  normalisation (`do_normalize`) and sampling rate; without one, the wav2vec2-base-960h defaults are
  used: 16 kHz, zero-mean/unit-variance normalisation of the whole clip.
- `random`: a `Wav2Vec2Config(**wav2vec2.random_config)` model with weights drawn from
  `wav2vec2.seed` (same defaults for the input). The table then says RANDOM weights in plain words.

Rows: frame k of the CNN covers samples [S·k, S·k + R) where S is the product of the conv strides
and R the receptive field (320 and 400 for every wav2vec2 config in the wild: 20 ms hop, 25 ms
window); t = (S·k + R/2) / sample_rate. A clip shorter than one frame is an ExtractionError naming
the file. `silence: mask` (default; `keep` keeps them): a frame whose receptive field is digital silence
(or, with `silence_dbfs`, below that RMS level) is present=False, values zero.
The clip's audio is `pipeline.media.clip_audio` (the window rule: the clip's window of its media, or
its whole separate audio file); t counts from the clip's start.

Long media (003 is silent; its utterances are short): a clip of more than `chunk_seconds` runs in
windows of `chunk_seconds` that start on the frame grid and overlap by 2·`overlap_seconds`; each frame
is taken from a window where it has at least `overlap_seconds` of context on both sides (where the
clip has it), i.e. from the middle of a window (`pipeline.extract.chunking`), so times and the number
of frames equal the unchunked run's and memory is one window's. The input normalisation uses
the whole clip, as unchunked. wav2vec2-base's first conv layer normalises each channel over the
whole input (GroupNorm, `feat_extract_norm: group`); chunked runs use that layer's statistics over the
whole clip (one extra pass of the first conv layer), so the `cnn` output of a chunked run equals the
unchunked one to float precision. `hidden` outputs differ from an unchunked run: attention is global,
and a window sees only its `chunk_seconds`.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from transformers import (  # after pipeline.extract.hf: offline
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

from pipeline.core.config import ConfigError
from pipeline.core.device import pick_device
from pipeline.core.features import ClipFeatures, FeatureMeta
from pipeline.corpus.clip_media import clip_audio, clip_audio_label
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError, Extractor
from pipeline.extract.chunking import plan_windows
from pipeline.extract.hf import (
    directory_digest,
    load_pretrained,
    model_label,
    resolve_model_dir,
)
from pipeline.extract.params import Wav2Vec2Params
from pipeline.media import silent_steps

RANDOM = "random"
STATS_BLOCK = 8192  # first-conv-layer frames per block when computing whole-clip GroupNorm statistics
WHAT = (
    "a Hugging Face Wav2Vec2 directory with config.json and model weights (e.g. a local copy of "
    "facebook/wav2vec2-base-960h), or 'random' for seeded random weights"
)


def default_feature_extractor() -> Wav2Vec2FeatureExtractor:
    """Input processing of facebook/wav2vec2-base-960h's preprocessor_config.json: 16 kHz, mono,
    zero-mean/unit-variance normalisation per clip."""
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)


def conv_geometry(config: Wav2Vec2Config) -> tuple[int, int]:
    """(total stride S, receptive field R) of the CNN feature encoder, in samples."""
    stride, field = 1, 1
    for k, s in zip(config.conv_kernel, config.conv_stride):
        field += (k - 1) * stride
        stride *= s
    return stride, field


def random_model(params: Wav2Vec2Params) -> Wav2Vec2Model:
    """A Wav2Vec2Model with weights drawn from `params.seed`, leaving the global RNG untouched."""
    try:
        config = Wav2Vec2Config(**params.random_config)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"wav2vec2.random_config: {e}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        model = Wav2Vec2Model(config)
    return model.eval()


class ClipGroupNorm(nn.Module):
    """A GroupNorm over time whose statistics were computed beforehand over the whole clip."""

    def __init__(self, norm: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> None:
        super().__init__()
        scale = torch.rsqrt(var + norm.eps)  # per channel (float64)
        self.register_buffer("scale", (scale * norm.weight.double()).float()[:, None])
        self.register_buffer("shift", (norm.bias.double() - mean * scale * norm.weight.double()).float()[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        return x * self.scale + self.shift


def group_statistics(conv: nn.Conv1d, norm: nn.GroupNorm, x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, var) that `norm` would compute on `conv(x)` for the whole 1-D signal `x`,
    accumulated in float64 over blocks of `block` output frames (memory: one block)."""
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    n_out = (x.shape[-1] - kernel) // stride + 1
    total = torch.zeros(conv.out_channels, dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    for a in range(0, n_out, block):
        b = min(n_out, a + block)
        y = conv(x[stride * a : stride * (b - 1) + kernel][None, None])[0].double()
        total += y.sum(1)
        squares += (y * y).sum(1)
    groups, per_group = norm.num_groups, conv.out_channels // norm.num_groups
    count = n_out * per_group
    mean = total.view(groups, per_group).sum(1) / count
    var = (squares.view(groups, per_group).sum(1) / count - mean * mean).clamp_min(0)  # biased, like GroupNorm
    return mean.repeat_interleave(per_group), var.repeat_interleave(per_group)


class Wav2Vec2Features(Extractor):
    name = "wav2vec2"
    version = "2"
    modality = "audio"

    def __init__(self, params: Wav2Vec2Params, device: torch.device | str | None = None) -> None:
        self.params_ = params
        self.directory: Path | None = None
        self.model_sha256: str | None = None
        if params.model == RANDOM:
            self.model = random_model(params)
            self.feature_extractor = default_feature_extractor()
            self.preprocessing = "wav2vec2-base-960h defaults (random model)"
        else:
            self.directory = resolve_model_dir(params.model, "wav2vec2.model", WHAT)
            self.model_sha256 = directory_digest(self.directory)  # of the files the model is loaded from
            self.model = load_pretrained(Wav2Vec2Model, self.directory, "wav2vec2.model")
            if (self.directory / "preprocessor_config.json").is_file():
                self.feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(
                    str(self.directory), local_files_only=True
                )
                self.preprocessing = "the directory's preprocessor_config.json"
            else:
                self.feature_extractor = default_feature_extractor()
                self.preprocessing = "wav2vec2-base-960h defaults (no preprocessor_config.json)"
        config = self.model.config
        self.n_layers = n_layers = config.num_hidden_layers
        self.output = params.output
        if self.output == "hidden":
            if not -(n_layers + 1) <= params.layer <= n_layers:
                raise ConfigError(
                    f"wav2vec2.layer: {params.layer} is out of range for a model with {n_layers} layers "
                    f"(0..{n_layers}, or -1..-{n_layers + 1} from the end)"
                )
            self.layer = params.layer % (n_layers + 1)
            self.dim = int(config.hidden_size)
            # run only the layers up to the exported one (hidden_states[0] is recorded by layer 1)
            self.model.encoder.layers = self.model.encoder.layers[: max(self.layer, 1)]
        else:
            self.layer = None
            self.dim = int(config.conv_dim[-1])
            self.model.encoder.layers = self.model.encoder.layers[:0]  # the transformer is never run
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.stride, self.field = conv_geometry(config)
        self.rate_hz = self.sample_rate / self.stride
        self.window = int(round(params.chunk_seconds * self.rate_hz))
        self.context = int(round(params.overlap_seconds * self.rate_hz))
        if self.window - 2 * self.context < 1:
            raise ConfigError(
                f"wav2vec2: chunk_seconds ({params.chunk_seconds}) must exceed 2 × overlap_seconds "
                f"({params.overlap_seconds}) by at least one frame ({1 / self.rate_hz:g} s)"
            )
        self.device = pick_device(device)
        self.model.to(self.device)

    # ------------------------------------------------------------------------------------------
    def normalise(self, signal: np.ndarray) -> np.ndarray:
        """The model input for a mono float32 signal (the feature extractor's normalisation)."""
        inputs = self.feature_extractor(signal, sampling_rate=self.sample_rate, return_tensors="np")
        return np.asarray(inputs["input_values"][0], dtype=np.float32)

    def n_frames(self, n_samples: int) -> int:
        return max(0, (n_samples - self.field) // self.stride + 1)

    def frame_times(self, n_samples: int) -> np.ndarray:
        """Centre (s) of every CNN frame a signal of `n_samples` yields."""
        return (self.stride * np.arange(self.n_frames(n_samples)) + self.field / 2) / self.sample_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(frames, dim) output for a batch of one input signal (1, samples)."""
        if self.output == "cnn":  # what Wav2Vec2Model.forward returns as extract_features
            return self.model.feature_projection.layer_norm(self.model.feature_extractor(x).transpose(1, 2))[0]
        return self.model(x, output_hidden_states=True).hidden_states[self.layer][0]

    @contextmanager
    def clip_statistics(self, x: torch.Tensor) -> Iterator[None]:
        """While running windows of `x`: a GroupNorm after the first conv layer (feat_extract_norm
        'group', as in wav2vec2-base) normalises with its statistics over the whole clip, as it does
        when the clip runs unchunked."""
        layer = self.model.feature_extractor.conv_layers[0]
        norm = getattr(layer, "layer_norm", None)
        if not isinstance(norm, nn.GroupNorm):  # 'layer' norm is per frame: windows need nothing
            yield
            return
        layer.layer_norm = ClipGroupNorm(norm, *group_statistics(layer.conv, norm, x, STATS_BLOCK))
        try:
            yield
        finally:
            layer.layer_norm = norm

    def process_signal(self, signal: np.ndarray, source: str | Path) -> ClipFeatures:
        """Rows for a mono float32 signal at `self.sample_rate`; `source` names it in errors."""
        if signal.size < self.field:
            raise ExtractionError(
                f"{source}: audio too short for wav2vec2 ({signal.size} samples; one frame needs "
                f"{self.field} = {1000 * self.field / self.sample_rate:.0f} ms)"
            )
        x = torch.from_numpy(self.normalise(signal)).to(self.device)
        t = self.frame_times(signal.size)
        windows = plan_windows(np.ones(len(t), np.int64), self.window, self.context)
        values = np.empty((len(t), self.dim), np.float32)
        with torch.inference_mode():
            if len(windows) == 1:  # the whole clip at once, exactly as transformers runs it
                out = self.forward(x[None]).float().cpu().numpy()
                if len(out) != len(t):  # the geometry above must agree with the model's own conv stack
                    raise ExtractionError(f"{source}: wav2vec2 gave {len(out)} frames, expected {len(t)}")
                values[:] = out
            else:
                with self.clip_statistics(x):
                    for w in windows:
                        out = self.forward(x[None, self.stride * w.start : self.stride * (w.stop - 1) + self.field])
                        values[w.keep_start : w.keep_stop] = (
                            out[w.keep_start - w.start : w.keep_stop - w.start].float().cpu().numpy()
                        )
        present = np.all(np.isfinite(values), axis=1)
        if not present.all():
            raise ExtractionError(f"{source}: wav2vec2 produced non-finite values in {int((~present).sum())} frames")
        if self.params_.silence == "mask":  # a frame's receptive field of digital silence (or below silence_dbfs)
            present = ~silent_steps(signal, self.sample_rate, t, self.field / self.sample_rate, self.params_.silence_dbfs)
            values[~present] = 0.0
        return ClipFeatures(t=t, present=present, values=values)

    def process_clip(self, clip: Clip, root: Path) -> ClipFeatures:
        # the clip's window of its media, or its whole separate audio file (pipeline.media's window rule)
        return self.process_signal(clip_audio(clip, root, self.sample_rate), clip_audio_label(clip, root))

    # ------------------------------------------------------------------------------------------
    def describe_output(self) -> str:
        if self.output == "cnn":
            return f"CNN feature encoder output (extract_features, {self.dim}-d)"
        return f"hidden state {self.layer} of {self.n_layers} ({self.dim}-d)"

    def backbone(self) -> tuple[str, bool]:
        c = self.model.config
        shape = f"{self.n_layers} layers, {c.hidden_size}-d, {self.describe_output()}"
        if self.directory is None:
            return f"wav2vec2 random config ({shape}, seed {self.params_.seed})", False
        return f"wav2vec2 {model_label(self.params_.model, self.directory)} ({shape})", True

    def params(self) -> dict[str, Any]:
        params = self.params_.model_dump(mode="json")
        if self.output == "cnn":
            del params["layer"]  # not used: changing it must not re-extract the CNN output
        return {
            **params,
            "model_sha256": self.model_sha256,
            "sample_rate": self.sample_rate,
            "do_normalize": bool(self.feature_extractor.do_normalize),
            "conv_stride": self.stride,
            "receptive_field": self.field,
            "window_frames": self.window,
            "context_frames": self.context,
        }

    def meta(self) -> FeatureMeta:
        meta = super().meta()
        weights = (
            f"RANDOM weights drawn from seed {self.params_.seed} (not pretrained; for testing the pipeline only)"
            if self.directory is None
            else f"pretrained weights from {self.params_.model} (sha256 {self.model_sha256[:12]}…)"
        )
        meta.notes = (
            f"Wav2Vec2Model {self.describe_output()} at {self.rate_hz:g} Hz; {weights}. "
            f"Input {self.sample_rate} Hz mono, normalised with {self.preprocessing} "
            f"(do_normalize={bool(self.feature_extractor.do_normalize)}); t = centre of each "
            f"{1000 * self.field / self.sample_rate:g} ms conv receptive field, hop "
            f"{1000 * self.stride / self.sample_rate:g} ms. Clips longer than {self.params_.chunk_seconds:g} s "
            f"run in windows overlapping by 2 × {self.params_.overlap_seconds:g} s, each frame from the "
            f"middle of a window, with at least {self.params_.overlap_seconds:g} s of context on each side."
        )
        return meta
