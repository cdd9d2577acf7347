"""The generated demo corpus: real MP4 files (H.264 + AAC), transcripts and labels, from one seed.

How the signal is split across modalities, so that fusion beats every single modality:

- each clip has an emotion (neutral, happy, angry, sad; balanced per speaker) and arousal/valence
  curves at `label_rate_hz` around the emotion's base point (angry: aroused and negative; happy:
  aroused and positive; sad: calm and negative; neutral: calm and about zero);
- the VOICE mostly carries arousal (pitch, loudness, rate: angry/happy vs sad/neutral) and only a
  little valence (a brighter timbre when happy; a tense voice when angry, breathy when sad);
- the FACE mostly carries valence (mouth corners up or down) and, through the brows, part of
  anger vs sadness; the mouth opening and a flush follow arousal weakly;
- the TEXT carries valence in about half of the clips (positive or negative wording) and is neutral
  or absent otherwise;
- every clip draws a cue strength for face and voice in [0.15, 1], so either is sometimes weak,
  and the face leaves the frame or is occluded for a span in some clips, speech pauses in others.

Each modality alone therefore confuses some pair of classes (voice: angry vs happy; face: angry vs
sad; text: most clips), while their combination separates all four.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from pipeline.config import CorpusParams
from pipeline.corpus.manifest import Clip, CorpusInfo
from pipeline.corpus.synth_audio import Speaker, Voice, synthesise
from pipeline.corpus.synth_face import Expression, HeadPose, background, face_box_in_frame, render_frame

CLASSES = ["neutral", "happy", "angry", "sad"]
# (arousal, valence) base points
BASE = {"neutral": (-0.1, 0.0), "happy": (0.6, 0.7), "angry": (0.7, -0.6), "sad": (-0.5, -0.6)}

VOICES = {
    "neutral": Voice(f0_gain=0.30, f0_range=1.0, loudness_db=6, rate=4.0, tilt=0.80, breathiness=0.3, brightness=1.00),
    "happy": Voice(f0_gain=0.30, f0_range=2.5, loudness_db=6, rate=4.5, tilt=0.75, breathiness=0.2, brightness=1.06),
    "angry": Voice(f0_gain=0.30, f0_range=1.5, loudness_db=6, rate=4.5, tilt=0.55, breathiness=0.1, brightness=0.98),
    "sad": Voice(f0_gain=0.30, f0_range=0.6, loudness_db=6, rate=3.3, tilt=0.90, breathiness=0.8, brightness=0.97),
}

SENTENCES = {
    "positive": [
        "what a wonderful surprise this is",
        "i really love this lovely place",
        "that was a great and happy day",
        "we had so much fun together today",
        "this is the best news ever",
        "thank you this is brilliant and kind",
    ],
    "negative": [
        "this is a terrible and awful mess",
        "i hate how badly this went",
        "that was a horrible and painful day",
        "everything about this is wrong and sad",
        "i feel miserable and lonely tonight",
        "this is the worst news ever",
    ],
    "neutral": [
        "the meeting starts at nine tomorrow",
        "please put the folder on the table",
        "the train leaves from platform four",
        "we will talk about the report later",
        "the window is next to the door",
        "i will call you after lunch",
    ],
}


@dataclass
class ClipPlan:
    clip_id: str
    speaker: str
    emotion: str
    arousal: np.ndarray  # at label times
    valence: np.ndarray
    label_t: np.ndarray
    cue: dict[str, float]  # cue strength of the face and the voice (text: `text_kind`)
    text_kind: str | None  # 'positive' | 'negative' | 'neutral' | None (no transcript)
    sentence: str
    away: tuple[float, float] | None  # the face leaves the frame: (start, length)
    occluded: tuple[float, float] | None  # an occluder covers the face
    long_pause: tuple[float, float] | None


def _curve(base: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth AR(1) wander around `base`, in [-1, 1]."""
    x = np.empty(n)
    dev = rng.normal(0, 0.1)
    for i in range(n):
        dev = 0.8 * dev + rng.normal(0, 0.08)
        x[i] = base + dev
    return np.clip(x, -1, 1)


def _span(seconds: float, rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float]:
    length = min(rng.uniform(lo, hi), 0.5 * seconds)
    return float(rng.uniform(0.2, seconds - length - 0.1)), float(length)


def plan_corpus(params: CorpusParams) -> list[ClipPlan]:
    rng = np.random.default_rng(params.seed)
    n_labels = int(np.floor(params.seconds * params.label_rate_hz)) + 1
    label_t = np.arange(n_labels) / params.label_rate_hz
    plans = []
    for s in range(params.speakers):
        emotions = [CLASSES[i % len(CLASSES)] for i in range(params.clips_per_speaker)]
        rng.shuffle(emotions)
        for c, emotion in enumerate(emotions):
            a0, v0 = BASE[emotion]
            roll = rng.uniform()
            if roll < 0.1:
                text_kind = None
            elif roll < 0.55 and emotion != "neutral":
                text_kind = "positive" if v0 > 0 else "negative"
            else:
                text_kind = "neutral"
            pool = SENTENCES[text_kind or "neutral"]
            plans.append(
                ClipPlan(
                    clip_id=f"spk{s:02d}_clip{c:03d}",
                    speaker=f"spk{s:02d}",
                    emotion=emotion,
                    arousal=_curve(a0, n_labels, rng),
                    valence=_curve(v0, n_labels, rng),
                    label_t=label_t,
                    cue={m: float(rng.uniform(0.15, 1.0)) for m in ("face", "voice")},
                    text_kind=text_kind,
                    sentence=pool[int(rng.integers(len(pool)))],
                    away=_span(params.seconds, rng, 0.6, 1.2) if rng.uniform() < 0.2 else None,
                    occluded=_span(params.seconds, rng, 0.4, 1.0) if rng.uniform() < 0.2 else None,
                    long_pause=_span(params.seconds, rng, 0.5, 1.0) if rng.uniform() < 0.25 else None,
                )
            )
    return plans


def _speaker_look(index: int, width: int, height: int, seed: int):
    rng = np.random.default_rng([seed, index, 1])
    return background(width, height, rng), rng.uniform(0.85, 1.1, 3).astype(np.float32)


def _speaker_voice(index: int, seed: int) -> Speaker:
    rng = np.random.default_rng([seed, index, 2])
    female = index % 2 == 1
    return Speaker(f0=float(rng.uniform(185, 225) if female else rng.uniform(100, 130)),
                   formant_scale=float(rng.uniform(1.1, 1.2) if female else rng.uniform(0.95, 1.05)))


def _in(span: tuple[float, float] | None, t: float) -> bool:
    return span is not None and span[0] <= t < span[0] + span[1]


def render_video_frames(plan: ClipPlan, params: CorpusParams, speaker_index: int, rng: np.random.Generator):
    """Yield the clip's RGB frames."""
    bg, tint = _speaker_look(speaker_index, params.width, params.height, params.seed)
    n = int(round(params.seconds * params.fps))
    phase = rng.uniform(0, 2 * np.pi, 4)
    emotion, k = plan.emotion, plan.cue["face"]
    for i in range(n):
        t = i / params.fps
        a = float(np.interp(t, plan.label_t, plan.arousal))
        v = float(np.interp(t, plan.label_t, plan.valence))
        expr = Expression(
            smile=k * v,
            mouth_open=max(0.0, 0.3 * k * a + 0.15 * np.sin(2 * np.pi * 3 * t + phase[0])),
            brow_lower=k * (0.9 if emotion == "angry" else -0.1 if emotion == "happy" else 0.0),
            inner_brow_raise=k * (0.9 if emotion == "sad" else 0.0),
            flush=0.4 * k * max(a, 0.0),
        )
        pose = HeadPose(
            dx=8 * np.sin(2 * np.pi * 0.3 * t + phase[1]),
            dy=5 * np.sin(2 * np.pi * 0.2 * t + phase[2]),
            angle=4 * np.sin(2 * np.pi * 0.25 * t + phase[3]),
            scale=1.0 + 0.04 * np.sin(2 * np.pi * 0.15 * t),
        )
        if _in(plan.away, t):  # the head moves out of the frame
            pose.dx += params.width * 1.2
        occluder = face_box_in_frame(pose, params.width, params.height) if _in(plan.occluded, t) else None
        light = 1.0 + 0.08 * np.sin(2 * np.pi * 0.1 * t + phase[0])
        yield render_frame(expr, pose, bg, tint, light, occluder)


def synthesise_audio(plan: ClipPlan, params: CorpusParams, speaker_index: int, rng: np.random.Generator):
    k = plan.cue["voice"]
    neutral, own = VOICES["neutral"], VOICES[plan.emotion]
    # a weak cue blends the emotion's voice towards neutral
    voice = Voice(**{f: (1 - k) * getattr(neutral, f) + k * getattr(own, f) for f in neutral.__dataclass_fields__})
    arousal_at = lambda t: k * float(np.interp(t, plan.label_t, plan.arousal))  # noqa: E731
    return synthesise(plan.sentence.split(), arousal_at, voice, _speaker_voice(speaker_index, params.seed),
                      params.seconds, params.sample_rate, rng, plan.long_pause)


def write_mp4(path: Path, frames, audio: np.ndarray, params: CorpusParams) -> None:
    """H.264 (yuv420p) + AAC, single-threaded so the same input gives the same bytes; atomic."""
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    try:
        with av.open(str(tmp), "w", options={"fflags": "+bitexact"}) as out:
            v = out.add_stream("libx264", rate=params.fps, options={"crf": "20", "preset": "veryfast", "threads": "1"})
            v.width, v.height, v.pix_fmt = params.width, params.height, "yuv420p"
            a = out.add_stream("aac", rate=params.sample_rate)
            a.layout = "mono"
            for img in frames:
                for packet in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            for packet in v.encode():
                out.mux(packet)
            hop = 1024
            for i in range(0, len(audio), hop):
                chunk = audio[i : i + hop]
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                frame.sample_rate = params.sample_rate
                frame.pts = i
                for packet in a.encode(frame):
                    out.mux(packet)
            for packet in a.encode():
                out.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def generate_demo(params: CorpusParams, out_dir: Path, progress: bool = True) -> tuple[CorpusInfo, list[Clip], dict[str, list]]:
    """Write media under `out_dir/media/`; return the corpus info, the clips and the labels rows."""
    out_dir = Path(out_dir)
    media = out_dir / "media"
    media.mkdir(parents=True, exist_ok=True)
    plans = plan_corpus(params)
    clips: list[Clip] = []
    labels: dict[str, list] = {"clip_id": [], "t": [], "arousal": [], "valence": []}
    for plan in tqdm(plans, desc="demo corpus", unit="clip", disable=not progress, dynamic_ncols=True):
        speaker_index = int(plan.speaker[3:])
        rng = np.random.default_rng([params.seed, speaker_index, int(plan.clip_id[-3:]), 3])
        audio, words = synthesise_audio(plan, params, speaker_index, rng)
        path = media / f"{plan.clip_id}.mp4"
        write_mp4(path, render_video_frames(plan, params, speaker_index, rng), audio, params)
        spoken = " ".join(w.word for w in words)
        clips.append(
            Clip(
                clip_id=plan.clip_id,
                speaker=plan.speaker,
                media_path=os.path.relpath(path, Path.cwd()) if not path.is_absolute() else str(path),
                duration=float(params.seconds),
                transcript=spoken if plan.text_kind is not None and words else None,
                words=[w.__dict__ for w in words] if plan.text_kind is not None and words else None,
                label=plan.emotion,
            )
        )
        labels["clip_id"] += [plan.clip_id] * len(plan.label_t)
        labels["t"] += plan.label_t.tolist()
        labels["arousal"] += plan.arousal.astype(np.float32).tolist()
        labels["valence"] += plan.valence.astype(np.float32).tolist()
    info = CorpusInfo(name="demo", classes=list(CLASSES), label_rate_hz=params.label_rate_hz, params=params.model_dump())
    return info, clips, labels
