"""wav2vec 2.0 hidden states (feature `wav2vec2`, 50 Hz).

003 §5.2.2 encodes speech with a pre-trained wav2vec 2.0 (facebook/wav2vec2-base-960h) at 50 Hz. Here
the exported representation is the hidden state of transformer layer `wav2vec2.layer` (-1: the last;
0: the input to the transformer, i.e. the projected CNN features after the positional convolution),
`hidden_size`-d. (003 quotes 512-d, which is the CNN feature encoder's output; the paper does not say
which layer it takes.)

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
the file. Whole clips go through the model at once (fine for utterances; attention memory grows with
the square of the length).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import ConfigError, Wav2Vec2Params
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError, Extractor
from pipeline.extract.device import pick_device
from pipeline.extract.hf import load_pretrained, resolve_model_dir
from pipeline.media import read_audio
from pipeline.store import ClipFeatures, FeatureMeta

from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model  # after pipeline.extract.hf: offline

RANDOM = "random"
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


class Wav2Vec2Hidden(Extractor):
    name = "wav2vec2"
    version = "1"
    modality = "audio"

    def __init__(self, params: Wav2Vec2Params, device: torch.device | str | None = None) -> None:
        self.params_ = params
        self.directory: Path | None = None
        if params.model == RANDOM:
            self.model = random_model(params)
            self.feature_extractor = default_feature_extractor()
            self.preprocessing = "wav2vec2-base-960h defaults (random model)"
        else:
            self.directory = resolve_model_dir(params.model, "wav2vec2.model", WHAT)
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
        n_layers = config.num_hidden_layers
        if not -(n_layers + 1) <= params.layer <= n_layers:
            raise ConfigError(
                f"wav2vec2.layer: {params.layer} is out of range for a model with {n_layers} layers "
                f"(0..{n_layers}, or -1..-{n_layers + 1} from the end)"
            )
        self.layer = params.layer
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.stride, self.field = conv_geometry(config)
        self.dim = int(config.hidden_size)
        self.rate_hz = self.sample_rate / self.stride
        self.device = pick_device(device)
        self.model.to(self.device)

    # ------------------------------------------------------------------------------------------
    def normalise(self, signal: np.ndarray) -> np.ndarray:
        """The model input for a mono float32 signal (the feature extractor's normalisation)."""
        inputs = self.feature_extractor(signal, sampling_rate=self.sample_rate, return_tensors="np")
        return np.asarray(inputs["input_values"][0], dtype=np.float32)

    def frame_times(self, n_samples: int) -> np.ndarray:
        """Centre (s) of every CNN frame a signal of `n_samples` yields."""
        n = max(0, (n_samples - self.field) // self.stride + 1)
        return (self.stride * np.arange(n) + self.field / 2) / self.sample_rate

    def process_signal(self, signal: np.ndarray, source: str | Path) -> ClipFeatures:
        """Rows for a mono float32 signal at `self.sample_rate`; `source` names it in errors."""
        if signal.size < self.field:
            raise ExtractionError(
                f"{source}: audio too short for wav2vec2 ({signal.size} samples; one frame needs "
                f"{self.field} = {1000 * self.field / self.sample_rate:.0f} ms)"
            )
        x = torch.from_numpy(self.normalise(signal))[None].to(self.device)
        with torch.inference_mode():
            out = self.model(x, output_hidden_states=True)
        values = out.hidden_states[self.layer][0].float().cpu().numpy()
        t = self.frame_times(signal.size)
        if len(t) != len(values):  # the geometry above must agree with the model's own conv stack
            raise ExtractionError(f"{source}: wav2vec2 gave {len(values)} frames, expected {len(t)}")
        present = np.all(np.isfinite(values), axis=1)
        if not present.all():
            raise ExtractionError(f"{source}: wav2vec2 produced non-finite values in {int((~present).sum())} frames")
        return ClipFeatures(t=t, present=present, values=values)

    def process_clip(self, clip: Clip, root: Path) -> ClipFeatures:
        path = clip.audio(root)
        return self.process_signal(read_audio(path, self.sample_rate), path)

    # ------------------------------------------------------------------------------------------
    def backbone(self) -> tuple[str, bool]:
        c = self.model.config
        shape = f"{c.num_hidden_layers} layers, {c.hidden_size}-d, hidden state {self.layer}"
        if self.directory is None:
            return f"wav2vec2 random config ({shape}, seed {self.params_.seed})", False
        return f"wav2vec2 {self.directory.name} ({shape}) from {self.directory}", True

    def params(self) -> dict[str, Any]:
        return {
            **self.params_.model_dump(mode="json"),
            "model_dir": str(self.directory) if self.directory else None,
            "sample_rate": self.sample_rate,
            "do_normalize": bool(self.feature_extractor.do_normalize),
            "conv_stride": self.stride,
            "receptive_field": self.field,
        }

    def meta(self) -> FeatureMeta:
        meta = super().meta()
        weights = (
            f"RANDOM weights drawn from seed {self.params_.seed} (not pretrained; for testing the pipeline only)"
            if self.directory is None
            else f"pretrained weights from {self.directory}"
        )
        meta.notes = (
            f"Wav2Vec2Model hidden state {self.layer} ({self.dim}-d) at {self.rate_hz:g} Hz; {weights}. "
            f"Input {self.sample_rate} Hz mono, normalised with {self.preprocessing} "
            f"(do_normalize={bool(self.feature_extractor.do_normalize)}); t = centre of each "
            f"{1000 * self.field / self.sample_rate:g} ms conv receptive field, hop "
            f"{1000 * self.stride / self.sample_rate:g} ms."
        )
        return meta
