"""Speech-like audio from a small source–filter synthesiser (numpy + scipy.signal only).

Source: a Rosenberg glottal pulse (flow derivative) driven by a per-sample F0 contour, with jitter
(per-period F0 perturbation), shimmer (per-period amplitude perturbation), aspiration noise gated by
the open phase (breathiness) and a spectral tilt (a one-pole low-pass for a dull, breathy voice; a
pre-emphasis for a pressed, harsh one). The open quotient sets how sharp the glottal closure is, so a
tense voice (small open quotient) has stronger high harmonics.

Filter: a cascade of formant resonators (Klatt-style, unit gain at DC) per segment. Words are
spelled out: each vowel group is a nucleus with the vowel's formants (Peterson & Barney 1952, adult
male averages, scaled per speaker for vocal-tract length); consonants become frication noise
(band-passed), stop closures with bursts, or low-amplitude voiced sonorants. Segment edges are
raised-cosine ramps; the resonators ring into the next few milliseconds.

Prosody: F0 = speaker base x 2^(st/12) with st = style shift + arousal slope x arousal(t) + pitch
accents on stressed syllables + declination over each phrase + a final fall; level in dB and speaking
rate follow the style and arousal(t) the same way. `Style` holds the emotion's voice at full cue
strength; `Style.blend(k)` moves it from neutral towards the emotion by the clip's cue strength k.

`speak` lays out sentences word by word until the clip is full and returns the signal with exact
word timings (the span of the word's segments) and its vowel nuclei (which animate the jaw).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

# Vowel formants F1-F3 (Hz), Peterson & Barney (1952) adult male means, keyed by spelling.
VOWELS: dict[str, tuple[float, float, float]] = {
    "a": (730, 1090, 2440),  # /ɑ/
    "e": (530, 1840, 2480),  # /ɛ/
    "i": (390, 1990, 2550),  # /ɪ/
    "o": (570, 840, 2410),  # /ɔ/
    "u": (640, 1190, 2390),  # /ʌ/
    "y": (270, 2290, 3010),  # /i/
    "ee": (270, 2290, 3010),  # /i/
    "ea": (270, 2290, 3010),
    "oo": (300, 870, 2240),  # /u/
    "ou": (440, 1020, 2240),  # /ʊ/
}
BANDWIDTHS = (80.0, 100.0, 150.0, 250.0)
F4 = 3300.0  # a fixed fourth formant (scaled per speaker) for a fuller spectrum where sr allows

# Consonants by spelling (digraphs first). Fricatives: (low Hz, high Hz, amplitude, voiced).
FRICATIVES = {
    "sh": (2000, 4800, 0.45, False), "ch": (2000, 4800, 0.45, False), "th": (1400, 7000, 0.12, False),
    "s": (3800, 7200, 0.5, False), "c": (3800, 7200, 0.5, False), "x": (3800, 7200, 0.45, False),
    "z": (3800, 7200, 0.3, True), "j": (2000, 4800, 0.3, True), "f": (1200, 7000, 0.15, False),
    "v": (1200, 7000, 0.1, True),
}
STOPS = {  # burst band (low Hz, high Hz), voiced
    "p": (400, 2500, False), "b": (400, 2500, True), "t": (3000, 6500, False), "d": (3000, 6500, True),
    "k": (1500, 3500, False), "g": (1500, 3500, True), "q": (1500, 3500, False),
}
SONORANTS = {  # formants (Hz), amplitude relative to a vowel
    "ng": ((250, 2000, 2600), 0.3), "m": ((250, 1100, 2200), 0.35), "n": ((250, 1700, 2600), 0.35),
    "l": ((360, 1100, 2700), 0.5), "r": ((420, 1300, 1600), 0.5), "w": ((300, 700, 2200), 0.5),
    "y": ((270, 2200, 3000), 0.5),
}
FUNCTION_WORDS = frozenset(
    "a an the i you we he she it they is am are was to of and or in on at for my your our me so "
    "this that be will".split()
)
_SYLLABLE = re.compile(r"([^aeiouy]*)([aeiouy]+)")
_CONSONANT = re.compile(r"sh|ch|th|ng|ck|ph|wh|qu|.")

REFERENCE_LEVEL_DB = -28.0  # vowel RMS of a neutral voice at arousal 0, dB re full scale
RAW_VOWEL_RMS = 1.33  # RMS of a neutral vowel before the level gain (measured)


@dataclass(frozen=True)
class Voice:
    """Who speaks: fixed per speaker."""

    f0: float  # habitual pitch, Hz
    formant_scale: float  # >1 for a shorter vocal tract
    breathiness: float = 0.0  # added to the style's aspiration
    rate: float = 1.0  # habitual speaking-rate factor
    level_db: float = 0.0  # habitual loudness offset


@dataclass(frozen=True)
class Style:
    """How an emotion colours the voice, at full cue strength."""

    f0_shift: float = 0.0  # semitones
    f0_arousal: float = 4.0  # semitones per unit arousal
    accent: float = 2.5  # semitones of pitch accents (F0 range and variability)
    level_db: float = 0.0  # on top of what the voice quality itself adds (a pressed voice is louder)
    level_arousal_db: float = 7.0  # dB per unit arousal
    rate: float = 1.0  # speaking-rate factor
    rate_arousal: float = 0.2  # relative rate change per unit arousal
    open_quotient: float = 0.6  # share of the period the glottis is open
    aspiration: float = 0.04  # breath noise relative to the pulse
    tilt: float = 0.35  # >0: one-pole low-pass (dull, breathy); <0: pre-emphasis (pressed, harsh)
    jitter: float = 0.01  # relative per-period F0 perturbation (sd)
    shimmer: float = 0.05  # relative per-period amplitude perturbation (sd)
    brightness: float = 1.0  # formant scale from articulation (spread lips raise formants)

    def blend(self, target: "Style", k: float) -> "Style":
        """This style moved a share k in [0, 1] of the way towards `target`."""
        mix = {f.name: (1 - k) * getattr(self, f.name) + k * getattr(target, f.name) for f in fields(self)}
        return replace(self, **mix)


# The demo's four emotions. Arousal itself comes per sample from the clip's arousal curve; these add
# what a speaker's voice does beyond it (Scherer 2003's profiles, coarsely).
STYLES: dict[str, Style] = {
    "neutral": Style(),
    "happy": Style(f0_shift=2.5, accent=5.0, level_db=1.5, rate=1.08, open_quotient=0.55, aspiration=0.03,
                   tilt=0.15, jitter=0.012, shimmer=0.05, brightness=1.05),
    "angry": Style(f0_shift=1.5, accent=3.5, level_db=2.0, rate=1.12, open_quotient=0.38, aspiration=0.02,
                   tilt=-0.45, jitter=0.02, shimmer=0.10, brightness=0.99),
    "sad": Style(f0_shift=-2.0, accent=1.0, level_db=-2.0, rate=0.78, open_quotient=0.75, aspiration=0.16,
                 tilt=0.7, jitter=0.012, shimmer=0.07, brightness=0.98),
}


@dataclass
class Segment:
    start: float  # s
    dur: float  # s
    voice: float  # amplitude of the formant-filtered glottal source
    noise: float  # amplitude of band-passed noise (frication, bursts)
    formants: tuple[float, ...] | None = None  # for the voiced part (and aspiration)
    band: tuple[float, float] | None = None  # for the noise part; None: noise through the formants
    nucleus: bool = False


@dataclass
class Utterance:
    audio: np.ndarray  # float32 in [-1, 1]
    words: list[dict]  # [{word, start, end}] in order, seconds
    nuclei: list[tuple[float, float]]  # vowel nuclei (start, end), seconds


# ----------------------------------------------------------------------------------------------
# Filters
# ----------------------------------------------------------------------------------------------


def _resonators(formants: Sequence[float], scale: float, sr: int) -> np.ndarray:
    """Second-order sections of a cascade of resonators with unit gain at DC (Klatt 1980)."""
    rows = []
    for f, bw in zip(list(formants) + [F4], BANDWIDTHS):
        f = f * scale
        if f >= 0.45 * sr:
            continue
        r = np.exp(-np.pi * bw / sr)
        c = -2 * r * np.cos(2 * np.pi * f / sr)
        rows.append([1 + c + r * r, 0.0, 0.0, 1.0, c, r * r])
    return np.array(rows)


@lru_cache(maxsize=64)
def _bandpass(lo: float, hi: float, sr: int) -> np.ndarray:
    hi = min(hi, 0.45 * sr)
    lo = min(lo, 0.6 * hi)
    return butter(2, [lo, hi], btype="bandpass", fs=sr, output="sos")


# ----------------------------------------------------------------------------------------------
# Layout: words -> segments
# ----------------------------------------------------------------------------------------------


def syllables(word: str) -> tuple[list[tuple[str, str]], str]:
    """(onset consonants, vowel group) per syllable, and the word-final coda. A silent final 'e'
    after a consonant joins the coda ('made' -> [('m', 'a')], 'de')."""
    parts = _SYLLABLE.findall(word)
    coda = word[sum(len(o) + len(v) for o, v in parts):]
    if len(parts) > 1 and parts[-1] == (parts[-1][0], "e") and parts[-1][0] and len(word) > 3:
        coda = parts[-1][0] + "e" + coda
        parts = parts[:-1]
    if not parts:  # no vowel letter ("hmm"): one schwa-like syllable
        return [(word, "u")], ""
    return parts, coda


def _consonants(cluster: str, t: float, speed: float, next_formants, out: list[Segment]) -> float:
    """Append segments for a consonant cluster starting at t; return the end time."""
    for c in _CONSONANT.findall(cluster.replace("e", "")):
        c = {"ck": "k", "ph": "f", "wh": "w", "qu": "k"}.get(c, c)
        if c in SONORANTS:
            formants, amp = SONORANTS[c]
            d = 0.06 / speed
            out.append(Segment(t, d, amp, 0.0, formants))
        elif c in FRICATIVES:
            lo, hi, amp, voiced = FRICATIVES[c]
            d = 0.075 / speed
            out.append(Segment(t, d, 0.25 if voiced else 0.0, amp, (250, 1500, 2500) if voiced else None, (lo, hi)))
        elif c in STOPS:
            lo, hi, voiced = STOPS[c]
            closure, burst = 0.045 / speed, 0.015
            if voiced:  # a voice bar during the closure
                out.append(Segment(t, closure, 0.12, 0.0, (200, 1000, 2400)))
            out.append(Segment(t + closure, burst, 0.0, 0.6, None, (lo, hi)))
            d = closure + burst
        elif c == "h":
            d = 0.05 / speed
            out.append(Segment(t, d, 0.0, 0.35, next_formants, None))
        else:  # anything else (digits, apostrophes): a short pause
            d = 0.03 / speed
        t += d
    return t


def _layout_word(word: str, t: float, speed: float, stressed: bool, final: bool, rng) -> tuple[list[Segment], float]:
    parts, coda = syllables(word)
    segs: list[Segment] = []
    for i, (onset, vowel) in enumerate(parts):
        formants = VOWELS.get(vowel[:2], VOWELS.get(vowel[0], VOWELS["u"]))
        t = _consonants(onset, t, speed, formants, segs)
        d = 0.095 / speed * rng.uniform(0.85, 1.15)
        d *= 1.3 if (i == 0 and stressed) else 0.8 if not stressed else 1.0
        d *= 1.35 if (final and i == len(parts) - 1) else 1.0
        if len(vowel) > 1 and vowel[:2] not in VOWELS and vowel[1] in VOWELS:  # diphthong: two halves
            segs.append(Segment(t, d / 2, 1.0, 0.0, formants, nucleus=True))
            segs.append(Segment(t + d / 2, d / 2, 0.9, 0.0, VOWELS[vowel[1]], nucleus=True))
        else:
            segs.append(Segment(t, d, 1.0 if (i == 0 and stressed) else 0.8, 0.0, formants, nucleus=True))
        t += d
    if coda:
        t = _consonants(coda, t, speed, None, segs)
    return segs, t


# ----------------------------------------------------------------------------------------------
# Synthesis
# ----------------------------------------------------------------------------------------------


def _glottal_source(f0: np.ndarray, style: Style, breathiness: float, sr: int, rng) -> np.ndarray:
    """Rosenberg glottal flow derivative (w.r.t. phase, so its level does not depend on F0), with
    jitter, shimmer and aspiration noise in the open phase, then spectral tilt."""
    phase0 = np.cumsum(f0 / sr)
    n_periods = int(phase0[-1]) + 2
    jitter = 1.0 + style.jitter * rng.standard_normal(n_periods)
    shimmer = np.clip(1.0 + style.shimmer * rng.standard_normal(n_periods), 0.2, None)
    k = phase0.astype(np.int64)
    phase = np.cumsum(f0 * jitter[k] / sr)
    k = phase.astype(np.int64)
    frac = phase - k
    oq = float(np.clip(style.open_quotient, 0.2, 0.95))
    tp, tn = 0.65 * oq, 0.35 * oq  # opening and closing phase
    src = np.zeros_like(frac)
    opening = frac < tp
    closing = (frac >= tp) & (frac < tp + tn)
    src[opening] = 0.5 * np.pi / tp * np.sin(np.pi * frac[opening] / tp)
    src[closing] = -0.5 * np.pi / tn * np.sin(0.5 * np.pi * (frac[closing] - tp) / tn)
    src *= shimmer[np.minimum(k, n_periods - 1)] * 0.25
    asp = (style.aspiration + breathiness) * rng.standard_normal(len(frac)) * np.where(frac < tp + tn, 1.0, 0.4)
    src = src + asp * 1.5
    a = float(np.clip(style.tilt, -0.9, 0.95))
    if a > 0:
        src = lfilter([1 - a], [1, -a], src)
    elif a < 0:
        src = lfilter([1, a], [1 + a], src)  # pre-emphasis with unit gain at DC
    return src


def _f0_contour(
    t: np.ndarray, voice: Voice, style: Style, arousal: np.ndarray, accents: list[tuple[float, float]],
    phrases: list[tuple[float, float]], rng,
) -> np.ndarray:
    st = style.f0_shift + style.f0_arousal * arousal
    for centre, height in accents:
        st += height * np.exp(-0.5 * ((t - centre) / 0.07) ** 2)
    for p0, p1 in phrases:  # declination and a final fall
        inside = (t >= p0) & (t < p1 + 0.15)
        st[inside] -= 2.0 * (t[inside] - p0) / max(p1 - p0, 0.2)
        st -= 2.5 * np.exp(-0.5 * ((t - p1) / 0.1) ** 2)
    # slow wander: a few random low-frequency sinusoids (0.3 st)
    for _ in range(3):
        st += 0.3 * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t + rng.uniform(0, 2 * np.pi))
    return voice.f0 * 2.0 ** (st / 12.0)


def speak(
    sentences: Sequence[Sequence[str]],
    voice: Voice,
    style: Style,
    arousal: Callable[[np.ndarray], np.ndarray],
    duration: float,
    sr: int,
    rng: np.random.Generator,
    long_pause: tuple[float, float] | None = None,
) -> Utterance:
    """Speak `sentences` (lists of lower-case words), as many words as fit, into `duration` seconds.

    `arousal(t)` is the arousal in [-1, 1] at times t (s); `style` is already blended by the clip's
    cue strength, and arousal acts through the style's arousal slopes. `long_pause` = (after, length):
    the first word boundary after `after` seconds is followed by `length` seconds of silence.
    """
    n = int(round(duration * sr))
    end_limit = duration - 0.08
    t = float(rng.uniform(0.1, 0.3))
    segs: list[Segment] = []
    words: list[dict] = []
    accents: list[tuple[float, float]] = []
    phrases: list[tuple[float, float]] = []
    pause_done = long_pause is None
    full = False
    for sentence in sentences:
        phrase_start = None
        for j, word in enumerate(sentence):
            speed = voice.rate * style.rate * (1.0 + style.rate_arousal * float(arousal(np.array([t]))[0]))
            speed = max(speed, 0.4)
            stressed = word not in FUNCTION_WORDS
            wsegs, t_end = _layout_word(word, t, speed, stressed, j == len(sentence) - 1, rng)
            if t_end > end_limit:
                full = True
                break
            segs += wsegs
            words.append({"word": word, "start": round(wsegs[0].start, 4), "end": round(t_end, 4)})
            if phrase_start is None:
                phrase_start = wsegs[0].start
            if stressed:
                nucleus = next(s for s in wsegs if s.nucleus)
                accents.append((nucleus.start + 0.5 * nucleus.dur, style.accent * rng.uniform(0.4, 1.0)))
            gap = rng.uniform(0.01, 0.04) if rng.uniform() < 0.7 else rng.uniform(0.08, 0.2)
            t = t_end + gap / speed
            if not pause_done and t >= long_pause[0]:
                t += long_pause[1]
                pause_done = True
        if phrase_start is not None:
            phrases.append((phrase_start, words[-1]["end"]))
        if full:
            break
        t += rng.uniform(0.25, 0.5)  # between sentences
        if not pause_done and t >= long_pause[0]:
            t += long_pause[1]
            pause_done = True

    times = np.arange(n) / sr
    a = np.asarray(arousal(times), np.float64)
    f0 = _f0_contour(times, voice, style, a, accents, phrases, rng)
    source = _glottal_source(f0, style, voice.breathiness, sr, rng)
    noise = rng.standard_normal(n)
    out = np.zeros(n)
    ramp, tail = int(0.012 * sr), int(0.02 * sr)
    scale = voice.formant_scale * style.brightness
    for s in segs:
        i0, i1 = int(s.start * sr), min(int((s.start + s.dur) * sr), n)
        j1 = min(i1 + tail, n)
        if i1 <= i0:
            continue
        env = np.ones(j1 - i0)
        r = min(ramp, (i1 - i0) // 2)
        if r:
            env[:r] = 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
        if j1 > i1:
            env[i1 - i0:] = 0.5 + 0.5 * np.cos(np.pi * np.arange(j1 - i1) / (j1 - i1))
        part = np.zeros(j1 - i0)
        if s.voice and s.formants is not None:
            part += s.voice * sosfilt(_resonators(s.formants, scale, sr), source[i0:j1])
        if s.noise:
            if s.band is not None:
                part += s.noise * 0.3 * sosfilt(_bandpass(*s.band, sr), noise[i0:j1])
            elif s.formants is not None:  # /h/: breath through the next vowel's tract
                part += s.noise * 0.3 * sosfilt(_resonators(s.formants, scale, sr), noise[i0:j1])
        out[i0:j1] += part * env
    level_db = REFERENCE_LEVEL_DB + voice.level_db + style.level_db + style.level_arousal_db * a
    out *= 10.0 ** (level_db / 20.0) / RAW_VOWEL_RMS
    out += 1e-4 * rng.standard_normal(n)  # room noise, so pauses are not digital silence
    knee = 0.7  # soft limiter above the knee; below it the signal is untouched
    mag = np.abs(out)
    out = np.where(mag < knee, out, np.sign(out) * (knee + (1 - knee) * np.tanh((mag - knee) / (1 - knee))))
    nuclei = [(s.start, s.start + s.dur) for s in segs if s.nucleus]
    return Utterance(out.astype(np.float32), words, nuclei)
