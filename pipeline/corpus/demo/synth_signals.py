"""MuSe-style biosignals for the demo corpus: ECG, RESP, BPM and EDA, one CSV per clip.

Ulm-TSST (MuSe-Stress 2021/2022) records ECG, respiration (RESP), heart rate (BPM) and EDA; the
challenge packages ship them, like every feature, as `<id>.csv` with a `timestamp` column in ms and a
`segment_id` column, sampled at the 2 Hz of the annotations (000 §5.2: "All features are aligned with
annotations; that is, they are sampled at a rate of 2 Hz"; ECG, RESP and BPM form its physiological
input). The demo writes the same layout at the corpus' label times (`corpus.label_rate_hz`, 2 Hz by
default): timestamp, segment_id (1: one segment per clip), ECG, RESP, BPM, EDA.

What the signals carry (loosely, so that the feature helps without being decisive):
- BPM (beats per minute): the speaker's resting rate (62–80) + 12 × arousal + a per-clip offset
  (σ 3) + noise (σ 1.5).
- EDA (µS, skin conductance): the speaker's tonic level (1.5–8) + 1.2 × arousal 1.5 s earlier (skin
  conductance lags arousal) + skin conductance responses (more of them when aroused) + noise.
- RESP (a.u., breathing belt): breathing at the speaker's rate (0.2–0.3 Hz), faster (+25 % per unit
  of arousal) and shallower when aroused, sampled at the timestamps.
- ECG (mV): a P-QRS-T beat template at the BPM, sampled at the timestamps as a plain 2 Hz downsample
  of the raw signal would: nearly noise at this rate, as in the challenge data.
About 10 % of clips lose sensor contact for 1–2 s: those rows are empty (the importer marks them
present=False). Everything is drawn from the clip's own generator, so each clip's file is a function
of the corpus seed and the clip alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

COLUMNS = ("ECG", "RESP", "BPM", "EDA")
FINE_HZ = 100.0  # the signals are synthesised on this grid, then sampled at the timestamps
DROPOUT_SHARE = 0.10
# P, Q, R, S, T waves of one beat: (phase in the beat, amplitude in mV, width in beat phase)
BEAT = ((0.20, 0.15, 0.025), (0.37, -0.12, 0.010), (0.40, 1.0, 0.012), (0.43, -0.22, 0.010), (0.70, 0.30, 0.050))


@dataclass(frozen=True)
class Physiology:
    """A speaker's resting physiology."""

    rest_bpm: float
    eda_level: float
    resp_hz: float
    resp_amp: float
    ecg_gain: float


def speaker_physiology(seed: int, speaker_index: int) -> Physiology:
    rng = np.random.default_rng([seed, 5, speaker_index])
    return Physiology(
        rest_bpm=float(rng.uniform(62, 80)),
        eda_level=float(rng.uniform(1.5, 8.0)),
        resp_hz=float(rng.uniform(0.2, 0.3)),
        resp_amp=float(rng.uniform(0.6, 1.2)),
        ecg_gain=float(rng.uniform(0.8, 1.4)),
    )


def beat(phase: np.ndarray) -> np.ndarray:
    """ECG template (mV) at a phase in [0, 1) of the beat."""
    return sum(a * np.exp(-0.5 * ((phase - c) / w) ** 2) for c, a, w in BEAT)


def synthesise_biosignals(
    t: np.ndarray, arousal: Callable[[np.ndarray], np.ndarray], phys: Physiology, rng: np.random.Generator, seconds: float
) -> dict[str, np.ndarray]:
    """The four signals at times `t` (s) for a clip whose arousal curve is `arousal`; NaN where the
    sensor lost contact."""
    fine = np.arange(int(np.ceil(max(seconds, t[-1]) * FINE_HZ)) + 1) / FINE_HZ
    a = arousal(fine)
    at = np.searchsorted(fine, t - 1e-9)  # the fine sample at each timestamp
    bpm = phys.rest_bpm + 12.0 * a + rng.normal(0, 3.0)
    ecg = phys.ecg_gain * beat((rng.uniform() + np.cumsum(bpm / 60.0) / FINE_HZ) % 1.0)
    breath = phys.resp_hz * (1.0 + 0.25 * a)
    resp = phys.resp_amp * (1.0 - 0.2 * a) * np.sin(2 * np.pi * (rng.uniform() + np.cumsum(breath) / FINE_HZ))
    eda = phys.eda_level + 1.2 * arousal(fine - 1.5)
    for _ in range(int(rng.poisson(1.0 + 2.0 * max(float(a.mean()), 0.0)))):  # skin conductance responses
        onset, amp = rng.uniform(-2.0, seconds), rng.uniform(0.2, 0.8)
        after = np.clip(fine - onset, 0, None)
        eda = eda + amp * (1 - np.exp(-after / 0.7)) * np.exp(-after / 3.0)
    n = len(t)
    out = {
        "ECG": ecg[at] + rng.normal(0, 0.03, n),
        "RESP": resp[at] + rng.normal(0, 0.05, n),
        "BPM": bpm[at] + rng.normal(0, 1.5, n),
        "EDA": np.maximum(eda[at] + rng.normal(0, 0.02, n), 0.05),
    }
    if rng.uniform() < DROPOUT_SHARE:  # electrodes lose contact for 1-2 s
        start = rng.uniform(0, max(seconds - 1.0, 0.0))
        lost = (t >= start) & (t < start + rng.uniform(1.0, 2.0))
        for v in out.values():
            v[lost] = np.nan
    return out


def biosignals_csv(t: np.ndarray, signals: dict[str, np.ndarray]) -> str:
    """MuSe layout: timestamp (ms), segment_id, then the signals; empty cells where NaN."""
    digits = {"ECG": 4, "RESP": 4, "BPM": 2, "EDA": 4}

    def cell(v: float, d: int) -> str:
        return "" if np.isnan(v) else f"{v:.{d}f}"

    lines = ["timestamp,segment_id," + ",".join(COLUMNS)]
    for i, ms in enumerate(np.round(np.asarray(t) * 1000).astype(np.int64)):
        lines.append(f"{ms},1," + ",".join(cell(float(signals[c][i]), digits[c]) for c in COLUMNS))
    return "\n".join(lines) + "\n"
