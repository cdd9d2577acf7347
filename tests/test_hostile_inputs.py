"""Every doubtful input named before the long run (issue 22): a hostile manifest — unknown columns,
out-of-range labels without declared ranges, a 0.08 s clip, a digitally silent clip, an unreadable
file — gives one clear line per problem, all at once, and nothing is silently accepted; params
mistakes across sections fail `mer params` in one line each. Tiny generated media only."""

from __future__ import annotations

import csv
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from typer.testing import CliRunner

from pipeline.core.errors import PipelineError
from pipeline.core.features import read_features
from pipeline.corpus import manifest_csv
from pipeline.corpus.manifest import Clip
from pipeline.corpus.validate import check
from pipeline.extract.faces.extractor import FacesExtractor
from pipeline.extract.faces.params import FacesParams
from pipeline.extract.opensmile_lld import EgemapsLld, LldParams
from pipeline.extract.runner import RunStats, StageError, extract_corpus
from pipeline.media import silent_steps, write_mp4
from pipeline.params_checks import check_params

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def _stage():
    spec = importlib.util.spec_from_file_location("stage_corpus_hostile", REPO / "stages" / "corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wav(path: Path, signal: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, signal.astype(np.float32), SR, subtype="PCM_16")
    return path


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * SR)).astype(np.float32)


def _csv(path: Path, rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.fixture
def hostile(tmp_path) -> Path:
    """A manifest corpus: a good clip, a 0.08 s clip, a silent clip, an unreadable file; an unknown column
    `audio` (meant: audio_path); labels on a [-1, 1] scale with one arousal 5.0, no label_ranges."""
    root = tmp_path / "corpus"
    _wav(root / "good.wav", _noise(1.0))
    _wav(root / "short.wav", _noise(0.08, 1))
    _wav(root / "silent.wav", np.zeros(SR))
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio at all")
    _csv(root / "manifest.csv", [
        ["clip_id", "speaker", "media_path", "audio"],
        ["good", "s1", "good.wav", "good.wav"],
        ["short", "s1", "short.wav", ""],
        ["silent", "s2", "silent.wav", ""],
        ["broken", "s2", "broken.wav", ""],
    ])
    _csv(root / "labels.csv", [
        ["clip_id", "t", "arousal", "valence"],
        ["good", 0.0, 0.25, -0.5], ["good", 0.5, -0.75, 0.1],
        ["short", 0.0, 5.0, 0.2],  # on a [-1, 1] scale: a typo, never silently accepted
        ["silent", 0.0, -0.1, 0.0], ["silent", 0.5, 0.9, -1.0],
    ])
    return root


def test_hostile_manifest_one_line_per_problem_all_at_once(hostile, tmp_path, monkeypatch, capsys):
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "params.yaml").write_text(yaml.safe_dump(
        {"corpus": {"name": "manifest", "root": str(hostile), "labels_csv": "labels.csv"}}))
    before = sorted((p.name, p.read_bytes()) for p in hostile.iterdir())
    with pytest.raises(PipelineError) as e:
        _stage().main()
    lines = str(e.value).splitlines()
    assert lines[0].startswith(f"corpus 'manifest' ({hostile}): 3 problems")
    body = [line.strip() for line in lines[1:]]
    assert len(body) == 3, body
    manifest, labels = hostile / "manifest.csv", hostile / "labels.csv"
    assert body[0].startswith(f"{manifest}:1: column 'audio' is not one the adapter reads (did you mean 'audio_path'?)")
    assert "`corpus.extra_columns: ignore`" in body[0]
    # the unreadable file: one line, its cause (no second "duration nan" line)
    assert body[1] == (f"{manifest}:5: clip broken: media {hostile / 'broken.wav'}: cannot open as media "
                       "(Invalid data found when processing input)")
    assert body[2] == f"{labels}:4: clip short: arousal 5 at t=0: expected a value in [-1, 1]"
    out = capsys.readouterr().out
    assert f"corpus: {labels}: arousal: no corpus.label_ranges entry; inferred the scale [-1, 1]" in out
    assert "(1 of 5 outside it, each a problem)" in out
    assert "valence: no corpus.label_ranges entry; inferred the scale [-1, 1] from its values (all 5 inside it)" in out
    assert sorted((p.name, p.read_bytes()) for p in hostile.iterdir()) == before  # the root never written


def test_declared_ranges_and_ignored_columns_are_accepted(hostile):
    params = manifest_csv.Params(name="manifest", root=str(hostile), labels_csv="labels.csv", extra_columns="ignore",
                                 label_ranges={"arousal": (1, 5)})
    read = manifest_csv.read(params)
    lines = [p.line() for p in check(read)]
    # no column line; arousal held to its declared [1, 5] (the [-1, 1] values are now the problems)
    assert not any("column" in line for line in lines)
    assert sum("arousal" in line and "expected a value in [1, 5]" in line for line in lines) == 4
    assert read.info.params["label_ranges"] == {"arousal": [1.0, 5.0], "valence": [-1.0, 1.0]}
    assert [n.split(": ")[1] for n in read.notes] == ["valence"]  # inferred, and said; arousal was declared


def test_values_on_no_usual_scale_ask_for_a_range(tmp_path):
    root = tmp_path / "c"
    _wav(root / "a.wav", _noise(0.5))
    _csv(root / "manifest.csv", [["clip_id", "speaker", "media_path"], ["a", "s", "a.wav"]])
    _csv(root / "labels.csv", [["clip_id", "t", "arousal"], ["a", 0.0, 40.0], ["a", 0.25, 80.0]])
    read = manifest_csv.read(manifest_csv.Params(name="manifest", root=str(root), labels_csv="labels.csv"))
    (p,) = check(read)
    assert p.message == ("arousal: values from 40 to 80 fit none of the usual scales ([-1, 1], [1, 5], [1, 7]); "
                         "declare its range in corpus.label_ranges")


def _clip(path: Path, clip_id: str, duration: float) -> Clip:
    return Clip(clip_id=clip_id, speaker="s", media_path=str(path), duration=duration)


def test_clip_shorter_than_a_step_is_listed_never_an_empty_table(tmp_path):
    frames = [np.full((32, 32, 3), 128, np.uint8)] * 2
    write_mp4(tmp_path / "short.mp4", frames, np.zeros(int(0.08 * SR), np.float32), 25, SR)
    write_mp4(tmp_path / "blip.mp4", frames, np.zeros(int(0.08 * SR), np.float32), 25, SR)
    clips = [_clip(tmp_path / "short.mp4", "short", 0.08), _clip(tmp_path / "blip.mp4", "blip", 0.1)]
    faces = FacesExtractor(FacesParams(), device="cpu")  # the detector is never built: nothing to detect
    with pytest.raises(StageError) as e:
        extract_corpus(faces, clips, out=tmp_path / "d.parquet", errors_dir=tmp_path / "errors", on_error="fail")
    assert str(e.value).splitlines() == [
        "faces: 2 clips too short to extract (`on_error: skip` leaves them out, logged):",
        "  clip short: 0.08 s is shorter than one step of faces (0.2 s at 5 Hz): no step to extract",
        "  clip blip: 0.1 s is shorter than one step of faces (0.2 s at 5 Hz): no step to extract",
    ]
    stats = RunStats()
    extract_corpus(faces, clips[:1], out=tmp_path / "d.parquet", errors_dir=tmp_path / "errors", on_error="skip",
                   stats=stats)
    assert stats.extracted == 0 and [cid for cid, _ in stats.errors] == ["short"]
    rows = list(csv.reader(open(tmp_path / "errors" / "faces.csv")))
    assert rows[0] == ["clip_id", "error"] and rows[1][0] == "short" and "shorter than one step" in rows[1][1]


def test_silent_clip_is_missing_not_speech(tmp_path):
    silent, good = _wav(tmp_path / "silent.wav", np.zeros(SR // 2)), _wav(tmp_path / "good.wav", _noise(0.5))
    clips = [_clip(silent, "silent", 0.5), _clip(good, "good", 0.5)]
    out = extract_corpus(EgemapsLld(LldParams()), clips, out=tmp_path / "egemaps.parquet", errors_dir=tmp_path / "e")
    meta, rows = read_features(out)
    assert meta.params["silence"] == "mask" and "silence: mask" in meta.notes
    assert len(rows["silent"].t) > 40 and not rows["silent"].present.any()
    assert rows["good"].present.all()
    kept = extract_corpus(EgemapsLld(LldParams(silence="keep")), clips, out=tmp_path / "kept.parquet",
                          errors_dir=tmp_path / "e")
    assert read_features(kept)[1]["silent"].present.all()


def test_silent_steps_digital_and_energy():
    signal = np.concatenate([np.zeros(160), np.full(160, 1e-4), np.full(160, 0.5)]).astype(np.float32)
    centres = np.array([0.005, 0.015, 0.025])  # one 10 ms window in each part, at 16 kHz
    assert silent_steps(signal, SR, centres, 0.01).tolist() == [True, False, False]
    assert silent_steps(signal, SR, centres, 0.01, dbfs=-60.0).tolist() == [True, True, False]  # 1e-4: -80 dBFS


# ---- params mistakes across sections: `mer params`, one line each, no knock-on --------------------


def _params_with(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["segment"].update(modalities={}),
     "params.yaml: segment.modalities: names no modality; expected {name: feature table}, e.g. {face: vggface, "
     "acoustic: egemaps}"),
    (lambda d: d["segment"].update(layout="native"),
     "params.yaml: grid.models.0: model 'crossmodal' does not take segment layout 'native'; it takes aligned, "
     "windows, frames (segment.layout: native)"),
    (lambda d: d["grid"].update(models=["crossmodal", "auxformr"]),
     "params.yaml: grid.models.1: unknown model 'auxformr' (did you mean 'auxformer'?); known models: "),
    (lambda d: d["faces"].update(min_probabilty=0.9),
     "params.yaml: faces.min_probabilty: unknown key (did you mean 'min_probability'?); known keys: "),
    (lambda d: d["segment"]["partition"].update(protocoll=d["segment"]["partition"].pop("protocol")),
     "params.yaml: segment.partition.protocoll: unknown key (did you mean 'protocol'?); known keys: protocol, "),
    (lambda d: d["model"]["crossmodal"].update(parms=d["model"]["crossmodal"].pop("params")),
     "params.yaml: model.crossmodal.parms: unknown key (did you mean 'params'?); known keys: params, train"),
    (lambda d: d["segment"]["modalities"].update(txt=d["segment"]["modalities"].pop("text")),
     "params.yaml: train.modalities.3: 'text' is not in segment.modalities (face, acoustic, speech, txt); "),
    (lambda d: d["grid"].update(strategies=["standard", "clip_zro"]),
     "params.yaml: grid.strategies.1: unknown strategy 'clip_zro' (did you mean 'clip_zero'?); known strategies: "),
], ids=["empty_modalities", "layout_not_taken", "misspelled_grid_model", "misspelled_key", "nested_key", "entry_key",
                                   "train_modality_not_segmented", "misspelled_grid_strategy"])
def test_params_mistake_is_one_line(tmp_path, monkeypatch, edit, expected):
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    assert base["grid"]["models"][:2] == ["crossmodal", "auxformer"] and "auxformer" in base["grid"]["eliminate"]
    _params_with(tmp_path, edit)
    monkeypatch.chdir(tmp_path)
    (line,) = check_params("params.yaml")
    assert line.startswith(expected), line
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["params"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [x for x in result.output.splitlines() if x.startswith("error: ")] == [f"error: {line}"]


def test_valid_params_pass(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    assert check_params(tmp_path / "params.yaml") == []


# ---- the report says which silence policy the features used -----------------------------------------


def test_report_names_the_silence_policy(tmp_path):
    import json
    import re
    from html import unescape

    from test_report import fabricate

    from pipeline.core.features import FeatureMeta
    from pipeline.core.paths import REPORT_DIR
    from pipeline.report import build_report
    from pipeline.report.params import ReportParams
    from pipeline.segment.align import modality_info as _info

    meta = FeatureMeta(name="egemaps", extractor="EgemapsLld", version="1", dim=25, rate_hz=100.0, modality="audio",
                       backbone="openSMILE eGeMAPSv02 LLD", pretrained=True, params=LldParams().model_dump(mode="json"),
                       learned=False)
    assert _info("egemaps", meta).silence == "mask"  # segment carries it from the table's params to segments.json
    fabricate(tmp_path)
    path = tmp_path / "data/segments/segments.json"
    seg = json.loads(path.read_text())
    seg["modalities"]["acoustic"]["silence"] = "mask"
    path.write_text(json.dumps(seg))
    page = build_report(tmp_path, REPORT_DIR, ReportParams()).read_text()
    rows = {r[0]: r for r in ([unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, flags=re.S)]
                              for row in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)) if r}
    assert rows["modality"][-1] == "silent steps"
    assert rows["acoustic"][-1] == "masked (missing)" and rows["face"][-1] == "—"


def test_wav2vec2_masks_frames_of_digital_silence():
    from pipeline.extract.params import Wav2Vec2Params
    from pipeline.extract.wav2vec2 import Wav2Vec2Features

    signal = np.concatenate([_noise(0.3), np.zeros(int(0.3 * SR), np.float32), _noise(0.3, 2)])
    mask = Wav2Vec2Features(Wav2Vec2Params(), device="cpu").process_signal(signal, "gap.wav")
    keep = Wav2Vec2Features(Wav2Vec2Params(silence="keep"), device="cpu").process_signal(signal, "gap.wav")
    field = 0.025  # the receptive field each frame's t is the centre of
    inside = (mask.t - field / 2 >= 0.3) & (mask.t + field / 2 <= 0.6)
    assert inside.sum() >= 12 and keep.present.all()
    assert not mask.present[inside].any() and not mask.values[inside].any()
    assert mask.present[~inside].all()
    np.testing.assert_array_equal(mask.values[~inside], keep.values[~inside])
