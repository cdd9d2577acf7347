"""`mer predict FILE|FOLDER …`: the pipeline's own extractors, alignment and trained models on new files.

The same code paths as `dvc repro`: each modality's extractor is built from params.yaml
(`pipeline.extract.registry`), its rows are put on the segment grid by `pipeline.segment.stage.align_clip`
and z-normalised with the training partition's statistics stored in `data/segments/`, and the
trained models of `data/models*/` predict. A modality whose media cannot be used (no audio track,
no face, no transcript) is marked missing — the models were trained to cope — and reported.

Many files: `Predictor` loads the segments statistics, every trained run and every modality's
extractor (MTCNN included) ONCE (`load_seconds`), then `predict` runs per file (`Prediction.seconds`);
`expand_inputs` turns the command line's files and folders into the list of files (a folder: its media
files by suffix, `MEDIA_SUFFIXES`, sorted). `predict_file` is the one-file shorthand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

from pipeline.core.config import load_section
from pipeline.core.errors import PipelineError
from pipeline.core.paths import MODELS_DIR, SEGMENTS_DIR
from pipeline.corpus.manifest import Clip
from pipeline.media import MediaError, probe
from pipeline.segment.align import align_clip, grid_steps
from pipeline.segment.contract import Segments, load_segments


class PredictError(PipelineError):
    """Prediction cannot run (no trained model, no segments statistics…); the message says what to run."""


@dataclass
class Prediction:
    clip: str
    task: str
    runs: list[str]
    t: np.ndarray  # step centres (s)
    classes: list[str] = field(default_factory=list)
    probabilities: np.ndarray | None = None  # [C] mean over runs (classification)
    values: np.ndarray | None = None  # [T, K] mean over runs (regression)
    targets: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # modality -> why it is missing
    # modality -> weights statement, for each modality a run used whose feature backbone had RANDOM weights
    random_weights: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # time this file took (features + models), the models already loaded

    @property
    def label(self) -> str | None:
        return None if self.probabilities is None else self.classes[int(np.argmax(self.probabilities))]

    def rows(self) -> list[dict[str, object]]:
        """CSV rows: one per class (classification) or one per step (regression)."""
        if self.probabilities is not None:
            return [{"clip": self.clip, "class": c, "probability": round(float(p), 6)} for c, p in zip(self.classes, self.probabilities)]
        return [{"clip": self.clip, "t": round(float(t), 4), **{k: round(float(v), 6) for k, v in zip(self.targets, row)}}
                for t, row in zip(self.t, self.values)]


NO_TRANSCRIPT = "no transcript given (--transcript or --transcript-file)"
# why a modality has no usable row, by the extractor's kind of input
NOTHING_FOUND = {"video": "no face found", "text": "no words in the transcript", "audio": "no usable audio"}


def check_transcript(text: str | None, source: str = "--transcript") -> str | None:
    """`text` if it can be encoded as UTF-8, else PredictError in one line. A command-line argument
    that is not valid UTF-8 reaches Python with its bad bytes as lone surrogates (surrogateescape)."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start]
        byte = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else f"character {bad!r}"
        raise PredictError(
            f"{source} is not valid UTF-8 text ({byte} at character {e.start}); give it as UTF-8, "
            "or put it in a UTF-8 text file and pass --transcript-file"
        ) from None
    return text


def read_transcript_file(path: str | Path) -> str:
    """The UTF-8 text of a transcript file (a BOM is dropped), stripped; PredictError naming the file
    when it cannot be read or is not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PredictError(f"--transcript-file {path}: cannot be read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError as e:
        raise PredictError(
            f"--transcript-file {path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


FACE_EMBEDDERS = ("vggface", "resnet50")
#: what a folder given to `mer predict` contributes: its files with these suffixes (case-insensitive)
MEDIA_SUFFIXES = (
    ".mp4", ".flv", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp",
    ".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg", ".opus", ".wma",
)


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    """The files to predict, in order: each file as given, each folder's media files (MEDIA_SUFFIXES,
    not recursive) sorted by name. A path that does not exist stays in the list (its prediction then
    fails with a line naming it); a folder without media files is a PredictError."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES)
            if not found:
                raise PredictError(f"{p}: a folder without media files (looked for {', '.join(MEDIA_SUFFIXES)})")
            out += found
        else:
            out.append(p)
    return out


class _Faces:
    """MTCNN once, and the detections of the file at hand, which the face embedder reads by clip id
    (the faces stage's table, in memory)."""

    def __init__(self) -> None:
        from pipeline.extract.faces import FaceDetector, table_meta

        self.params = load_section("faces")
        self.detector = FaceDetector(self.params)
        self.meta = table_meta(self.params, [], {})
        self.detections: dict[str, Any] = {}

    def detect(self, clip: Clip) -> None:
        self.detections.clear()
        self.detections[clip.clip_id] = self.detector.process_video(clip.media())


def build_extractors(modalities: dict[str, str]) -> tuple[dict[str, Any], _Faces | None]:
    """{modality: extractor} built once from params.yaml, and the face detector when a face embedder
    is among them (crops come from MTCNN, exactly as the faces stage makes them)."""
    from pipeline.extract.registry import build_extractor

    faces = _Faces() if any(f in FACE_EMBEDDERS for f in modalities.values()) else None
    extractors = {}
    for modality, feature in modalities.items():
        kwargs = {"faces_meta": faces.meta, "detections": faces.detections} if feature in FACE_EMBEDDERS and faces else {}
        extractors[modality] = build_extractor(feature, **kwargs)
    return extractors, faces


def _features(clip: Clip, extractors: dict[str, Any], faces: _Faces | None = None) -> tuple[dict, dict[str, str]]:
    """{modality: ClipFeatures} for the file, and {modality: reason} for the ones that are missing."""
    rows, missing = {}, {}
    detected = False
    for modality, extractor in extractors.items():
        try:
            if extractor.modality == "text" and clip.transcript is None:
                missing[modality] = NO_TRANSCRIPT
                continue
            if faces is not None and getattr(extractor, "faces_meta", None) is not None and not detected:  # a face embedder
                faces.detect(clip)
                detected = True
            rows[modality] = extractor.process_clip(clip, Path("."))
            if not rows[modality].present.any():
                missing[modality] = NOTHING_FOUND.get(extractor.modality, f"no usable {extractor.modality} row")
        except MediaError as e:
            missing[modality] = str(e)
    return rows, missing


def random_weights(runs_info: list[dict], segments: Segments) -> dict[str, str]:
    """{modality: weights statement} of every modality that a run used and whose feature backbone ran
    on RANDOM weights; the model file's `weights` first, the segments metadata where it has none."""
    out: dict[str, str] = {}
    for info in runs_info:
        stored = info.get("weights") or {}
        for m in info.get("modalities", []):
            statement = stored.get(m) or (segments.modalities[m].weights_statement if m in segments.modalities else "")
            if "RANDOM" in statement:
                out.setdefault(m, statement)
    return out


class Predictor:
    """Every trained run (or those whose name starts with `model`) and every modality's extractor,
    loaded once (`load_seconds`); `predict` then runs on one file at a time, averaging over runs."""

    def __init__(self, models_dirs: list[Path] | None = None, segments_dir: Path = SEGMENTS_DIR, model: str | None = None):
        from pipeline.runs.files import find_trained, load_trained

        t0 = time.perf_counter()
        self.segments: Segments = load_segments(segments_dir)
        # every fold's runs, each normalised with its own fold's training statistics
        runs = [(fold, r) for fold in self.segments.fold_ids for r in find_trained(models_dirs or [MODELS_DIR], fold)]
        if model:
            runs = [(fold, r) for fold, r in runs if r[0] == model or r[0].startswith(f"{model}/")]
        if not runs:
            raise PredictError(f"no trained model{f' named {model}' if model else ''} under data/models: run `dvc repro` first")
        self.runs = []  # (fold, run name, net, info)
        for fold, (name, seed, path) in runs:
            net, info = load_trained(path)
            self.runs.append((fold, f"{name}/seed_{seed}" if fold is None else f"{name}/fold_{fold}/seed_{seed}", net, info))
        self.random_weights = random_weights([info for *_, info in self.runs], self.segments)
        self.extractors, self.faces = build_extractors({m: mi.feature for m, mi in self.segments.modalities.items()})
        self.load_seconds = time.perf_counter() - t0

    def predict(self, video: str | Path, transcript: str | None = None) -> Prediction:
        """The prediction for one media file; PipelineError (naming the file) when it cannot be read."""
        from pipeline.runs.feed import predict

        t0 = time.perf_counter()
        video, segments = Path(video), self.segments
        transcript = check_transcript(transcript)
        info = probe(video)
        clip = Clip(clip_id=video.stem, speaker="unknown", media_path=str(video.resolve()), duration=info.duration,
                    transcript=transcript)
        rows, missing = _features(clip, self.extractors, self.faces)
        steps = grid_steps(info.duration, segments.rate_hz, segments.t.shape[1])
        aligned = {m: align_clip(rows.get(m), steps, segments.rate_hz, mi.dim) for m, mi in segments.modalities.items()}

        def inputs(fold: int | None) -> tuple[dict, dict]:
            view = segments if fold is None else segments.for_fold(fold)
            x, mask = {}, {}
            for m, (values, present) in aligned.items():
                values = np.where(present[:, None], (values - view.mean[m]) / view.std[m], 0.0)
                x[m], mask[m] = values[None].astype(np.float32), present[None]
            return x, mask

        outputs, task, targets = [], None, []
        for fold, _, net, run in self.runs:
            x, mask = inputs(fold)
            task, targets = run["task"], run.get("targets") or []
            used = run["modalities"]
            outputs.append(predict(net, {m: x[m] for m in used}, {m: mask[m] for m in used})[0])
        names = [name for _, name, _, _ in self.runs]
        t = (np.arange(steps) + 0.5) / segments.rate_hz
        common = dict(missing=missing, random_weights=dict(self.random_weights))
        if task == "classification":
            probs = softmax(np.stack(outputs), axis=1)
            out = Prediction(video.name, task, names, t, list(segments.classes), probabilities=probs.mean(axis=0), **common)
        else:
            out = Prediction(video.name, task, names, t, values=np.stack(outputs).mean(axis=0), targets=list(targets), **common)
        out.seconds = time.perf_counter() - t0
        return out


def predict_file(
    video: str | Path,
    transcript: str | None = None,
    models_dirs: list[Path] | None = None,
    segments_dir: Path = SEGMENTS_DIR,
    model: str | None = None,
) -> Prediction:
    """Predict the emotion (or arousal/valence over time) of one media file with every trained run
    (or those whose name starts with `model`), averaging over runs."""
    check_transcript(transcript)
    return Predictor(models_dirs, segments_dir, model).predict(video, transcript)
