"""The runner's per-clip cache, streaming output and error policy, with a counting fake extractor
(pure logic: the real extractors are exercised through the runner in their own tests and the DVC
integration test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.features import ClipFeatures, read_features
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError, Extractor
from pipeline.extract.runner import RunStats, StageError, extract_corpus


class Counting(Extractor):
    """Rows derived from the media file's bytes; counts the clips it processed."""

    name = "counting"
    modality = "audio"

    def __init__(self, scale: float = 1.0, batch: int = 1):
        self.dim, self.rate_hz, self.scale = 3, 10.0, scale
        self.batch_clips = batch
        self.seen: list[str] = []

    def process_clip(self, clip: Clip, root: Path) -> ClipFeatures:
        data = clip.media(root).read_bytes()
        if data.startswith(b"BAD"):
            raise ExtractionError(f"{clip.media(root)}: unreadable")
        self.seen.append(clip.clip_id)
        v = np.frombuffer(data.ljust(6, b"\0")[:6], np.uint8).astype(np.float32).reshape(2, 3) * self.scale
        return ClipFeatures([0.05, 0.15], [True, False], v)

    def backbone(self):
        return "none", False

    def params(self):
        return {"scale": self.scale}


def _corpus(tmp: Path, n: int, bad: set[int] = frozenset()) -> list[Clip]:
    clips = []
    for i in range(n):
        f = tmp / "media" / f"c{i:02d}.wav"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes((b"BAD" if i in bad else b"") + bytes([i + 1, 2 * i + 1, 3, 4, 5, 6]))
        clips.append(Clip(f"c{i:02d}", "s", str(f), 1.0))
    return clips


def _run(ex, clips, tmp, cache=True, **kw):
    stats = RunStats()
    out = extract_corpus(
        ex, clips, out_dir=tmp / "features", errors_dir=tmp / "errors",
        cache_dir=(tmp / "cache") if cache else None, stats=stats, **kw,
    )
    return out, stats


def test_cache_extracts_only_new_clips_and_output_equals_uncached_run(tmp_path):
    clips = _corpus(tmp_path, 5)
    ex = Counting()
    out, st = _run(ex, clips[:4], tmp_path)
    assert (st.extracted, st.cached) == (4, 0)
    ex2 = Counting()
    out, st = _run(ex2, clips, tmp_path)  # one clip added
    assert ex2.seen == ["c04"] and (st.extracted, st.cached) == (1, 4)
    _, cached_rows = read_features(out)
    fresh, _ = _run(Counting(), clips, tmp_path / "fresh", cache=False)
    _, fresh_rows = read_features(fresh)
    assert sorted(cached_rows) == sorted(fresh_rows) == [c.clip_id for c in clips]
    for k in fresh_rows:
        np.testing.assert_array_equal(cached_rows[k].values, fresh_rows[k].values)
        np.testing.assert_array_equal(cached_rows[k].present, fresh_rows[k].present)
    assert cached_rows["c03"].values[0].tolist() == [4.0, 7.0, 3.0]


def test_params_change_reextracts_and_content_change_reextracts_that_clip(tmp_path):
    clips = _corpus(tmp_path, 3)
    _run(Counting(), clips, tmp_path)
    ex = Counting(scale=2.0)
    out, _ = _run(ex, clips, tmp_path)
    assert ex.seen == ["c00", "c01", "c02"]
    assert read_features(out)[1]["c00"].values[0].tolist() == [2.0, 2.0, 6.0]
    Path(clips[1].media_path).write_bytes(bytes([9, 9, 9, 9, 9, 9]))
    ex = Counting(scale=2.0)
    out, _ = _run(ex, clips, tmp_path)
    assert ex.seen == ["c01"]
    assert read_features(out)[1]["c01"].values[0].tolist() == [18.0, 18.0, 18.0]


def test_identical_media_under_two_ids_keep_their_own_ids(tmp_path):
    clips = _corpus(tmp_path, 2)
    twin = tmp_path / "media" / "twin" / "c00.wav"  # same name and bytes as c00, another clip
    twin.parent.mkdir()
    twin.write_bytes(Path(clips[0].media_path).read_bytes())
    clips.append(Clip("zz", "s", str(twin), 1.0))
    ex = Counting()
    out, st = _run(ex, clips, tmp_path)
    rows = read_features(out)[1]
    assert sorted(rows) == ["c00", "c01", "zz"]
    np.testing.assert_array_equal(rows["zz"].values, rows["c00"].values)


def test_errors_follow_policy_and_are_not_cached(tmp_path):
    clips = _corpus(tmp_path, 4, bad={2})
    with pytest.raises(StageError, match=r"counting: clip c02: .*c02.wav: unreadable"):
        _run(Counting(), clips, tmp_path)
    out, st = _run(Counting(batch=3), clips, tmp_path, on_error="skip")
    assert sorted(read_features(out)[1]) == ["c00", "c01", "c03"]
    assert st.errors == [("c02", f"{clips[2].media_path}: unreadable")]
    assert "c02" in (tmp_path / "errors" / "counting.csv").read_text()
    Path(clips[2].media_path).write_bytes(bytes([7, 7, 7, 7, 7, 7]))  # fixed file: tried again
    ex = Counting()
    out, st = _run(ex, clips, tmp_path, on_error="skip")
    assert ex.seen == ["c02"] and not st.errors
    assert sorted(read_features(out)[1]) == ["c00", "c01", "c02", "c03"]


def test_a_bug_is_not_taken_for_bad_media(tmp_path):
    class Buggy(Counting):
        def process_clip(self, clip, root):
            raise KeyError("bug")

    with pytest.raises(KeyError):
        _run(Buggy(), _corpus(tmp_path, 1), tmp_path, on_error="skip")
    assert not (tmp_path / "features" / "counting.parquet").exists()


def test_mer_features_tells_fixed_sets_pretrained_and_random_weights_apart(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.core.features import FeatureMeta, write_features

    rows = {"a": ClipFeatures([0.05], [True], np.ones((1, 2), np.float32))}
    for name, pretrained, learned in [("fixed", True, False), ("learned", True, True), ("random", False, True)]:
        meta = FeatureMeta(name, "X", "1", 2, 10.0, "audio", "net", pretrained, learned=learned)
        write_features(tmp_path / f"{name}.parquet", meta, rows)
    out = CliRunner().invoke(app, ["features", "--directory", str(tmp_path)], env={"COLUMNS": "200"}).output
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "fixed set" in lines["fixed"] and "pretrained" in lines["learned"] and "RANDOM" in lines["random"]


def test_a_feature_only_corpus_gives_media_extractors_empty_tables(tmp_path, monkeypatch, capsys):
    """Ulm-TSST without its videos: the media stages write tables without rows and say why, instead of
    trying to decode the feature CSVs the manifest points at."""
    from pipeline.core.features import read_features
    from pipeline.corpus.manifest import Clip, CorpusInfo, write_manifest
    from pipeline.extract.stage import extract_stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("lld: {}\n")
    (tmp_path / "feat.csv").write_text("timestamp,ECG\n0,1\n")
    write_manifest("data/corpus/manifest.parquet", CorpusInfo("ulm_tsst", [], params={"feature_only": True}),
                   [Clip("1", "1", str(tmp_path / "feat.csv"), 1.0)])
    extract_stage("egemaps")
    assert "has no media (feature-only" in capsys.readouterr().out
    meta, rows = read_features("data/features/egemaps.parquet")
    assert rows == {} and meta.dim == 25
