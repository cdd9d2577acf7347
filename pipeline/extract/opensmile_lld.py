"""openSMILE eGeMAPSv02 low-level descriptors (feature `egemaps`, 25-d, 100 Hz).

000 §5.2 feeds the model eGeMAPS features; here they are the 25 eGeMAPSv02 LLDs (loudness, spectral
slopes, MFCC 1–4, F0, jitter, shimmer, HNR, formants…) at openSMILE's 10 ms hop, before any
functionals, so `segment` can align them to its own grid. The clip's audio is decoded with PyAV
(`read_audio`), so any container or codec works, resampled to `lld.sample_rate`, and handed to
`Smile.process_signal`.

Rows: one per LLD frame; t is the frame centre, start + half the nominal frame length. openSMILE
frames are 20 ms long every 10 ms, except the last one, which opensmile-python stretches or cuts to
the signal's end, so its own index midpoint would fall off the 100 Hz grid; the nominal length (that
of every other frame) is used for it too.

Degradations: a frame whose descriptors openSMILE returns as NaN is a row with present=False (values
zero). A signal shorter than one openSMILE frame, for which every row is NaN, is an ExtractionError
naming the file: there is no acoustic information to keep.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import opensmile
import pandas as pd

from pipeline.config import LldParams
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError, Extractor
from pipeline.media import read_audio
from pipeline.store import ClipFeatures, FeatureMeta

HOP_S = 0.010  # eGeMAPSv02 LLD frame step in its openSMILE config (20 ms frames; 60 ms windows for F0): 100 Hz


class EgemapsLld(Extractor):
    name = "egemaps"
    version = "1"
    modality = "audio"

    def __init__(self, params: LldParams) -> None:
        self.params_ = params
        self.smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet[params.feature_set],
            feature_level=opensmile.FeatureLevel[params.level],
        )
        self.columns = list(self.smile.feature_names)
        self.dim = len(self.columns)  # 25 for eGeMAPSv02 LLDs
        self.rate_hz = 1.0 / HOP_S

    # ------------------------------------------------------------------------------------------
    def process_signal(self, signal: np.ndarray, sample_rate: int, source: str | Path) -> ClipFeatures:
        """Rows for a mono float32 signal; `source` names it in errors."""
        if signal.size == 0:
            raise ExtractionError(f"{source}: audio holds no samples")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Segment too short")  # reported below instead
            df = self.smile.process_signal(signal, sample_rate)
        values = df.to_numpy(dtype=np.float32)
        finite = np.all(np.isfinite(values), axis=1)
        if not finite.any():
            raise ExtractionError(
                f"{source}: audio too short for openSMILE {self.params_.feature_set} "
                f"({signal.size / sample_rate * 1000:.0f} ms): every LLD frame is NaN"
            )
        start, end = frame_index_seconds(df)
        # nominal frame length: that of every frame but the last (stretched or cut to the signal end)
        frame_s = float(np.median(end[:-1] - start[:-1])) if len(start) > 1 else 2 * HOP_S
        t = start + frame_s / 2
        return ClipFeatures(t=t, present=finite, values=np.where(finite[:, None], values, 0.0))

    def process_clip(self, clip: Clip, root: Path) -> ClipFeatures:
        path = clip.audio(root)
        signal = read_audio(path, self.params_.sample_rate)
        return self.process_signal(signal, self.params_.sample_rate, path)

    # ------------------------------------------------------------------------------------------
    def backbone(self) -> tuple[str, bool]:
        # "pretrained" here means a fixed, published feature set: nothing is learned or random
        return f"openSMILE {self.params_.feature_set} LLD", True

    def params(self) -> dict[str, Any]:
        return {**self.params_.model_dump(mode="json"), "opensmile": opensmile.__version__, "columns": self.columns}

    def meta(self) -> FeatureMeta:
        meta = super().meta()
        meta.learned = False
        meta.notes = (
            f"openSMILE {opensmile.__version__} {self.params_.feature_set} {self.params_.level} "
            f"({self.dim}-d, 20 ms frames every 10 ms, t = frame centre): a fixed hand-crafted feature "
            f"set, not learned weights. NaN frames are present=False."
        )
        return meta


def frame_index_seconds(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of an openSMILE result's frames in seconds."""
    return (
        df.index.get_level_values("start").total_seconds().to_numpy(),
        df.index.get_level_values("end").total_seconds().to_numpy(),
    )
