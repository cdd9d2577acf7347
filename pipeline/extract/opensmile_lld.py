"""openSMILE low-level descriptors: `egemaps` (eGeMAPSv02, 25-d) and `compare` (ComParE_2016 LLDs +
deltas, 130-d), both at openSMILE's 10 ms hop (100 Hz).

One class, `OpenSmileLld`, runs one or more openSMILE feature levels of one feature set on a clip and
concatenates their columns; the two features are thin subclasses that pick the set and levels:

- `egemaps` (000 §5.2 feeds the model eGeMAPS features): the 25 eGeMAPSv02 LLDs (loudness, spectral
  slopes, MFCC 1–4, F0, jitter, shimmer, HNR, formants…), before any functionals, so `segment` can
  align them to its own grid.
- `compare` (001 §4.2.2: "130 frame-based acoustic features"; 002 §3.2.2: the 65 Interspeech 2013
  ComParE LLDs, 10 ms step): openSMILE's ComParE_2016 set, the numerically fixed update of the
  ComParE 2013 set, level `LowLevelDescriptors` (65) then level `LowLevelDescriptors_Deltas` (their
  65 first-order deltas, same order, names ending `_de`), so column j + 65 is the delta of column j.
  001 extracts with 32 ms windows every 16 ms; openSMILE's published ComParE configuration, used here
  as is, steps 10 ms (as in 002) with 60 ms frames for the voicing descriptors and 20 ms frames for the
  spectral ones. `compare.deltas: false` gives 002's 65 LLDs alone.

  Alignment of the two levels: openSMILE computes the deltas from the same LLD frames (a regression
  over ±2 frames), and the delta level's frame i has the same start as LLD frame i (checked on every
  clip; an ExtractionError if not) and is the delta of LLD frame i (checked in the tests against the
  regression computed from the LLDs). The delta level ends with two more frames than the LLD level
  (the regression flushing its window at the end of input, with no LLD frame of their own); they are
  dropped.

The clip's audio is decoded with PyAV (`pipeline.media.clip_audio`: the clip's window of its media, or
its whole separate audio file — the window rule), so any container or codec works, resampled to the
section's `sample_rate`, and handed to `Smile.process_signal`; the values equal openSMILE's own
`process_file` on the same samples (tested: a whole file; a window of a file against the same window
cut into its own WAV). A whole-file clip decodes exactly as before windows existed. Row times count
from the clip's start (sample 0 of the window).

Rows: one per LLD frame; t is the frame centre, start + half the nominal frame length that
opensmile-python's index reports for the set (eGeMAPSv02: 20 ms; ComParE_2016: 60 ms, that of its
first, voicing, descriptors). openSMILE stretches or cuts the last frame to the signal's end, so its
index length is not used; and the ComParE levels end with a frame whose index start repeats the
previous one (the contour smoother flushing at the end of input, while the 20 ms spectral frames run
one frame longer): such a frame is given its place on the 10 ms grid, the previous start + 10 ms.

Degradations: a frame whose descriptors openSMILE returns as NaN is a row with present=False (values
zero). A signal shorter than one openSMILE frame, for which every row is NaN, is an ExtractionError
naming the file: there is no acoustic information to keep. Digital silence gives finite descriptors
(openSMILE's floor values); under `silence: mask` (the default; `keep` keeps them present) a frame whose
samples are all zero — or, with `silence_dbfs`, whose RMS level is below it — is a row with
present=False (values zero), so a model never takes the floor values of silence for speech.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import opensmile
import pandas as pd
from pydantic import Field

from pipeline.core.config import ON_ERROR_HELP, OnError, Section
from pipeline.core.features import ClipFeatures
from pipeline.corpus.clip_media import clip_audio, clip_audio_label
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError, Extractor
from pipeline.media import silent_steps

TAIL_FRAMES = 3  # openSMILE's flush frames at the end of the input: labels may differ between levels
HOP_S = 0.010  # LLD frame step of the eGeMAPSv02 and ComParE_2016 openSMILE configurations: 100 Hz


class SilenceOptions(Section):
    """What the audio stages (lld, compare; wav2vec2 has the same keys) do with silent steps. The papers
    are silent on silence; `mask` is ours: a model should not learn openSMILE's floor values (or a
    network's response to zeros) as speech."""

    silence: Literal["mask", "keep"] = Field(
        "mask", description="mask: a step whose frame is digital silence (all samples zero), or below "
        "silence_dbfs, is present=False (values zero); keep: rows present, as computed"
    )
    silence_dbfs: float | None = Field(
        None, le=0, description="with mask: also mask frames whose RMS is below this level (dBFS, e.g. -60); "
        "empty: digital silence only"
    )


class LldParams(SilenceOptions):
    """The `lld` section: openSMILE eGeMAPSv02 LLDs (feature `egemaps`)."""

    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    feature_set: Literal["eGeMAPSv02"] = "eGeMAPSv02"
    level: Literal["LowLevelDescriptors"] = "LowLevelDescriptors"
    sample_rate: int = Field(16000, ge=8000, description="audio is resampled to this before openSMILE")


class CompareParams(SilenceOptions):
    """openSMILE ComParE_2016 LLDs + deltas (feature `compare`, 001 §4.2.2, 002 §3.2.2)."""

    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    feature_set: Literal["ComParE_2016"] = Field(
        "ComParE_2016", description="openSMILE's update of the Interspeech 2013 ComParE set (001, 002 cite 2013)"
    )
    deltas: bool = Field(
        True, description="append the 65 LLD deltas: 130-d as in 001 §4.2.2; false: the 65 LLDs of 002 §3.2.2"
    )
    sample_rate: int = Field(16000, ge=8000, description="audio is resampled to this before openSMILE")


class OpenSmileLld(Extractor):
    """openSMILE LLD levels of one feature set, concatenated column-wise, one row per 10 ms frame."""

    modality = "audio"
    learned = False  # a fixed, published feature set
    #: the nominal frame length in opensmile-python's index for this feature set (t = start + half); the
    #: index's own value is used where a clip has more than one frame (the same up to rounding)
    frame_s: ClassVar[float]

    def __init__(self, params: LldParams | CompareParams, feature_set: str, levels: tuple[str, ...]) -> None:
        self.params_ = params
        self.feature_set = feature_set
        self.levels = levels
        self.smiles = [
            opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel[level])
            for level in levels
        ]
        self.smile = self.smiles[0]  # the LLD level: its frames are the rows
        self.columns = [name for smile in self.smiles for name in smile.feature_names]
        self.dim = len(self.columns)
        self.rate_hz = 1.0 / HOP_S

    # ------------------------------------------------------------------------------------------
    def process_signal(self, signal: np.ndarray, sample_rate: int, source: str | Path) -> ClipFeatures:
        """Rows for a mono float32 signal; `source` names it in errors."""
        if signal.size == 0:
            raise ExtractionError(f"{source}: audio holds no samples")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Segment too short")  # reported below instead
            frames = [smile.process_signal(signal, sample_rate) for smile in self.smiles]
        start, end = frame_index_seconds(frames[0])
        n = len(start)
        for level, df in zip(self.levels[1:], frames[1:]):
            # the same frames: as many or more (trailing flush frames, dropped) and the same starts.
            # Rows pair by position; openSMILE's index labels of the last few frames of a level are
            # not reliable (e.g. 48,128 samples: LLD starts …2.92, 2.93, 2.94, 2.94 but delta starts
            # …2.92, 2.92, 2.92, 2.94), so the last TAIL_FRAMES starts are not compared.
            m = max(0, n - TAIL_FRAMES)
            if len(df) < n or not np.array_equal(frame_starts(df)[:m], start[:m]):
                raise ExtractionError(
                    f"{source}: openSMILE {self.feature_set} {level} frames do not line up with its "
                    f"{self.levels[0]} frames ({len(df)} vs {n})"
                )
        values = np.concatenate([df.to_numpy(dtype=np.float32)[:n] for df in frames], axis=1)
        finite = np.all(np.isfinite(values), axis=1)
        if not finite.any():
            raise ExtractionError(
                f"{source}: audio too short for openSMILE {self.feature_set} "
                f"({signal.size / sample_rate * 1000:.0f} ms): every LLD frame is NaN"
            )
        # nominal frame length: that of every frame but the last (stretched or cut to the signal end)
        frame_s = float(np.median(end[:-1] - start[:-1])) if n > 1 else self.frame_s
        t = on_grid(start) + frame_s / 2
        present = finite
        if self.params_.silence == "mask":  # the frame's own samples: frame_s centred on t
            present = finite & ~silent_steps(signal, sample_rate, t, frame_s, self.params_.silence_dbfs)
        return ClipFeatures(t=t, present=present, values=np.where(present[:, None], values, 0.0))

    def process_clip(self, clip: Clip, root: Path) -> ClipFeatures:
        signal = clip_audio(clip, root, self.params_.sample_rate)
        return self.process_signal(signal, self.params_.sample_rate, clip_audio_label(clip, root))

    # ------------------------------------------------------------------------------------------
    def backbone(self) -> tuple[str, bool]:
        # "pretrained" here means a fixed, published feature set: nothing is learned or random
        return f"openSMILE {self.feature_set} {'+'.join(LEVEL_NAMES[lv] for lv in self.levels)}", True

    def params(self) -> dict[str, Any]:
        return {**self.params_.model_dump(mode="json"), "opensmile": opensmile.__version__, "columns": self.columns}

    def notes(self) -> str:
        return (
            f"openSMILE {opensmile.__version__} {self.feature_set} {' + '.join(self.levels)} "
            f"({self.dim}-d, {self.frame_s * 1000:.0f} ms frames every 10 ms, t = frame centre): a fixed "
            f"hand-crafted feature set, not learned weights. NaN frames are present=False; {silence_note(self.params_)}"
        )


def silence_note(params: SilenceOptions) -> str:
    """The silence policy in words (the tables' notes; the report shows `silence` from the params)."""
    if params.silence == "keep":
        return "silent frames kept present (silence: keep)."
    below = f" or below {params.silence_dbfs:g} dBFS" if params.silence_dbfs is not None else ""
    return f"frames of digital silence{below} are present=False (silence: mask)."


LEVEL_NAMES = {"LowLevelDescriptors": "LLD", "LowLevelDescriptors_Deltas": "LLD deltas"}


class EgemapsLld(OpenSmileLld):
    """Feature `egemaps`: eGeMAPSv02 LLDs, 25-d (params.yaml `lld`)."""

    name = "egemaps"
    version = "1"
    frame_s = 0.020

    def __init__(self, params: LldParams) -> None:
        super().__init__(params, params.feature_set, (params.level,))


class CompareLld(OpenSmileLld):
    """Feature `compare`: ComParE_2016 LLDs then their deltas, 130-d (params.yaml `compare`)."""

    name = "compare"
    version = "1"
    frame_s = 0.060

    def __init__(self, params: CompareParams) -> None:
        levels = ("LowLevelDescriptors", "LowLevelDescriptors_Deltas") if params.deltas else ("LowLevelDescriptors",)
        super().__init__(params, params.feature_set, levels)


def frame_index_seconds(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of an openSMILE result's frames in seconds."""
    return (
        df.index.get_level_values("start").total_seconds().to_numpy(),
        df.index.get_level_values("end").total_seconds().to_numpy(),
    )


def frame_starts(df: pd.DataFrame) -> np.ndarray:
    return frame_index_seconds(df)[0]


def on_grid(start: np.ndarray) -> np.ndarray:
    """Frame starts with each repeated (not increasing) start moved to the previous start + HOP_S."""
    start = np.array(start, dtype=np.float64)
    for i in np.flatnonzero(np.diff(start) <= 0) + 1:  # in order, so runs of repeats advance one hop each
        start[i] = start[i - 1] + HOP_S
    return start
