"""The generated demo corpus: real MP4 files (H.264 + AAC), transcripts with word timings and labels,
all from `corpus.seed`.

Labels. Each clip has one emotion of (neutral, happy, angry, sad), balanced per speaker (and over
the corpus), and arousal/valence curves in [-1, 1]: a smooth random wander (a few sinusoids below
0.5 Hz) around the emotion's base point (angry: aroused, negative; happy: aroused, positive; sad:
calm, negative; neutral: fairly calm, about zero). The labels table samples the curves at
`label_rate_hz`; the synthesis reads the same curves at every video frame and audio sample.

How the signal is split across modalities (so that fusion beats every single modality):

- VOICE (`synth_audio`) mostly carries AROUSAL: F0 level, loudness and speaking rate follow the
  arousal curve, so angry/happy separate from sad/neutral. Voice quality adds a little more: angry is
  pressed and harsh, happy bright with a wide F0 range, sad breathy, low and slow. It says little
  about valence: angry and happy sound alike apart from quality.
- FACE (`synth_face`) mostly carries VALENCE: the mouth corners follow the valence curve (smile up,
  frown down), so happy separates from angry/sad. The brows tell part of angry (lowered, drawn
  together) from sad (inner ends raised); a cheek flush and brightness follow arousal only slightly.
- TEXT carries valence in only some clips: about half of the emotional clips use emotional wording
  (happy: positive; angry: hostile or generally negative; sad: loss or generally negative), the
  others and all neutral clips use neutral sentences; ~10% of clips have no transcript at all.
- PHYSIOLOGY (`synth_signals`, not a modality of the default models): MuSe-style biosignal CSVs
  (data/corpus/biosignals/<clip_id>.csv: ECG, RESP, BPM, EDA at the label rate) follow AROUSAL
  loosely: heart rate and skin conductance rise with it, breathing gets faster and shallower.
- Cue strength: each clip draws independent strengths in [0.05, 1] for face and voice. A weak cue
  moves that modality towards the neutral rendering (expression and voice style blended towards
  neutral, arousal towards the neutral level), so any single modality is sometimes weak.
- Nuisance that has nothing to do with emotion: speakers differ (low and high voices, vocal-tract
  length, colour balance, framing); per clip the pitch, microphone gain and tempo vary, the resting
  mouth varies and brief brow flashes and frowns occur; the face leaves the frame or is occluded for
  a span in some clips (MTCNN then finds no face) and some clips hold a long silence.

So no modality alone is reliable on every clip or every class pair (voice: angry vs happy, neutral
vs sad; face: angry vs sad on weak brows; text: most clips), while their combination separates all
four. Checked with simple measured features (voice: F0, level, tilt; face: mouth and brow template
read-outs on the decoded frames; text: emotion-word counts) and a logistic regression over
speaker-independent folds, 16 speakers x 8 clips, seeds 2 and 3: unweighted accuracy voice 0.62 /
0.53, face 0.77 / 0.72, text 0.54 / 0.59, all three 0.84 / 0.86.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Iterator

import av
from av.video.reformatter import VideoReformatter
import numpy as np
from tqdm import tqdm

from pipeline.config import CorpusParams
from pipeline.corpus.manifest import Clip, CorpusInfo
from pipeline.corpus.synth_audio import STYLES, Utterance, Voice, speak
from pipeline.corpus.synth_face import FaceRenderer, FaceState, Look
from pipeline.corpus.synth_signals import biosignals_csv, speaker_physiology, synthesise_biosignals
from pipeline.errors import PipelineError
from pipeline.store import atomic_path, write_text

CLASSES = ["neutral", "happy", "angry", "sad"]
BASE_AV = {"neutral": (-0.15, 0.0), "happy": (0.5, 0.6), "angry": (0.6, -0.55), "sad": (-0.55, -0.5)}
CUE_RANGE = (0.05, 1.0)  # per-clip cue strength of face and voice
TEXT_CUE_SHARE = 0.5  # share of emotional clips whose wording carries the emotion
NO_TRANSCRIPT_SHARE = 0.10
OUT_OF_FRAME_SHARE = 0.25
OCCLUDED_SHARE = 0.15
LONG_PAUSE_SHARE = 0.25

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

    def rng(self, stream: int) -> np.random.Generator:
        """Independent generators per use (0: speech, 1: head and light, 2: voice nuisance,
        3: face nuisance), so changing how one is used leaves the others as they were."""
        return np.random.default_rng(list(self.entropy) + [stream])


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


# ----------------------------------------------------------------------------------------------
# Rendering one clip
# ----------------------------------------------------------------------------------------------


def voice_arousal(plan: ClipPlan, t: np.ndarray) -> np.ndarray:
    """Arousal as the voice shows it: moved towards the neutral level by a weak cue."""
    a_n = BASE_AV["neutral"][0]
    return a_n + plan.voice_cue * (plan.arousal(t) - a_n)


def synthesise_audio(plan: ClipPlan, params: CorpusParams) -> Utterance:
    style = STYLES["neutral"].blend(STYLES[plan.emotion], plan.voice_cue)
    # nuisance unrelated to emotion: the day's pitch, the microphone gain, the speaking tempo
    rng = plan.rng(2)
    voice = speaker_voice(params, plan.speaker_index)
    voice = replace(
        voice,
        f0=voice.f0 * 2 ** (rng.normal(0, 1.2) / 12),
        level_db=voice.level_db + rng.normal(0, 2.5),
        rate=voice.rate * rng.uniform(0.9, 1.1),
    )
    return speak(
        plan.sentences,
        voice,
        style,
        lambda t: voice_arousal(plan, t),
        params.seconds,
        params.sample_rate,
        plan.rng(0),
        plan.long_pause,
    )


def face_states(
    plan: ClipPlan, params: CorpusParams, renderer: FaceRenderer, nuclei: list[tuple[float, float]]
) -> list[FaceState]:
    """The per-frame face of a clip: expression from emotion and curves, head motion, light, spans."""
    rng = plan.rng(1)
    n = n_frames(params)
    t = np.arange(n) / params.fps
    k = plan.face_cue
    valence = k * plan.valence(t)
    arousal = plan.arousal(t)
    # jaw: open on each vowel nucleus, wider with (voice) arousal
    jaw = np.zeros(n)
    for a, b in nuclei:
        c, w = 0.5 * (a + b), 0.5 * (b - a) + 0.03
        jaw = np.maximum(jaw, np.exp(-0.5 * ((t - c) / w) ** 2))
    jaw *= 0.6 + 0.1 * voice_arousal(plan, t)
    brow_lower = k * 0.5 * (0.8 + 0.2 * arousal) if plan.emotion == "angry" else np.zeros(n)
    brow_raise = np.full(n, k * 0.5) if plan.emotion == "sad" else np.zeros(n)
    # nuisance unrelated to emotion: a person's resting mouth, brief brow flashes and frowns
    nrng = plan.rng(3)
    valence = np.clip(valence + nrng.normal(0, 0.15), -1.0, 1.0)
    for _ in range(int(nrng.integers(0, 4))):
        centre, width = nrng.uniform(0, params.seconds), nrng.uniform(0.1, 0.3)
        bump = nrng.uniform(0.2, 0.7) * np.exp(-0.5 * ((t - centre) / width) ** 2)
        if nrng.uniform() < 0.5:
            brow_raise = np.maximum(brow_raise, bump)
        else:
            brow_lower = np.maximum(brow_lower, bump)

    def wander(amp: float, lo: float, hi: float) -> np.ndarray:
        f = rng.uniform(lo, hi, 2)
        p = rng.uniform(0, 2 * np.pi, 2)
        return amp * (np.sin(2 * np.pi * f[0] * t + p[0]) + 0.5 * np.sin(2 * np.pi * f[1] * t + p[1])) / 1.5

    dx = wander(0.04 * params.width, 0.1, 0.6)
    dy = wander(0.025 * params.height, 0.1, 0.6)
    angle = wander(4.0, 0.1, 0.5)
    scale = 1.0 + wander(0.04, 0.05, 0.3)
    gain = rng.uniform(0.9, 1.05) * (1.0 + wander(0.05, 0.05, 0.3)) * (1.0 + 0.04 * k * np.maximum(arousal, 0))
    light = np.clip(rng.uniform(-0.6, 0.6) + wander(0.3, 0.05, 0.2), -1, 1)
    flush = 0.5 * k * np.maximum(arousal, 0)
    occluded = np.zeros(n, bool)
    away = np.zeros(n)  # 0 in frame … 1 fully out
    side = 1.0 if rng.uniform() < 0.5 else -1.0
    for sp in plan.spans:
        if sp.kind == "occluded":
            occluded[sp.start : sp.end] = True
        else:
            away[sp.start : sp.end] = 1.0
            for j in range(1, sp.ramp + 1):  # move out before the span and back in after it
                r = 1.0 - j / (sp.ramp + 1)
                if sp.start - j >= 0:
                    away[sp.start - j] = max(away[sp.start - j], r)
                if sp.end - 1 + j < n:
                    away[sp.end - 1 + j] = max(away[sp.end - 1 + j], r)
    out_dx = renderer.out_of_frame_dx()
    return [
        FaceState(
            valence=float(valence[i]),
            brow_lower=float(brow_lower[i]),
            brow_raise_inner=float(brow_raise[i]),
            jaw=float(jaw[i]),
            dx=float(dx[i] + side * away[i] * out_dx),
            dy=float(dy[i]),
            angle=float(angle[i]),
            scale=float(scale[i]),
            gain=float(gain[i]),
            light=float(light[i]),
            flush=float(flush[i]),
            occluded=bool(occluded[i]),
        )
        for i in range(n)
    ]


def render_frames(plan: ClipPlan, params: CorpusParams, nuclei: list[tuple[float, float]]) -> Iterator[np.ndarray]:
    renderer = FaceRenderer(params.width, params.height, speaker_look(params, plan.speaker_index))
    for state in face_states(plan, params, renderer, nuclei):
        yield renderer.render(state)


def write_mp4(path: Path, frames: Iterable[np.ndarray], audio: np.ndarray, fps: int, sample_rate: int) -> None:
    """H.264 (yuv420p) + AAC (mono) in MP4, written atomically.

    The bytes are a function of the input alone (checked by the tests): single-threaded x264,
    bit-exact muxing, and no B-frames / macroblock tree. With B-frames and mbtree on, the libx264 in
    PyAV's wheel gave different bitstreams for the same frames from run to run, even with one thread
    (not with asm=0, so presumably an assembly routine reads uninitialised memory); so they are off."""
    x264 = {
        "crf": "20", "preset": "veryfast", "threads": "1", "flags": "+bitexact",
        "x264-params": "bframes=0:no-mbtree=1",
    }
    try:
        with atomic_path(path, suffix=".mp4") as tmp:
            with av.open(str(tmp), mode="w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
                v = out.add_stream("libx264", rate=fps, options=x264)
                v.pix_fmt = "yuv420p"
                to_yuv = VideoReformatter()  # one converter for all frames (a new one per frame is slow)
                a = out.add_stream("aac", rate=sample_rate, options={"flags": "+bitexact"})
                a.layout = "mono"
                a.bit_rate = 64000
                first = True
                for i, img in enumerate(frames):
                    if first:
                        v.height, v.width = img.shape[:2]
                        first = False
                    frame = to_yuv.reformat(av.VideoFrame.from_ndarray(img, format="rgb24"), format="yuv420p")
                    frame.pts = i
                    frame.time_base = Fraction(1, fps)
                    out.mux(v.encode(frame))
                out.mux(v.encode())
                hop = a.codec_context.frame_size or 1024
                for i in range(0, len(audio), hop):
                    chunk = np.ascontiguousarray(audio[None, i : i + hop], dtype=np.float32)
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                    frame.sample_rate = sample_rate
                    frame.pts = i
                    frame.time_base = Fraction(1, sample_rate)
                    out.mux(a.encode(frame))
                out.mux(a.encode())
    except (OSError, av.error.FFmpegError) as e:
        raise CorpusError(f"{path}: cannot write the clip ({e})") from None


@dataclass
class RenderedClip:
    clip: Clip
    labels: dict[str, list]


def media_path_for(out_dir: Path, clip_id: str) -> Path:
    return Path(out_dir) / "media" / f"{clip_id}.mp4"


def render_clip(plan: ClipPlan, params: CorpusParams, out_dir: Path) -> RenderedClip:
    """Render and write one clip; return its manifest row and label rows."""
    utt = synthesise_audio(plan, params)
    path = media_path_for(out_dir, plan.clip_id)
    write_mp4(path, render_frames(plan, params, utt.nuclei), utt.audio, params.fps, params.sample_rate)
    has_text = plan.text_kind is not None and bool(utt.words)
    t = label_times(params)
    return RenderedClip(
        Clip(
            clip_id=plan.clip_id,
            speaker=plan.speaker,
            media_path=str(path),  # relative paths stay relative to the working directory (repo root)
            duration=float(params.seconds),
            partition=None,  # `segment` draws speaker-independent partitions
            transcript=" ".join(w["word"] for w in utt.words) if has_text else None,
            words=[dict(w) for w in utt.words] if has_text else None,
            label=plan.emotion,
        ),
        {
            "clip_id": [plan.clip_id] * len(t),
            "t": t.tolist(),
            "arousal": plan.arousal(t).astype(np.float32).tolist(),
            "valence": plan.valence(t).astype(np.float32).tolist(),
        },
    )


def biosignals_path_for(out_dir: Path, clip_id: str) -> Path:
    return Path(out_dir) / "biosignals" / f"{clip_id}.csv"


def clip_biosignals(plan: ClipPlan, params: CorpusParams) -> str:
    """The clip's MuSe-style biosignal CSV (see synth_signals): at the label times, from stream 4 of
    the clip's generators, following its arousal curve."""
    t = label_times(params)
    phys = speaker_physiology(params.seed, plan.speaker_index)
    return biosignals_csv(t, synthesise_biosignals(t, plan.arousal, phys, plan.rng(4), params.seconds))


def write_biosignals(plans: list[ClipPlan], params: CorpusParams, out_dir: Path) -> None:
    """out_dir/biosignals/<clip_id>.csv for every clip; files of clips no longer in the corpus (and
    temporary files a killed run left) are removed."""
    keep = {biosignals_path_for(out_dir, p.clip_id).name for p in plans}
    folder = Path(out_dir) / "biosignals"
    try:
        for plan in plans:
            write_text(biosignals_path_for(out_dir, plan.clip_id), clip_biosignals(plan, params))
        for f in folder.iterdir():
            if f.is_file() and f.name not in keep:
                f.unlink()
    except OSError as e:
        raise CorpusError(f"{e.filename or folder}: cannot write the biosignals ({e.strerror or e})") from None


def _render_job(job: tuple[ClipPlan, CorpusParams, Path]) -> RenderedClip:
    return render_clip(*job)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def generate_demo(
    params: CorpusParams, out_dir: Path, progress: bool = True, workers: int | None = None
) -> tuple[CorpusInfo, list[Clip], dict[str, list]]:
    """Write every clip under `out_dir/media/` (its biosignals under `out_dir/biosignals/`); return the
    corpus info, the clips (manifest rows) and the labels rows (for `write_labels`). `workers` processes
    render clips in parallel (default: the usable cores); the output does not depend on it."""
    out_dir = Path(out_dir)
    plans = plan_corpus(params)
    try:
        (out_dir / "media").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CorpusError(f"{out_dir / 'media'}: cannot create the media folder ({e.strerror or e})") from None
    workers = min(workers or default_workers(), len(plans))
    jobs = [(p, params, out_dir) for p in plans]
    bar = dict(total=len(plans), desc="demo corpus", unit="clip", disable=not progress, dynamic_ncols=True)
    if workers <= 1:
        rendered = [_render_job(j) for j in tqdm(jobs, **bar)]
    else:
        # fork is cheap and needs no `__main__` guard in the caller; but a process that has loaded
        # torch may hold OpenMP threads that a fork copies broken, so then spawn
        method = "spawn" if "torch" in sys.modules else "fork"
        try:
            with ProcessPoolExecutor(workers, mp_context=get_context(method)) as pool:
                rendered = list(tqdm(pool.map(_render_job, jobs), **bar))
        except BrokenProcessPool as e:
            raise CorpusError(f"a worker process rendering the demo corpus died ({e}); try fewer workers") from None
    write_biosignals(plans, params, out_dir)
    labels: dict[str, list] = {"clip_id": [], "t": [], "arousal": [], "valence": []}
    for r in rendered:
        for key in labels:
            labels[key] += r.labels[key]
    info = CorpusInfo(
        name="demo", classes=list(CLASSES), label_rate_hz=params.label_rate_hz, params=params.model_dump()
    )
    return info, [r.clip for r in rendered], labels
