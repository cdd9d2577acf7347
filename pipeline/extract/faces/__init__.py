"""Faces: MTCNN face detection and crops on every clip → `data/faces/detections.parquet`.

What lives where (read in this order):

* `table`      — the detections table contract: schema, metadata (`table_meta`), `ClipDetections`
                 (one clip's steps in memory), `detections_table` / `read_detections`. The face
                 embedders (`pipeline.extract.face_embed`) take what `read_detections` returns.
* `extractor`  — `FacesExtractor`: the detector as an extractor on the one runner
                 (`pipeline.extract.runner.extract_corpus`: per-clip cache keyed by video bytes ×
                 detector params, on_error fail|skip, data/errors/faces.csv, streamed atomic write).
* `detector`   — `FaceDetector`: MTCNN over batches of one clip's frames, one kept face per step,
                 detect-every-k, downscaling, truncated-video check.
* `crops`      — the square crop around a box and its JPEG encoding.
* `face_track` — which face is kept (selection, tracking) and how steps between detections are filled.
* `mtcnn_fast` — facenet-pytorch's MTCNN detection, fast and bit-exact.

The stage (`stages/faces.py`) reads the `faces` params, runs `FacesExtractor` on the manifest's clips
with `out=FACES` and prints a one-line summary; `mer predict` runs `FaceDetector.process_video` on one
file and hands the in-memory detections to the embedder.
"""

from pipeline.extract.faces.crops import (
    JPEG_QUALITY,
    decode_jpeg,
    encode_jpeg,
    square_crop,
)
from pipeline.extract.faces.detector import FaceDetector
from pipeline.extract.faces.extractor import FacesExtractor, cache_key
from pipeline.extract.faces.face_track import (
    SELECTORS,
    Candidates,
    StepFace,
    select_face,
)
from pipeline.extract.faces.table import (
    DETECTOR,
    SCHEMA,
    STAGE_VERSION,
    ClipDetections,
    clips_from_table,
    detections_meta,
    detections_table,
    read_detections,
    table_meta,
)

__all__ = [
    "DETECTOR", "JPEG_QUALITY", "SCHEMA", "SELECTORS", "STAGE_VERSION", "Candidates", "ClipDetections",
    "FaceDetector", "FacesExtractor", "StepFace", "cache_key", "clips_from_table", "decode_jpeg",
    "detections_meta", "detections_table", "encode_jpeg", "read_detections", "select_face",
    "square_crop", "table_meta",
]
