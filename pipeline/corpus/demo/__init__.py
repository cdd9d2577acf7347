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

Sessions: as IEMOCAP's (five sessions of one female and one male actor each, 003 §5.1), two
consecutive speakers share a session, speakers 0–1 → "Ses01", 2–3 → "Ses02", … (a low and a high
voice each; an odd last speaker is alone in the last one), so leave-one-session-out (003's protocol)
runs on the demo. Partitions are not fixed: `segment` draws them (`partition` stays None).

Where things live: `plan` draws everything random (speakers, emotions, curves, cue strengths, wording,
spans) from the seed without rendering anything; `render` turns each plan into an MP4 (encoded by
`pipeline.media.write_mp4`), label rows and a biosignal CSV, in parallel worker processes;
`synth_audio`, `synth_face` and `synth_signals` are the voice, face and physiology synthesisers.
"""

from pipeline.corpus.demo.plan import (
    CLASSES,
    SENTENCES,
    ClipPlan,
    CorpusError,
    label_times,
    plan_corpus,
    session_of,
    speaker_look,
    speaker_voice,
)
from pipeline.corpus.demo.render import (
    biosignals_path_for,
    clip_biosignals,
    face_states,
    generate_demo,
    media_path_for,
    render_clip,
    write_biosignals,
)

__all__ = [
    "CLASSES",
    "SENTENCES",
    "ClipPlan",
    "CorpusError",
    "biosignals_path_for",
    "clip_biosignals",
    "face_states",
    "generate_demo",
    "label_times",
    "media_path_for",
    "plan_corpus",
    "render_clip",
    "session_of",
    "speaker_look",
    "speaker_voice",
    "write_biosignals",
]
