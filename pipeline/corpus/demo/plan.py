"""The demo corpus' plan: everything random about the speakers and each clip (emotion, arousal and
valence curves, cue strengths, wording, face-out-of-frame / occluded spans, long pauses), drawn up front
from `corpus.seed`: cheap, deterministic, no media. `render` turns a plan into files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.corpus.demo.params import CorpusParams
from pipeline.corpus.demo.synth_audio import Voice
from pipeline.corpus.demo.synth_face import Look

CLASSES = ["neutral", "happy", "angry", "sad"]
BASE_AV = {"neutral": (-0.15, 0.0), "happy": (0.5, 0.6), "angry": (0.6, -0.55), "sad": (-0.55, -0.5)}
CUE_RANGE = (0.05, 1.0)  # per-clip cue strength of face and voice
TEXT_CUE_SHARE = 0.5  # share of emotional clips whose wording carries the emotion
NO_TRANSCRIPT_SHARE = 0.10
OUT_OF_FRAME_SHARE = 0.25
OCCLUDED_SHARE = 0.15
LONG_PAUSE_SHARE = 0.25
# IEMOCAP-style sessions: each of IEMOCAP's 5 sessions is one female and one male actor (003 §5.1), so
# the demo puts two consecutive speakers (a low, even-numbered voice and a high, odd-numbered one) in
# a session; leave-one-session-out (segment.partition: leave_one_group_out, group session) runs on it
SPEAKERS_PER_SESSION = 2

# Sentences: the words that carry the emotion come early, so a clip cut short keeps them.
SENTENCES: dict[str, list[str]] = {
    "neutral": [
        "the meeting starts at nine tomorrow",
        "please put the folder on the table",
        "the train leaves from platform four",
        "we will talk about the report later",
        "the window is next to the door",
        "i will call you after lunch",
        "the jacket is in the blue bag",
        "turn left at the second street",
        "the shop closes at six today",
        "there are three chairs in the room",
    ],
    "happy": [
        "wonderful news we won the prize",
        "i love this lovely sunny place",
        "great job this is brilliant",
        "what a happy and joyful day",
        "thank you so much this is fantastic",
        "we had so much fun together",
    ],
    "angry": [
        "stop it i hate this nonsense",
        "this is outrageous and unacceptable",
        "get out of my way right now",
        "you never listen to me",
        "how dare you lie to me again",
        "i am furious about this mess",
    ],
    "sad": [
        "i miss them so much tonight",
        "i feel lonely and lost again",
        "nothing will ever be the same",
        "we lost her last winter",
        "i cried all night alone",
        "it hurts and i feel hopeless",
    ],
    "negative": [
        "this is terrible and awful",
        "what a horrible painful day",
        "everything went wrong today",
        "this is the worst news ever",
    ],
}


class CorpusError(PipelineError):
    """The demo corpus cannot be generated with these settings or written here."""


# ----------------------------------------------------------------------------------------------
# Plan: everything random about a clip, drawn up front (cheap, deterministic, no media)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """A smooth curve in [-1, 1]: base + a few slow sinusoids (all below `label_rate_hz / 2`)."""

    base: float
    amps: tuple[float, ...]
    freqs: tuple[float, ...]
    phases: tuple[float, ...]

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, np.float64)
        x = np.full(t.shape, self.base)
        for a, f, p in zip(self.amps, self.freqs, self.phases):
            x = x + a * np.sin(2 * np.pi * f * t + p)
        return np.clip(x, -1.0, 1.0)

    @classmethod
    def draw(cls, base: float, max_freq: float, rng: np.random.Generator) -> "Curve":
        f_hi = min(0.5, 0.45 * max_freq)
        return cls(
            base=float(np.clip(base + rng.normal(0, 0.07), -0.95, 0.95)),
            amps=tuple(float(a) for a in rng.uniform(0.04, 0.12, 3)),
            freqs=tuple(float(f) for f in rng.uniform(0.05, f_hi, 3)),
            phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, 3)),
        )


@dataclass(frozen=True)
class Span:
    """Frames [start, end) where the face is fully out of the frame or covered by an occluder."""

    kind: str  # 'out_of_frame' | 'occluded'
    start: int
    end: int
    ramp: int = 0  # frames on each side where the head moves out/in (partly visible)

    def frames(self) -> range:
        return range(self.start, self.end)


@dataclass
class ClipPlan:
    index: int
    clip_id: str
    speaker: str
    speaker_index: int
    emotion: str
    arousal: Curve
    valence: Curve
    face_cue: float
    voice_cue: float
    text_kind: str | None  # None: no transcript; 'neutral'; or the wording's emotion bank
    sentences: list[list[str]]
    spans: list[Span] = field(default_factory=list)
    long_pause: tuple[float, float] | None = None
    entropy: tuple[int, ...] = ()

    @property
    def session(self) -> str:
        return session_of(self.speaker_index)

    def rng(self, stream: int) -> np.random.Generator:
        """Independent generators per use (0: speech, 1: head and light, 2: voice nuisance,
        3: face nuisance), so changing how one is used leaves the others as they were."""
        return np.random.default_rng(list(self.entropy) + [stream])


def session_of(speaker_index: int) -> str:
    """The session of a speaker: speakers 0–1 → 'Ses01', 2–3 → 'Ses02', … (an odd last speaker alone)."""
    return f"Ses{speaker_index // SPEAKERS_PER_SESSION + 1:02d}"


def n_frames(params: CorpusParams) -> int:
    return int(round(params.seconds * params.fps))


def label_times(params: CorpusParams) -> np.ndarray:
    """t = k / label_rate_hz from 0 to the clip's end inclusive (2 s at 2 Hz: 0, 0.5, …, 2.0)."""
    n = int(np.floor(params.seconds * params.label_rate_hz + 1e-9)) + 1
    return np.arange(n) / params.label_rate_hz


def _exact_share(
    n: int, share: float, rng: np.random.Generator, exclude: set[int] = frozenset(), at_least: int = 1
) -> set[int]:
    """round(share * n) indices (at least `at_least` when n allows), drawn outside `exclude`."""
    pool = [i for i in range(n) if i not in exclude]
    k = min(len(pool), max(at_least, int(round(share * n))))
    return set(int(i) for i in rng.permutation(pool)[:k])


def _span(kind: str, frames: int, fps: int, rng: np.random.Generator) -> Span | None:
    ramp = max(1, int(round(0.2 * fps)))
    length = max(2, int(round(rng.uniform(0.15, 0.3) * frames)))
    lo, hi = ramp + 1, frames - length - ramp - 1
    if hi < lo:
        return None
    start = int(rng.integers(lo, hi + 1))
    return Span(kind, start, start + length, ramp if kind == "out_of_frame" else 0)


def _sentences(kind: str, rng: np.random.Generator) -> list[list[str]]:
    """Enough sentences to fill a clip; an emotional clip opens with an emotional sentence."""
    def pick(bank: str) -> list[str]:
        pool = SENTENCES[bank]
        return pool[int(rng.integers(len(pool)))].split()

    if kind == "neutral":
        return [pick("neutral") for _ in range(4)]
    out = [pick(kind)]
    for _ in range(3):
        out.append(pick(kind) if rng.uniform() < 0.5 else pick("neutral"))
    return out


def plan_corpus(params: CorpusParams) -> list[ClipPlan]:
    """Every clip's plan, deterministic from `params` (no media is rendered)."""
    if params.width % 2 or params.height % 2:
        raise CorpusError(
            f"corpus.width and corpus.height must be even for H.264 yuv420p, got {params.width}x{params.height}"
        )
    rng = np.random.default_rng([params.seed, 0])
    n_clips = params.speakers * params.clips_per_speaker
    emotions: list[str] = []
    for s in range(params.speakers):
        # rotate the start so counts stay balanced over the corpus when clips_per_speaker % 4 != 0
        own = [CLASSES[(s + j) % len(CLASSES)] for j in range(params.clips_per_speaker)]
        emotions += [own[i] for i in rng.permutation(len(own))]
    no_text = _exact_share(n_clips, NO_TRANSCRIPT_SHARE, rng)
    text_cue: set[int] = set()
    for emotion in CLASSES[1:]:
        idx = [i for i, e in enumerate(emotions) if e == emotion and i not in no_text]
        k = int(round(TEXT_CUE_SHARE * len(idx)))
        text_cue |= set(int(i) for i in rng.permutation(idx)[:k])
    out_of_frame = _exact_share(n_clips, OUT_OF_FRAME_SHARE, rng)
    occluded = _exact_share(n_clips, OCCLUDED_SHARE, rng, exclude=out_of_frame)
    long_pause = _exact_share(n_clips, LONG_PAUSE_SHARE, rng, at_least=0)

    plans = []
    frames = n_frames(params)
    for i, emotion in enumerate(emotions):
        s, c = divmod(i, params.clips_per_speaker)
        crng = np.random.default_rng([params.seed, 2, i])
        a0, v0 = BASE_AV[emotion]
        if i in text_cue:
            bank = emotion if emotion == "happy" or crng.uniform() < 0.7 else "negative"
        else:
            bank = "neutral"
        spans = []
        if i in out_of_frame and (sp := _span("out_of_frame", frames, params.fps, crng)):
            spans.append(sp)
        if i in occluded and (sp := _span("occluded", frames, params.fps, crng)):
            spans.append(sp)
        pause = None
        if i in long_pause:
            length = min(crng.uniform(0.6, 1.2), 0.3 * params.seconds)
            pause = (float(crng.uniform(0.25, 0.5) * params.seconds), float(length))
        plans.append(
            ClipPlan(
                index=i,
                clip_id=f"spk{s:02d}_clip{c:03d}",
                speaker=f"spk{s:02d}",
                speaker_index=s,
                emotion=emotion,
                arousal=Curve.draw(a0, params.label_rate_hz, crng),
                valence=Curve.draw(v0, params.label_rate_hz, crng),
                face_cue=float(crng.uniform(*CUE_RANGE)),
                voice_cue=float(crng.uniform(*CUE_RANGE)),
                text_kind=None if i in no_text else ("neutral" if bank == "neutral" else bank),
                sentences=_sentences(bank, crng),
                spans=spans,
                long_pause=pause,
                entropy=(params.seed, 3, i),
            )
        )
    return plans


# ----------------------------------------------------------------------------------------------
# Speakers
# ----------------------------------------------------------------------------------------------


def speaker_voice(params: CorpusParams, s: int) -> Voice:
    """Alternating lower (even) and higher (odd) voices; vocal-tract length follows."""
    rng = np.random.default_rng([params.seed, 1, s, 0])
    high = s % 2 == 1
    return Voice(
        f0=float(rng.uniform(175, 230) if high else rng.uniform(95, 135)),
        formant_scale=float(rng.uniform(1.1, 1.2) if high else rng.uniform(0.95, 1.03)),
        breathiness=float(rng.uniform(0.0, 0.04)),
        rate=float(rng.uniform(0.92, 1.08)),
        level_db=float(rng.uniform(-2, 2)),
    )


def speaker_look(params: CorpusParams, s: int) -> Look:
    rng = np.random.default_rng([params.seed, 1, s, 1])
    return Look(
        tint=tuple(float(x) for x in rng.uniform(0.88, 1.12, 3)),
        background=tuple(float(x) for x in rng.uniform(0.2, 0.8, 3)),
        zoom=float(rng.uniform(0.9, 1.1)),
        offset=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.12, -0.04))),
        occluder=tuple(float(x) for x in rng.uniform(0.1, 0.5, 3)),
    )
