"""openSMILE LLD extractors on real CREMA-D audio: eGeMAPSv02 (`lld` stage → feature `egemaps`) and
ComParE_2016 LLDs + deltas (`compare` stage → feature `compare`)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import opensmile
import pandas as pd
import pytest
import soundfile as sf

from pipeline.core.features import read_features
from pipeline.corpus.manifest import Clip, CorpusInfo, write_manifest
from pipeline.extract.base import ExtractionError
from pipeline.extract.opensmile_lld import (
    CompareLld,
    CompareParams,
    EgemapsLld,
    LldParams,
    on_grid,
)
from pipeline.media import MediaError, read_audio

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def flvs(crema_d_dir) -> list[Path]:
    paths = sorted((crema_d_dir / "VideoFlash").glob("*.flv"))
    assert len(paths) == 3
    return paths


@pytest.fixture(scope="module")
def lld() -> EgemapsLld:
    # silence: keep — openSMILE's own values for every frame (the equality tests); mask: tests below
    return EgemapsLld(LldParams(silence="keep"))


def clip_for(path: Path, clip_id: str = "c") -> Clip:
    return Clip(clip_id=clip_id, speaker="1001", media_path=str(path), duration=2.0)


def test_values_equal_opensmile_process_file(lld, flvs, tmp_path):
    for flv in flvs:
        rows = lld.process_clip(clip_for(flv), Path("."))
        wav = tmp_path / f"{flv.stem}.wav"
        sf.write(wav, read_audio(flv, 16000), 16000, subtype="FLOAT")  # lossless: float samples
        ref = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
        ).process_file(str(wav))
        assert rows.values.shape == (len(ref), 25)
        np.testing.assert_array_equal(rows.values, ref.to_numpy(np.float32))
        assert rows.present.all()
        # t = frame centre: start + 10 ms (20 ms frames); the last frame's index end is the signal end
        start = ref.index.get_level_values("start").total_seconds().to_numpy()
        np.testing.assert_allclose(rows.t, start + 0.010, atol=1e-9)


def test_shape_rate_and_times(lld, flvs):
    assert lld.dim == 25 and lld.rate_hz == 100.0
    assert lld.columns[0] == "Loudness_sma3" and lld.columns[-1] == "F3amplitudeLogRelF0_sma3nz"
    signal = read_audio(flvs[0], 16000)
    rows = lld.process_clip(clip_for(flvs[0]), Path("."))
    np.testing.assert_allclose(np.diff(rows.t), 0.010, atol=1e-9)
    assert rows.t[0] == pytest.approx(0.010)
    # one frame every 10 ms; the 60 ms F0 window makes openSMILE stop a few frames before the end
    duration = len(signal) / 16000
    assert 0 <= round(duration * 100) - len(rows.t) <= 6
    assert rows.t[-1] < duration
    meta = lld.meta()
    assert meta.backbone == "openSMILE eGeMAPSv02 LLD" and meta.pretrained and meta.rate_hz == 100.0
    assert "not learned weights" in meta.notes


def test_separate_wav_audio_path_is_used(lld, flvs, tmp_path):
    wav = tmp_path / "speech.wav"
    sf.write(wav, read_audio(flvs[1], 16000), 16000, subtype="FLOAT")
    clip = Clip(clip_id="c", speaker="s", media_path=str(tmp_path / "no-video.mp4"), audio_path=str(wav), duration=2)
    from_wav = lld.process_clip(clip, Path("."))
    np.testing.assert_array_equal(from_wav.values, lld.process_clip(clip_for(flvs[1]), Path(".")).values)


def test_too_short_signal_is_an_error_naming_the_file(lld, tmp_path):
    wav = tmp_path / "blip.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 480).astype(np.float32), 16000)  # 30 ms
    with pytest.raises(ExtractionError, match=r"blip\.wav: audio too short"):
        lld.process_clip(Clip(clip_id="b", speaker="s", media_path=str(wav), duration=0.03), Path("."))
    with pytest.raises(ExtractionError, match="no samples"):
        lld.process_signal(np.zeros(0, np.float32), 16000, "empty.wav")


def test_missing_file_is_a_media_error(lld, tmp_path):
    with pytest.raises(MediaError, match="gone.flv: file not found"):
        lld.process_clip(clip_for(tmp_path / "gone.flv"), Path("."))


def test_nan_frames_are_absent_not_values(lld, monkeypatch):
    # openSMILE gives NaN rows only in edge cases; the mapping NaN -> present=False is pure logic
    idx = pd.MultiIndex.from_arrays(
        [pd.to_timedelta([0.0, 0.01, 0.02], unit="s"), pd.to_timedelta([0.02, 0.03, 0.035], unit="s")],
        names=["start", "end"],
    )
    values = np.ones((3, 25), np.float32)
    values[1, 4] = np.nan
    fake = pd.DataFrame(values, index=idx, columns=lld.columns)
    monkeypatch.setattr(lld.smile, "process_signal", lambda signal, sr: fake)
    rows = lld.process_signal(np.full(1000, 0.1, np.float32), 16000, "x.wav")
    assert rows.present.tolist() == [True, False, True]
    assert not rows.values[1].any() and rows.values[0].all()
    np.testing.assert_allclose(rows.t, [0.01, 0.02, 0.03])  # last frame: nominal 20 ms, not 15 ms


def _stage_dir(tmp: Path, media: list[Path]) -> Path:
    (tmp / "params.yaml").write_text("lld:\n  on_error: fail\n")
    clips = [clip_for(p, f"c{i}") for i, p in enumerate(media)]
    write_manifest(tmp / "data/corpus/manifest.parquet", CorpusInfo(name="demo", classes=["neutral"]), clips)
    return tmp


def test_stage_script_writes_the_table(flvs, tmp_path):
    cwd = _stage_dir(tmp_path, flvs)
    run = subprocess.run([sys.executable, str(REPO / "stages/lld.py")], cwd=cwd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    meta, clips = read_features(cwd / "data/features/egemaps.parquet")
    assert meta.name == "egemaps" and meta.dim == 25 and meta.rate_hz == 100.0 and meta.pretrained
    assert sorted(clips) == ["c0", "c1", "c2"]
    assert all(c.values.shape[1] == 25 and c.present.all() for c in clips.values())
    assert (cwd / "data/errors/egemaps.csv").read_text().strip() == "clip_id,error"


def test_stage_script_bad_media_is_one_line(tmp_path):
    bad = tmp_path / "broken.flv"
    bad.write_bytes(b"not a video at all" * 10)
    cwd = _stage_dir(tmp_path, [bad])
    run = subprocess.run([sys.executable, str(REPO / "stages/lld.py")], cwd=cwd, capture_output=True, text=True)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    err = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "clip c0" in err[0] and "broken.flv" in err[0]
    assert not (cwd / "data/features/egemaps.parquet").exists()


# ----------------------------------------------------------------------------------------------
# ComParE_2016 LLDs + deltas (feature `compare`)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compare() -> CompareLld:
    return CompareLld(CompareParams(silence="keep"))


def _smile_file(wav: Path, level: str) -> pd.DataFrame:
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.ComParE_2016, feature_level=opensmile.FeatureLevel[level]
    ).process_file(str(wav))


def test_compare_equals_opensmile_process_file_on_every_crema_d_clip(compare, flvs, tmp_path):
    for flv in flvs:
        rows = compare.process_clip(clip_for(flv), Path("."))
        wav = tmp_path / f"{flv.stem}.wav"
        sf.write(wav, read_audio(flv, 16000), 16000, subtype="FLOAT")  # lossless: float samples
        lld, de = _smile_file(wav, "LowLevelDescriptors"), _smile_file(wav, "LowLevelDescriptors_Deltas")
        n = len(lld)
        assert n > 150 and len(de) == n + 2  # the delta level flushes two frames more at the end: dropped
        assert rows.values.shape == (n, 130) and rows.present.all()
        np.testing.assert_array_equal(rows.values[:, :65], lld.to_numpy(np.float32))
        np.testing.assert_array_equal(rows.values[:, 65:], de.to_numpy(np.float32)[:n])
        # same frames: equal index starts, and delta row i is openSMILE's ±2-frame regression around LLD
        # row i (for the 59 energy/spectral descriptors; the 6 voicing ones, F0 to HNR, take deltas only
        # inside voiced segments, zero at their bounds: `onlyInSegments` in the ComParE config)
        start = lld.index.get_level_values("start").total_seconds().to_numpy()
        np.testing.assert_array_equal(de.index.get_level_values("start").total_seconds().to_numpy()[:n], start)
        x = lld.to_numpy(np.float64)[:, 6:]
        regression = (x[3:-1] - x[1:-3] + 2 * (x[4:] - x[:-4])) / 10
        scale = np.abs(x).max(axis=0)  # per descriptor: their ranges differ by orders of magnitude
        assert np.all(np.abs(rows.values[2:-2, 65 + 6 :] - regression) <= 1e-5 * scale + 1e-4 * np.abs(regression))
        off_by_one = np.abs(rows.values[3:-2, 65 + 6 :] - regression[:-1]).max(axis=0)  # the next row: not it
        assert np.all(off_by_one > 100 * np.abs(rows.values[2:-2, 65 + 6 :] - regression).max(axis=0))
        # t = frame centre (60 ms index frames: start + 30 ms); the last frame repeats the previous start
        # in openSMILE's index and takes its place on the 10 ms grid instead
        assert start[-1] == start[-2]
        np.testing.assert_allclose(rows.t[:-1], start[:-1] + 0.030, atol=1e-9)
        np.testing.assert_allclose(np.diff(rows.t), 0.010, atol=1e-9)


def test_compare_when_the_levels_label_their_last_frames_differently(compare, tmp_path):
    # found by benchmarks/extract.py: on this demo clip (48,128 decoded samples, ending in silence)
    # openSMILE labels the last LLD frames …2.92, 2.93, 2.94, 2.94 and the delta frames …2.92, 2.92,
    # 2.92, 2.94; rows still pair by position (the labels of the flush frames are not reliable)
    from pipeline.corpus.demo import plan_corpus, render_clip
    from pipeline.corpus.demo.params import CorpusParams

    params = CorpusParams(speakers=41, clips_per_speaker=1, seconds=3.0, seed=7)
    plan = next(p for p in plan_corpus(params) if p.clip_id == "spk25_clip000")
    clip = render_clip(plan, params, tmp_path).clip
    wav = tmp_path / "clip.wav"
    sf.write(wav, read_audio(clip.media(), 16000), 16000, subtype="FLOAT")
    lld, de = _smile_file(wav, "LowLevelDescriptors"), _smile_file(wav, "LowLevelDescriptors_Deltas")
    n = len(lld)
    starts = [df.index.get_level_values("start").total_seconds().to_numpy() for df in (lld, de)]
    assert not np.array_equal(starts[0], starts[1][:n])  # the quirk is there
    np.testing.assert_array_equal(starts[0][:-3], starts[1][: n - 3])
    rows = compare.process_clip(clip, Path("."))
    np.testing.assert_array_equal(rows.values[:, :65], lld.to_numpy(np.float32))
    np.testing.assert_array_equal(rows.values[:, 65:], de.to_numpy(np.float32)[:n])
    np.testing.assert_allclose(np.diff(rows.t), 0.010, atol=1e-9)


def test_compare_dimension_names_rate_and_meta(compare, flvs):
    assert compare.dim == 130 and compare.rate_hz == 100.0
    assert compare.columns[:2] == ["F0final_sma", "voicingFinalUnclipped_sma"]
    assert compare.columns[64] == "mfcc_sma[14]" and compare.columns[129] == "mfcc_sma_de[14]"
    assert compare.columns[65:] == [c.replace("_sma", "_sma_de", 1) for c in compare.columns[:65]]
    assert len(set(compare.columns)) == 130
    rows = compare.process_clip(clip_for(flvs[0]), Path("."))
    assert rows.t[0] == pytest.approx(0.030)
    meta = compare.meta()
    assert (meta.name, meta.dim, meta.rate_hz, meta.modality) == ("compare", 130, 100.0, "audio")
    assert meta.backbone == "openSMILE ComParE_2016 LLD+LLD deltas" and meta.pretrained and not meta.learned
    assert "60 ms frames every 10 ms" in meta.notes and meta.params["columns"] == compare.columns
    # 002 §3.2.2's 65 LLDs alone: the first half, unchanged; a different cache key
    plain = CompareLld(CompareParams(deltas=False))
    assert plain.dim == 65 and plain.columns == compare.columns[:65]
    np.testing.assert_array_equal(plain.process_clip(clip_for(flvs[0]), Path(".")).values, rows.values[:, :65])
    assert plain.config_fingerprint() != compare.config_fingerprint()
    assert EgemapsLld(LldParams()).config_fingerprint() != compare.config_fingerprint()


def test_compare_silence_kept_is_present_with_zero_deltas(compare):
    rows = compare.process_signal(np.zeros(16000, np.float32), 16000, "silence.wav")
    assert len(rows.t) > 90 and rows.present.all()
    assert not rows.values[:, 65:].any()  # constant LLDs: every delta is zero
    assert np.ptp(rows.values[2:-2, :65], axis=0).max() == 0
    masked = CompareLld(CompareParams()).process_signal(np.zeros(16000, np.float32), 16000, "silence.wav")
    assert len(masked.t) == len(rows.t) and not masked.present.any() and not masked.values.any()


def _speech_gap_speech() -> np.ndarray:
    """0.5 s of noise at about -20 dBFS, 0.5 s of digital silence, 0.5 s of noise at about -50 dBFS."""
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(0, 0.1, 8000), np.zeros(8000), rng.normal(0, 0.003, 8000)]).astype(np.float32)


@pytest.mark.parametrize("make", [lambda **kw: EgemapsLld(LldParams(**kw)), lambda **kw: CompareLld(CompareParams(**kw))],
                         ids=["egemaps", "compare"])
def test_silence_mask_marks_silent_frames_missing(make):
    signal = _speech_gap_speech()
    keep = make(silence="keep").process_signal(signal, 16000, "gap.wav")
    mask = make().process_signal(signal, 16000, "gap.wav")
    np.testing.assert_array_equal(mask.t, keep.t)
    half = make().frame_s / 2
    inside_gap = (mask.t - half >= 0.5 + 1e-3) & (mask.t + half <= 1.0 - 1e-3)
    touches_sound = (mask.t - half < 0.5 - 1e-3) | (mask.t + half > 1.0 + 1e-3)
    assert inside_gap.sum() >= 40 and keep.present.all()
    assert not mask.present[inside_gap].any() and not mask.values[inside_gap].any()
    assert mask.present[touches_sound].all()
    np.testing.assert_array_equal(mask.values[mask.present], keep.values[mask.present])
    # an energy threshold also masks the quiet noise (about -50 dBFS), not the loud one (about -20)
    quiet = make(silence_dbfs=-35.0).process_signal(signal, 16000, "gap.wav")
    assert quiet.present[mask.t + half < 0.5].all() and not quiet.present[mask.t - half > 1.0].any()
    with pytest.raises(ValueError):
        LldParams(silence="drop")


def test_compare_too_short_signal_is_an_error_naming_the_file(compare, tmp_path):
    wav = tmp_path / "blip.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 800).astype(np.float32), 16000)  # 50 ms
    with pytest.raises(ExtractionError, match=r"blip\.wav: audio too short for openSMILE ComParE_2016"):
        compare.process_clip(Clip(clip_id="b", speaker="s", media_path=str(wav), duration=0.05), Path("."))


def test_compare_misaligned_delta_frames_are_an_error(compare, monkeypatch):
    idx = lambda starts: pd.MultiIndex.from_arrays(  # noqa: E731
        [pd.to_timedelta(starts, unit="s"), pd.to_timedelta(np.add(starts, 0.06), unit="s")], names=["start", "end"]
    )
    lld = pd.DataFrame(np.ones((6, 65)), index=idx(np.arange(6) * 0.01))
    shifted = pd.DataFrame(np.ones((8, 65)), index=idx(np.arange(1, 9) * 0.01))
    monkeypatch.setattr(compare.smiles[0], "process_signal", lambda signal, sr: lld)
    monkeypatch.setattr(compare.smiles[1], "process_signal", lambda signal, sr: shifted)
    with pytest.raises(ExtractionError, match=r"x\.wav: openSMILE ComParE_2016 LowLevelDescriptors_Deltas frames do not"):
        compare.process_signal(np.zeros(1000, np.float32), 16000, "x.wav")
    monkeypatch.setattr(compare.smiles[1], "process_signal", lambda signal, sr: shifted.iloc[:5])
    with pytest.raises(ExtractionError, match=r"\(5 vs 6\)"):
        compare.process_signal(np.zeros(1000, np.float32), 16000, "x.wav")


def test_repeated_frame_starts_move_onto_the_grid():
    np.testing.assert_allclose(on_grid([0.0, 0.01, 0.02, 0.02, 0.02]), [0.0, 0.01, 0.02, 0.03, 0.04])
    regular = np.arange(5) * 0.01
    np.testing.assert_array_equal(on_grid(regular), regular)
