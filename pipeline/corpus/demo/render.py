"""Rendering the demo corpus: each clip's plan (`plan`) becomes an MP4 (voice from `synth_audio`, face
from `synth_face`), its label rows and its biosignal CSV (`synth_signals`); `generate_demo` renders the
clips in parallel worker processes, with bytes that do not depend on the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from pipeline.core.compute import ComputeSettings, compute_settings, map_ordered
from pipeline.core.store import write_text
from pipeline.corpus.demo.params import CorpusParams
from pipeline.corpus.demo.plan import (
    BASE_AV,
    CLASSES,
    ClipPlan,
    CorpusError,
    label_times,
    n_frames,
    plan_corpus,
    speaker_look,
    speaker_voice,
)
from pipeline.corpus.demo.synth_audio import STYLES, Utterance, speak
from pipeline.corpus.demo.synth_face import FaceRenderer, FaceState
from pipeline.corpus.demo.synth_signals import (
    biosignals_csv,
    speaker_physiology,
    synthesise_biosignals,
)
from pipeline.corpus.manifest import Clip, CorpusInfo
from pipeline.media import MediaError, write_mp4


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
    try:
        write_mp4(path, render_frames(plan, params, utt.nuclei), utt.audio, params.fps, params.sample_rate)
    except MediaError as e:
        raise CorpusError(str(e)) from None
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
            session=plan.session,  # two speakers per session, as IEMOCAP's (plan.session_of)
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


def generate_demo(
    params: CorpusParams, out_dir: Path, progress: bool = True, workers: int | None = None
) -> tuple[CorpusInfo, list[Clip], dict[str, list]]:
    """Write every clip under `out_dir/media/` (its biosignals under `out_dir/biosignals/`); return the
    corpus info, the clips (manifest rows) and the labels rows (for `write_labels`). `workers` processes
    render clips in parallel (`pipeline.core.compute`'s local pool; default MER_WORKERS, else the usable
    cores); the output does not depend on it."""
    out_dir = Path(out_dir)
    plans = plan_corpus(params)
    try:
        (out_dir / "media").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CorpusError(f"{out_dir / 'media'}: cannot create the media folder ({e.strerror or e})") from None
    jobs = [(p, params, out_dir) for p in plans]
    bar = dict(total=len(plans), desc="demo corpus", unit="clip", disable=not progress, dynamic_ncols=True)
    settings = ComputeSettings(workers=workers or compute_settings().workers)  # local whatever MER_BACKEND says
    rendered = list(tqdm(map_ordered(_render_job, jobs, settings=settings), **bar))
    write_biosignals(plans, params, out_dir)
    labels: dict[str, list] = {"clip_id": [], "t": [], "arousal": [], "valence": []}
    for r in rendered:
        for key in labels:
            labels[key] += r.labels[key]
    info = CorpusInfo(
        name="demo", classes=list(CLASSES), label_rate_hz=params.label_rate_hz, params=params.model_dump()
    )
    return info, [r.clip for r in rendered], labels
