"""Speech-like audio for the demo corpus: a small source–filter synthesiser (numpy + scipy).

Source: a glottal pulse train following an F0 contour, with jitter (period perturbation), shimmer
(amplitude perturbation), spectral tilt (a one-pole low-pass: steep for breathy/sad, flat for
tense/angry) and aspiration noise (breathiness). Filter: a cascade of three formant resonators per
vowel, scaled per speaker (vocal-tract length). Each word is one to three syllables with an attack/
decay envelope and a noise burst for its onset consonant; words are separated by pauses.

Emotion drives the voice through `Voice`: F0 level and range, loudness and speaking rate rise with
arousal; anger is tense (flat tilt, little noise), sadness breathy and slow, happiness bright
(formants raised a little, as with spread lips).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

# (F1, F2, F3) in Hz of a few vowels of an adult male voice
VOWELS = np.array(
    [[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240], [660, 1720, 2410]],
    dtype=np.float64,
)
BANDWIDTHS = np.array([80.0, 110.0, 160.0])


@dataclass
class Speaker:
    f0: float  # Hz, habitual pitch
    formant_scale: float  # >1 for a shorter vocal tract


@dataclass
class Voice:
    """How the clip's emotion and arousal shape the voice (arousal a in [-1, 1] comes per syllable)."""

    f0_gain: float  # relative F0 raise per unit arousal
    f0_range: float  # semitone spread of syllable accents
    loudness_db: float  # gain per unit arousal
    rate: float  # syllables per second at arousal 0
    tilt: float  # one-pole coefficient: 0.0 flat (tense) … 0.95 steep (breathy)
    breathiness: float  # aspiration noise level
    brightness: float  # formant scale factor from articulation (smiling raises formants)


@dataclass
class Word:
    word: str
    start: float
    end: float


def _resonator(signal: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    theta = 2 * np.pi * freq / sr
    a = [1.0, -2 * r * np.cos(theta), r * r]
    gain = 1 - r  # keeps levels comparable across formants
    return lfilter([gain], a, signal)


def _glottal_source(f0: np.ndarray, sr: int, rng: np.random.Generator, jitter: float, shimmer: float) -> np.ndarray:
    """Impulses at glottal closures for a per-sample F0 contour, with jitter and shimmer."""
    n = len(f0)
    out = np.zeros(n)
    t = 0.0
    while True:
        period = 1.0 / max(f0[min(int(t * sr), n - 1)], 40.0)
        t += period * (1 + jitter * rng.standard_normal())
        i = int(t * sr)
        if i >= n:
            break
        out[i] = 1.0 + shimmer * rng.standard_normal()
    return out


def syllable(
    duration: float,
    f0_start: float,
    f0_end: float,
    vowel: np.ndarray,
    voice: Voice,
    speaker: Speaker,
    level: float,
    sr: int,
    rng: np.random.Generator,
) -> np.ndarray:
    n = max(int(duration * sr), 16)
    f0 = np.linspace(f0_start, f0_end, n)
    source = _glottal_source(f0, sr, rng, jitter=0.01 + 0.01 * voice.breathiness, shimmer=0.05)
    source = lfilter([1 - voice.tilt], [1, -voice.tilt], source)  # spectral tilt
    source += voice.breathiness * 0.05 * rng.standard_normal(n)
    sig = source
    for f, bw in zip(vowel * speaker.formant_scale * voice.brightness, BANDWIDTHS):
        sig = _resonator(sig, min(f, 0.45 * sr), bw, sr)
    attack, release = int(0.02 * sr), int(0.06 * sr)
    env = np.ones(n)
    env[:attack] = np.linspace(0, 1, min(attack, n))[: min(attack, n)]
    env[-release:] *= np.linspace(1, 0, min(release, n))[-min(release, n):]
    sig = sig * env
    # onset consonant: a short burst of high-passed noise
    burst = int(0.03 * sr)
    noise = lfilter([1, -0.95], [1], rng.standard_normal(burst)) * np.hanning(burst) * 0.02
    sig[:burst] += noise[: min(burst, n)]
    return level * sig / (np.sqrt(np.mean(sig**2)) + 1e-9) * 0.1


def synthesise(
    words: list[str],
    arousal_at: callable,
    voice: Voice,
    speaker: Speaker,
    seconds: float,
    sr: int,
    rng: np.random.Generator,
    long_pause: tuple[float, float] | None = None,
) -> tuple[np.ndarray, list[Word]]:
    """Speak `words` (as many as fit) into a `seconds`-long signal; returns it and word timings.

    `arousal_at(t)` gives the arousal at time t (s); `long_pause` = (start, length) of a silent span.
    """
    n = int(round(seconds * sr))
    out = np.zeros(n)
    timings: list[Word] = []
    t = rng.uniform(0.1, 0.3)
    for word in words:
        a = float(arousal_at(t))
        rate = voice.rate * (1 + 0.25 * a)
        syllables = max(1, min(3, round(len(word) / 3)))
        length = syllables / rate
        if long_pause is not None and t < long_pause[0] + long_pause[1] and t + length > long_pause[0]:
            t = long_pause[0] + long_pause[1]
        if t + length > seconds - 0.1:
            break
        start = t
        for _ in range(syllables):
            a = float(arousal_at(t))
            dur = rng.uniform(0.8, 1.2) / (voice.rate * (1 + 0.25 * a))
            f0 = speaker.f0 * (1 + voice.f0_gain * a) * 2 ** (voice.f0_range * rng.standard_normal() / 12)
            level = 10 ** (voice.loudness_db * a / 20)
            seg = syllable(dur, f0, f0 * rng.uniform(0.85, 1.05), VOWELS[rng.integers(len(VOWELS))], voice, speaker,
                           level, sr, rng)
            i = int(t * sr)
            j = min(n, i + len(seg))
            out[i:j] += seg[: j - i]
            t += dur
        timings.append(Word(word, round(start, 4), round(t, 4)))
        t += rng.uniform(0.06, 0.18)  # pause between words
    out += 1e-4 * rng.standard_normal(n)  # room noise floor, so silence is not digital zero
    return np.tanh(out).astype(np.float32), timings
