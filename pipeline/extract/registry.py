"""Extractors by feature name: which params section configures each, and how to build it.

The stages and `mer predict` build extractors through this table, so a new extractor is one entry
here plus its module. `vggface` and `resnet50` embed face crops and so need detections: by default
the `faces` stage's table (data/faces/detections.parquet), read once here; `pipeline.predict` passes
the detections it made in memory for its one file (`detections=`, `faces_meta=`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.core.config import load_section
from pipeline.core.paths import FACES
from pipeline.extract.base import Extractor


def _face_inputs(detections, faces_meta, kw: dict) -> dict:
    """The detections a face embedder takes: those given, or the faces stage's table read once."""
    if detections is None:
        from pipeline.extract.faces.table import read_detections

        faces_meta, detections = read_detections(FACES)
        kw.setdefault("source", str(FACES))
    elif faces_meta is None:
        raise TypeError("detections given without their faces_meta (the detections table's metadata)")
    return dict(detections=detections, faces_meta=faces_meta, **kw)


@dataclass(frozen=True)
class ExtractorEntry:
    section: str  # params.yaml section
    build: Callable[..., Extractor]  # (params, **kwargs) -> Extractor


def _vggface(params, detections=None, faces_meta=None, **kw) -> Extractor:
    from pipeline.extract.vggface import VggFaceExtractor

    return VggFaceExtractor(params, **_face_inputs(detections, faces_meta, kw))


def _resnet50(params, detections=None, faces_meta=None, **kw) -> Extractor:
    from pipeline.extract.resnet50 import ResNet50Extractor

    return ResNet50Extractor(params, **_face_inputs(detections, faces_meta, kw))


def _egemaps(params, **kw) -> Extractor:
    from pipeline.extract.opensmile_lld import EgemapsLld

    return EgemapsLld(params)


def _compare(params, **kw) -> Extractor:
    from pipeline.extract.opensmile_lld import CompareLld

    return CompareLld(params)


def _import(params, **kw) -> Extractor:
    from pipeline.extract.csv_import import CsvImport

    return CsvImport(params)


def _wav2vec2(params, **kw) -> Extractor:
    from pipeline.extract.wav2vec2 import Wav2Vec2Features

    return Wav2Vec2Features(params, **kw)


def _bert(params, **kw) -> Extractor:
    from pipeline.extract.bert import BertWords

    return BertWords(params, **kw)


EXTRACTORS: dict[str, ExtractorEntry] = {
    "vggface": ExtractorEntry("face_embed", _vggface),
    "resnet50": ExtractorEntry("resnet50", _resnet50),
    "egemaps": ExtractorEntry("lld", _egemaps),
    "compare": ExtractorEntry("compare", _compare),
    "import": ExtractorEntry("import", _import),
    "wav2vec2": ExtractorEntry("wav2vec2", _wav2vec2),
    "bert": ExtractorEntry("bert", _bert),
}


def build_extractor(feature: str, params_file: str | Path = "params.yaml", **kwargs) -> Extractor:
    """The extractor that writes feature table `feature`, configured from params.yaml."""
    from pipeline.core.config import ConfigError

    if feature not in EXTRACTORS:
        raise ConfigError(f"unknown feature '{feature}'; extractors exist for {', '.join(sorted(EXTRACTORS))}")
    entry = EXTRACTORS[feature]
    return entry.build(load_section(entry.section, params_file), **kwargs)
