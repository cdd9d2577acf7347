import numpy as np
import pytest

from pipeline.corpus.manifest import Clip, CorpusInfo, write_labels
from pipeline.segment.align import align_clip, normalise
from pipeline.segment.params import PartitionParams, SegmentError, SegmentParams
from pipeline.segment.protocols import ProtocolError, assign_folds
from pipeline.segment.stage import segment_corpus


def assign_partitions(clips, devel, test, seed):
    return assign_folds(clips, "corpus", devel, test, seed=seed)[0]
from pipeline.core.features import ClipFeatures, FeatureMeta, write_features
from pipeline.segment.contract import load_segments


def test_align_regular_rows_average_within_steps():
    # 4 rows at 10 Hz on a 5 Hz grid: steps 0 and 1 get two rows each; the absent row is ignored
    rows = ClipFeatures([0.05, 0.15, 0.25, 0.35], [True, True, False, True], [[1.0], [3.0], [100.0], [7.0]])
    values, present = align_clip(rows, n_steps=3, rate_hz=5.0, dim=1)
    assert present.tolist() == [True, True, False]
    assert values[:, 0].tolist() == [2.0, 7.0, 0.0]


def test_align_words_cover_every_overlapped_step():
    # word 1 spans 0.1-0.5 s -> steps 0,1,2 at 5 Hz; word 2 spans 0.45-0.55 -> step 2 only
    rows = ClipFeatures([0.3, 0.5], [True, True], [[2.0], [4.0]], span=[[0.1, 0.5], [0.45, 0.55]])
    values, present = align_clip(rows, n_steps=4, rate_hz=5.0, dim=1)
    assert present.tolist() == [True, True, True, False]
    assert values[:, 0].tolist() == [2.0, 2.0, 3.0, 0.0]


def test_align_missing_clip_is_all_absent():
    values, present = align_clip(None, n_steps=2, rate_hz=5.0, dim=3)
    assert not present.any() and values.shape == (2, 3) and not values.any()


def _clips(n_speakers=5, per=2):
    return [
        Clip(clip_id=f"s{s}_c{c}", speaker=f"s{s}", media_path="x.mp4", duration=1.0, label=["a", "b"][c % 2])
        for s in range(n_speakers)
        for c in range(per)
    ]


def test_partitions_are_speaker_independent_and_seeded():
    clips = _clips(10, 3)
    p = assign_partitions(clips, devel=0.2, test=0.2, seed=1)
    by_speaker = {}
    for c, part in zip(clips, p):
        by_speaker.setdefault(c.speaker, set()).add(part)
    assert all(len(parts) == 1 for parts in by_speaker.values())
    counts = {k: sum(1 for v in by_speaker.values() if k in v) for k in ("train", "devel", "test")}
    assert counts == {"train": 6, "devel": 2, "test": 2}
    assert (assign_partitions(clips, 0.2, 0.2, seed=1) == p).all()
    assert not (assign_partitions(clips, 0.2, 0.2, seed=2) == p).all()


def test_partitions_from_manifest_win():
    clips = _clips(3, 1)
    for c, part in zip(clips, ["test", "train", "devel"]):
        c.partition = part
    assert assign_partitions(clips, 0.2, 0.2, 0).tolist() == ["test", "train", "devel"]


def test_too_few_speakers_is_a_clear_error():
    with pytest.raises(ProtocolError, match="at least one training speaker"):
        assign_partitions(_clips(2, 1), devel=0.2, test=0.2, seed=0)


def test_normalise_uses_training_statistics_only():
    x = np.zeros((3, 2, 1), np.float32)
    x[0, :, 0] = [1.0, 3.0]  # train
    x[1, :, 0] = [1000.0, 1000.0]  # not train: must not move the statistics
    x[2, 0, 0] = 5.0
    mask = np.array([[True, True], [True, True], [True, False]])
    train = np.array([True, False, False])
    out, mean, std = normalise(x, mask, train)
    assert mean[0] == pytest.approx(2.0) and std[0] == pytest.approx(1.0)
    assert out[0, :, 0].tolist() == [-1.0, 1.0]
    assert out[2, 0, 0] == pytest.approx(3.0) and out[2, 1, 0] == 0.0  # absent stays zero


def test_segment_corpus_end_to_end(tmp_path):
    clips = _clips(5, 2)
    info = CorpusInfo(name="t", classes=["a", "b"])
    audio = FeatureMeta("aud", "X", "1", 2, 10.0, "audio", "A", True)
    text = FeatureMeta("txt", "X", "1", 1, None, "text", "T", False)
    rng = np.random.default_rng(0)
    write_features(
        tmp_path / "aud.parquet",
        audio,
        {c.clip_id: ClipFeatures(np.arange(10) / 10 + 0.05, np.ones(10, bool), rng.normal(size=(10, 2))) for c in clips},
    )
    # one clip without text at all -> text absent for the whole clip
    write_features(
        tmp_path / "txt.parquet",
        text,
        {c.clip_id: ClipFeatures([0.5], [True], [[1.0]], span=[[0.0, 1.0]]) for c in clips[1:]},
    )
    write_labels(tmp_path / "labels.parquet", {
        "clip_id": [clips[0].clip_id] * 3, "t": [0.0, 0.5, 1.0], "arousal": [0.0, 1.0, 0.0], "valence": [0.0, 0.0, 0.0],
    })
    params = SegmentParams(modalities={"acoustic": "aud", "text": "txt"}, rate_hz=5.0, max_steps=4,
                           partition=PartitionParams(devel=0.2, test=0.2, seed=0))
    seg = segment_corpus(info, clips, params, features_dir=tmp_path, labels_path=tmp_path / "labels.parquet")
    seg.save(tmp_path / "seg")
    back = load_segments(tmp_path / "seg")
    assert back.x["acoustic"].shape == (10, 4, 2) and back.x["text"].shape == (10, 4, 1)
    assert back.length.tolist() == [4] * 10  # 1 s at 5 Hz = 5 steps, cut to max_steps
    assert not back.mask["text"][0].any() and back.mask["text"][1].all()
    train = back.partition == "train"
    present = back.x["acoustic"][train][back.mask["acoustic"][train]]
    assert np.allclose(present.mean(0), 0, atol=1e-5) and np.allclose(present.std(0), 1, atol=1e-4)
    assert back.label.tolist() == [0, 1] * 5
    assert back.modalities["text"].pretrained is False and "RANDOM" in back.modalities["text"].weights_statement
    # arousal rises to 1 at 0.5 s: the step centred at 0.5 s reads 1, the one at 0.1 s reads 0.2
    assert back.arousal[0, 2] == pytest.approx(1.0) and back.arousal[0, 0] == pytest.approx(0.2)
    assert back.label_mask[0].all() and not back.label_mask[1].any()


def test_missing_feature_table_names_the_file(tmp_path):
    params = SegmentParams(modalities={"face": "nope"})
    with pytest.raises(SegmentError, match="nope.parquet"):
        segment_corpus(CorpusInfo(name="t", classes=["a", "b"]), _clips(5, 2), params, features_dir=tmp_path)


def test_a_feature_slower_than_the_grid_holds_each_sample_over_its_period():
    from pipeline.segment.align import align_clip

    rows = ClipFeatures([0.0, 0.5, 1.0, 1.5], [True, True, False, True], np.array([[1.0], [3.0], [0.0], [7.0]]))
    plain, plain_present = align_clip(rows, 10, 5.0, 1)
    assert plain_present.sum() == 3  # without the rate: only the steps holding a sample
    values, present = align_clip(rows, 10, 5.0, 1, source_rate_hz=2.0)
    # sample k covers [0.5k − 0.25, 0.5k + 0.25): steps of 0.2 s overlapping it; t = 1.0 is absent
    assert present.tolist() == [True, True, True, True, False, False, True, True, True, False]
    assert values[:, 0].tolist() == pytest.approx([1, 2, 3, 3, 0, 0, 7, 7, 7, 0])
    fast, _ = align_clip(rows, 10, 5.0, 1, source_rate_hz=10.0)  # faster than the grid: unchanged
    np.testing.assert_array_equal(fast, plain)


def test_several_folds_are_stored_once_with_each_folds_statistics(tmp_path):
    clips = _clips(6, 2)
    info = CorpusInfo(name="t", classes=["a", "b"])
    audio = FeatureMeta("aud", "X", "1", 2, 10.0, "audio", "A", True)
    rng = np.random.default_rng(1)
    write_features(tmp_path / "aud.parquet", audio, {
        c.clip_id: ClipFeatures(np.arange(10) / 10 + 0.05, np.ones(10, bool), rng.normal(i, 1 + i, size=(10, 2)))
        for i, c in enumerate(clips)})
    params = SegmentParams(modalities={"acoustic": "aud"}, rate_hz=5.0, max_steps=4,
                           partition=PartitionParams(protocol="leave_one_group_out", devel=0.25))
    seg = segment_corpus(info, clips, params, features_dir=tmp_path)
    seg.save(tmp_path / "seg")
    back = load_segments(tmp_path / "seg")
    assert back.n_folds == 6 and back.folds.shape == (6, 12)
    assert back.for_fold(0) is back
    for k in range(6):
        fold = back.for_fold(k)
        assert fold.partition.tolist() == back.folds[k].tolist() and (fold.partition == "test").sum() == 2
        train = fold.partition == "train"
        present = fold.x["acoustic"][train][fold.mask["acoustic"][train]]  # z-scored with fold k's own statistics
        assert np.allclose(present.mean(0), 0, atol=1e-4) and np.allclose(present.std(0), 1, atol=1e-3)
    with pytest.raises(SegmentError, match="segment.partition: leave_one_group_out by session"):
        segment_corpus(info, clips, params.model_copy(update={"partition": PartitionParams(protocol="leave_one_group_out", group="session")}),
                       features_dir=tmp_path)


def test_continuous_labels_never_bridge_unannotated_samples(tmp_path):
    from pipeline.segment.align import continuous_labels as _continuous_labels

    clips = _clips(2, 1)
    # 10 Hz labels over 1 s; samples 0.4–0.6 s not annotated (null) in the first clip; the second has one row
    t = np.arange(10) / 10
    arousal = [0.1 * k for k in range(10)]
    for k in (4, 5, 6):
        arousal[k] = None
    write_labels(tmp_path / "l.parquet", {
        "clip_id": [clips[0].clip_id] * 10 + [clips[1].clip_id], "t": list(t) + [0.0],
        "arousal": arousal + [0.5], "valence": [0.0] * 10 + [-0.5]})
    steps = np.tile((np.arange(10) + 0.5) / 10, (2, 1))
    a, v, mask = _continuous_labels(tmp_path / "l.parquet", clips, steps, np.array([9, 9]))
    # steps at 0.05 … 0.85: those between annotated samples 0.3 and 0.7 (0.35 … 0.65) are not labels
    assert mask[0, :9].tolist() == [True, True, True, False, False, False, False, True, True]
    assert a[0, 1] == pytest.approx(0.15) and np.isfinite(a).all()
    assert mask[1, :9].all() and a[1, 0] == pytest.approx(0.5) and v[1, 3] == pytest.approx(-0.5)
    write_labels(tmp_path / "none.parquet", {"clip_id": [], "t": [], "arousal": [], "valence": []})
    assert _continuous_labels(tmp_path / "none.parquet", clips, steps, np.array([9, 9])) == (None, None, None)


def test_a_modality_absent_throughout_is_an_error_naming_it(tmp_path):
    clips = _clips(5, 2)
    info = CorpusInfo(name="t", classes=["a", "b"])
    write_features(tmp_path / "aud.parquet", FeatureMeta("aud", "X", "1", 2, 10.0, "audio", "A", True),
                   {c.clip_id: ClipFeatures(np.arange(10) / 10 + 0.05, np.ones(10, bool), np.ones((10, 2))) for c in clips})
    write_features(tmp_path / "txt.parquet", FeatureMeta("txt", "X", "1", 1, None, "text", "T", False), {})  # no transcripts
    params = SegmentParams(modalities={"acoustic": "aud", "text": "txt"}, rate_hz=5.0, max_steps=4)
    with pytest.raises(SegmentError, match=r"modality 'text' .*no step of the corpus has it.*remove 'text' from segment.modalities"):
        segment_corpus(info, clips, params, features_dir=tmp_path)
