"""Sequence layouts of `segment` (windows 000, frames 002, native 003) on small synthetic feature tables."""

import numpy as np
import pytest

from pipeline.core.config import section_problems
from pipeline.core.features import ClipFeatures, FeatureMeta, write_features
from pipeline.corpus.manifest import Clip, CorpusInfo, write_labels
from pipeline.segment.contract import load_segments
from pipeline.segment.layouts import (
    context_statistics,
    context_sums,
    sample_starts,
    stack_context,
    statistics,
    window_starts,
)
from pipeline.segment.params import PartitionParams, SegmentError, SegmentParams
from pipeline.segment.stage import segment_corpus

INFO = CorpusInfo(name="t", classes=["a", "b"])


def _clips(durations, n_speakers=5):
    """One clip per duration, speakers cycling, labels alternating, the corpus's own partitions."""
    parts = ["train", "train", "train", "devel", "test"]
    return [Clip(clip_id=f"c{i}", speaker=f"s{i % n_speakers}", media_path="x.mp4", duration=d,
                 label=["a", "b"][i % 2], partition=parts[i % 5]) for i, d in enumerate(durations)]


def _regular(path, clips, rate, dim=1, value=lambda c, k: k, present=lambda c, k: True, name=None):
    """A regular table of rows at `rate` Hz over each clip; row k of clip i holds value(i, k)."""
    meta = FeatureMeta(name or path.stem, "X", "1", dim, rate, "audio", "A", True)
    rows = {}
    for i, c in enumerate(clips):
        n = int(round(c.duration * rate))
        rows[c.clip_id] = ClipFeatures((np.arange(n) + 0.5) / rate, [present(i, k) for k in range(n)],
                                       [[value(i, k)] * dim for k in range(n)])
    write_features(path, meta, rows)


def _roundtrip(seg, tmp_path):
    seg.save(tmp_path / "seg")
    back = load_segments(tmp_path / "seg")
    assert back.layout == seg.layout and back.extra == seg.extra and back.modalities == seg.modalities
    for name in ("clip_id", "partition", "label", "length", "t", "origin", "arousal", "valence", "label_mask", "folds"):
        a, b = getattr(seg, name), getattr(back, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=name)
    for field in ("x", "mask", "mean", "std", "lengths", "fold_mean", "fold_std"):
        a, b = getattr(seg, field), getattr(back, field)
        assert a.keys() == b.keys(), field
        for m in a:
            np.testing.assert_array_equal(a[m], b[m], err_msg=f"{field}[{m}]")
    return back


def test_window_starts_end_at_the_clip_end():
    # 000 §5.3: a 5-minute Ulm-TSST sample at 2 Hz = 600 steps → windows of 250 every 50: 0 … 350 (ends at 600)
    assert window_starts(600, 250, 50).tolist() == [0, 50, 100, 150, 200, 250, 300, 350]
    assert window_starts(620, 250, 50).tolist()[-2:] == [350, 370]  # the last one moved to end at the clip's end
    assert window_starts(100, 250, 50).tolist() == [0] and window_starts(250, 250, 50).tolist() == [0]
    assert sample_starts(8, 3).tolist() == [0, 3, 6] and sample_starts(3, 3).tolist() == [0]


def test_windows_cut_each_clip_with_its_labels_and_statistics_counted_once(tmp_path):
    # 12 s → 24 steps at 2 Hz → windows 0, 4, 8, 12, 14 of 10 steps; 3 s → 6 steps: one padded window
    clips = _clips([12.0, 3.0, 5.0, 4.0, 5.0])
    _regular(tmp_path / "aud.parquet", clips, 2.0, value=lambda i, k: 100 * i + k)  # one row per step
    write_labels(tmp_path / "labels.parquet", {  # arousal = t over each clip
        "clip_id": [c.clip_id for c in clips for _ in range(int(c.duration * 2) + 1)],
        "t": [k / 2 for c in clips for k in range(int(c.duration * 2) + 1)],
        "arousal": [k / 2 for c in clips for k in range(int(c.duration * 2) + 1)],
        "valence": [-k / 2 for c in clips for k in range(int(c.duration * 2) + 1)]})
    params = SegmentParams(modalities={"acoustic": "aud"}, layout="windows", rate_hz=2.0, win=10, hop=4)
    seg = _roundtrip(segment_corpus(INFO, clips, params, features_dir=tmp_path, labels_path=tmp_path / "labels.parquet"),
                     tmp_path)
    assert seg.clip_id.tolist() == ["c0"] * 5 + ["c1", "c2", "c3", "c4"]
    assert seg.origin.tolist() == [0, 4, 8, 12, 14, 0, 0, 0, 0]
    assert seg.length.tolist() == [10] * 5 + [6, 10, 8, 10]
    assert seg.partition.tolist() == ["train"] * 5 + ["train", "train", "devel", "test"]
    assert seg.label.tolist() == [0] * 5 + [1, 0, 1, 0]
    assert seg.x["acoustic"].shape == (9, 10, 1) and seg.extra["win"] == 10 and seg.extra["hop"] == 4
    raw = seg.x["acoustic"][..., 0] * seg.std["acoustic"][0] + seg.mean["acoustic"][0]
    np.testing.assert_allclose(raw[3], np.arange(12, 22), atol=1e-3)  # window at step 12 of clip 0
    assert seg.valid("acoustic")[5].tolist() == [True] * 6 + [False] * 4 and not seg.mask["acoustic"][5, 6:].any()
    np.testing.assert_allclose(seg.t[4], (14 + np.arange(10) + 0.5) / 2)
    # per-step targets cut the same way: arousal = t at the step centres, valence = −t
    np.testing.assert_allclose(seg.arousal[4], seg.t[4], atol=1e-6)
    np.testing.assert_allclose(seg.valence[1], -seg.t[1], atol=1e-6)
    assert seg.label_mask[5].tolist() == [True] * 6 + [False] * 4
    # statistics over the training clips' steps, each once: clips 0, 1, 2 hold 0…23, 100…105, 200…209
    steps = np.concatenate([np.arange(24), 100 + np.arange(6), 200 + np.arange(10)])
    assert seg.mean["acoustic"][0] == pytest.approx(steps.mean(), rel=1e-5)
    assert seg.std["acoustic"][0] == pytest.approx(steps.std(), rel=1e-5)
    counted_per_window = raw[seg.partition == "train"][seg.mask["acoustic"][seg.partition == "train"]]
    assert abs(counted_per_window.mean() - steps.mean()) > 1  # what counting overlapping windows would give


def test_windows_store_each_folds_partition_and_statistics(tmp_path):
    clips = _clips([6.0, 3.0, 4.0, 5.0, 3.0, 4.0], n_speakers=6)
    _regular(tmp_path / "aud.parquet", clips, 2.0, value=lambda i, k: i * i + k)
    params = SegmentParams(modalities={"acoustic": "aud"}, layout="windows", rate_hz=2.0, win=4, hop=2,
                           partition=PartitionParams(protocol="leave_one_group_out", devel=0.25))
    seg = _roundtrip(segment_corpus(INFO, clips, params, features_dir=tmp_path), tmp_path)
    assert seg.n == 5 + 2 + 3 + 4 + 2 + 3 and seg.folds.shape == (6, seg.n)
    for k in range(6):
        fold = seg.for_fold(k)
        held = {c for c, p in zip(seg.clip_id, fold.partition) if p == "test"}
        assert len(held) == 1  # one speaker's clip, every window of it
        train_clips = sorted({int(c[1:]) for c, p in zip(seg.clip_id, fold.partition) if p == "train"})
        steps = np.concatenate([i * i + np.arange(int(clips[i].duration * 2)) for i in train_clips])
        assert fold.mean["acoustic"][0] == pytest.approx(steps.mean(), rel=1e-5)
        raw = fold.x["acoustic"][..., 0] * fold.std["acoustic"][0] + fold.mean["acoustic"][0]
        np.testing.assert_allclose(raw[0, :4], [0, 1, 2, 3], atol=1e-3)


def test_frames_stack_a_faster_modality_and_average_the_others(tmp_path):
    # frame rate 5 Hz; audio at 10 Hz → k = 2 rows per frame, stacked; video at 10 Hz averaged
    clips = _clips([1.6, 0.6, 0.6, 0.6, 0.6])
    absent = {(0, 3), (0, 4), (0, 5)}  # clip 0: row 3 (frame 1's second row) and both rows of frame 2 absent
    _regular(tmp_path / "aud.parquet", clips, 10.0, dim=2, value=lambda i, k: 10 * i + k,
             present=lambda i, k: (i, k) not in absent)
    _regular(tmp_path / "vid.parquet", clips, 10.0, value=lambda i, k: k)
    params = SegmentParams(modalities={"acoustic": "aud", "face": "vid"}, layout="frames", rate_hz=5.0, frames=3,
                           stack=["acoustic"])
    seg = _roundtrip(segment_corpus(INFO, clips, params, features_dir=tmp_path), tmp_path)
    # clip 0: 8 frames → samples at 0, 3, 6 (the last 2 frames long); the others one sample each
    assert seg.clip_id.tolist() == ["c0", "c0", "c0", "c1", "c2", "c3", "c4"]
    assert seg.origin.tolist() == [0, 3, 6, 0, 0, 0, 0] and seg.length.tolist() == [3, 3, 2, 3, 3, 3, 3]
    assert seg.modalities["acoustic"].dim == 4 and seg.x["acoustic"].shape == (7, 3, 4)
    assert seg.modalities["face"].dim == 1 and seg.extra["stack"] == {"acoustic": 2}
    raw = seg.x["acoustic"] * seg.std["acoustic"] + seg.mean["acoustic"]
    np.testing.assert_allclose(raw[0, 0], [0, 0, 1, 1], atol=1e-4)  # frame 0: rows 0 and 1 side by side
    assert seg.mask["acoustic"][0].tolist() == [True, True, False]  # frame 2 has no present row
    # frame 1: row 2 present, row 3 absent → its slot is zero (raw), the frame present
    assert seg.x["acoustic"][0, 1, 2:].tolist() == pytest.approx((-seg.mean["acoustic"][2:] / seg.std["acoustic"][2:]).tolist())
    np.testing.assert_allclose(raw[0, 1, :2], [2, 2], atol=1e-4)
    np.testing.assert_allclose(raw[2, 1], [14, 14, 15, 15], atol=1e-4)  # clip 0's frame 7: rows 14 and 15
    face = seg.x["face"][..., 0] * seg.std["face"][0] + seg.mean["face"][0]
    np.testing.assert_allclose(face[1], [6.5, 8.5, 10.5], atol=1e-4)  # frames 3–5: mean of their two rows
    assert seg.valid("face")[2].tolist() == [True, True, False]


def test_stacking_errors_name_the_key(tmp_path):
    clips = _clips([1.0] * 5)
    _regular(tmp_path / "slow.parquet", clips, 2.0)
    write_features(tmp_path / "words.parquet", FeatureMeta("words", "X", "1", 1, None, "text", "T", False),
                   {c.clip_id: ClipFeatures([0.5], [True], [[1.0]], span=[[0.0, 1.0]]) for c in clips})
    params = SegmentParams(modalities={"physio": "slow", "text": "words"}, layout="frames", rate_hz=5.0, stack=["physio"])
    with pytest.raises(SegmentError, match=r"segment.stack: modality 'physio' .*2 Hz\) is not faster than the frame rate"):
        segment_corpus(INFO, clips, params, features_dir=tmp_path)
    with pytest.raises(SegmentError, match=r"segment.stack: modality 'text' .*no regular rate"):
        segment_corpus(INFO, clips, params.model_copy(update={"stack": ["text"]}), features_dir=tmp_path)


def test_stack_context_centres_the_window_on_the_frame():
    v = np.array([[1.0], [2.0], [0.0], [4.0]], np.float32)  # frame 2 absent (zero, as align_clip leaves it)
    p = np.array([True, True, False, True])
    x, present = stack_context(v, p, 3)  # n odd: frames f−1, f, f+1
    assert x.tolist() == [[0, 1, 2], [1, 2, 0], [2, 0, 4], [0, 4, 0]] and present.tolist() == p.tolist()
    x, _ = stack_context(v, p, 4)  # n even: f−2 … f+1, the frame's own slot n//2 = 2
    assert x.tolist() == [[0, 0, 1, 2], [0, 1, 2, 0], [1, 2, 0, 4], [2, 0, 4, 0]]
    part, present = stack_context(v, p, 4, start=2, steps=2)  # a sample of frames 2–3 keeps the clip's context
    assert part.tolist() == x[2:].tolist() and present.tolist() == [False, True]
    d2 = stack_context(np.array([[1, 10], [2, 20]], np.float32), np.ones(2, bool), 3)[0]
    assert d2.tolist() == [[0, 0, 1, 10, 2, 20], [1, 10, 2, 20, 0, 0]]  # slot j fills dims j·D … (j+1)·D − 1


def test_context_sums_give_the_statistics_of_the_stacked_frames():
    rng = np.random.default_rng(0)
    clips = []
    for count in (7, 1, 12):
        v = rng.normal(size=(count, 3)) * [1, 0, 5] + [0, 1000, -3]  # dim 1: constant at 1000
        p = rng.uniform(size=count) < 0.8
        p[0] = True
        clips.append((np.where(p[:, None], v, 0).astype(np.float32), p))
    shift = np.concatenate([v[p] for v, p in clips]).mean(axis=0, dtype=np.float64)
    for n in (1, 4, 5):
        stacked = np.concatenate([stack_context(v, p, n)[0][p] for v, p in clips])
        mean, std = context_statistics([context_sums(v, p, n, shift) for v, p in clips], shift)
        want_mean, want_std = statistics(stacked)
        np.testing.assert_allclose(mean, want_mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(std, want_std, rtol=1e-7)
        if n == 1:  # the constant dimension keeps a scale of 1, not a cancellation residue
            assert std[1] == 1.0
    assert context_statistics([context_sums(*clips[0], 2, shift)[:2] + (0,)], shift) is None


def test_frames_stack_a_context_window_of_downsampled_frames(tmp_path):
    # 5 Hz frames, audio at 10 Hz (two rows per frame, averaged), a 0.6 s window: n = 3 frames, f−1 … f+1
    clips = _clips([1.6, 0.6, 0.6, 0.6, 0.6])
    absent = {(0, 4), (0, 5)}  # clip 0: both rows of frame 2 absent → the frame absent, a zero slot elsewhere
    _regular(tmp_path / "aud.parquet", clips, 10.0, dim=2, value=lambda i, k: 10 * i + k,
             present=lambda i, k: (i, k) not in absent)
    _regular(tmp_path / "vid.parquet", clips, 10.0, value=lambda i, k: k)
    params = SegmentParams(modalities={"acoustic": "aud", "face": "vid"}, layout="frames", rate_hz=5.0, frames=3,
                           stack=["acoustic"], stack_seconds=0.6,
                           partition=PartitionParams(protocol="leave_one_group_out", devel=0.25))
    seg = _roundtrip(segment_corpus(INFO, clips, params, features_dir=tmp_path), tmp_path)
    assert seg.extra["stack"] == {"acoustic": 3} and seg.extra["stack_seconds"] == 0.6
    assert seg.modalities["acoustic"].dim == 6 and seg.x["acoustic"].shape == (7, 3, 6)
    assert seg.modalities["face"].dim == 1 and seg.origin.tolist() == [0, 3, 6, 0, 0, 0, 0]
    raw = seg.x["acoustic"] * seg.std["acoustic"] + seg.mean["acoustic"]
    raw[~seg.mask["acoustic"]] = 0
    # clip 0's frame f is the mean of rows 2f, 2f+1 = 2f + 0.5 in both dims; frame 2 absent (zero)
    np.testing.assert_allclose(raw[0, 0], [0, 0, 0.5, 0.5, 2.5, 2.5], atol=1e-4)  # before the clip: zero
    np.testing.assert_allclose(raw[0, 1], [0.5, 0.5, 2.5, 2.5, 0, 0], atol=1e-4)  # frame 2 absent: a zero slot
    assert seg.mask["acoustic"][0].tolist() == [True, True, False]  # present iff its own slot is
    np.testing.assert_allclose(raw[1, 0], [0, 0, 6.5, 6.5, 8.5, 8.5], atol=1e-4)  # frame 3: context from frame 2 (absent)
    np.testing.assert_allclose(raw[2, 1], [12.5, 12.5, 14.5, 14.5, 0, 0], atol=1e-4)  # frame 7: past the clip's end
    np.testing.assert_allclose(raw[3, 1], [10.5, 10.5, 12.5, 12.5, 14.5, 14.5], atol=1e-4)  # clip 1's frame 1
    assert seg.valid("acoustic")[2].tolist() == [True, True, False] and not seg.mask["acoustic"][2, 2]
    face = seg.x["face"][..., 0] * seg.std["face"][0] + seg.mean["face"][0]
    np.testing.assert_allclose(face[1], [6.5, 8.5, 10.5], atol=1e-4)  # the others averaged as before
    # each fold's statistics over its training frames, each once: its z-scores have mean 0 and std 1
    for k in range(seg.n_folds):
        fold = seg.for_fold(k)
        train = fold.partition == "train"
        z = fold.x["acoustic"][train][fold.mask["acoustic"][train]]
        np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(z.std(0), 1, atol=1e-3)


def test_002_context_of_65_llds_at_30_fps_is_3900_d(tmp_path):
    # 002 §3.2.2: 100 Hz LLDs downsampled by 3.3 to 30 fps, 2 s of context: 60 × 65 = 3,900 dims
    clips = _clips([1.0, 0.5, 0.5, 0.5, 0.5])
    _regular(tmp_path / "lld.parquet", clips, 100.0, dim=65, value=lambda i, k: k)
    params = SegmentParams(modalities={"acoustic": "lld"}, layout="frames", rate_hz=30.0, frames=30,
                           stack=["acoustic"], stack_seconds=2.0)
    seg = segment_corpus(INFO, clips, params, features_dir=tmp_path)
    assert seg.modalities["acoustic"].dim == 3900 and seg.x["acoustic"].shape == (5, 30, 3900)
    raw = (seg.x["acoustic"][0] * seg.std["acoustic"] + seg.mean["acoustic"]).reshape(30, 60, 65)
    # frame f covers [f/30, (f+1)/30): frame 0 rows 0–2 (mean 1), frame 1 rows 3–6 (4.5); own slot 30
    np.testing.assert_allclose(raw[0, 30], 1.0, atol=1e-3)
    np.testing.assert_allclose(raw[0, 31], 4.5, atol=1e-3)
    np.testing.assert_allclose(raw[1, 29:31], [[1.0] * 65, [4.5] * 65], atol=1e-3)
    np.testing.assert_allclose(raw[0, :30], 0, atol=1e-3)  # the second before the clip
    np.testing.assert_allclose(raw[29, 59], 0, atol=1e-3)  # past a 1 s clip's end


def test_stack_seconds_off_is_the_plain_stack(tmp_path):
    clips = _clips([1.6, 0.6, 0.6, 0.6, 0.6])
    _regular(tmp_path / "aud.parquet", clips, 10.0, dim=2, value=lambda i, k: 10 * i + k)
    params = SegmentParams(modalities={"acoustic": "aud"}, layout="frames", rate_hz=5.0, frames=3, stack=["acoustic"])
    plain = segment_corpus(INFO, clips, params, features_dir=tmp_path)
    zero = segment_corpus(INFO, clips, params.model_copy(update={"stack_seconds": 0.0}), features_dir=tmp_path)
    assert plain.extra == zero.extra and "stack_seconds" not in plain.extra and plain.extra["stack"] == {"acoustic": 2}
    for field in ("x", "mask", "mean", "std"):
        assert getattr(plain, field)["acoustic"].tobytes() == getattr(zero, field)["acoustic"].tobytes()
    # a modality not faster than the frames can take a context window (no rows to stack within a frame)
    _regular(tmp_path / "slow.parquet", clips, 2.0)
    ctx = segment_corpus(INFO, clips, SegmentParams(modalities={"physio": "slow"}, layout="frames", rate_hz=5.0,
                                                    stack=["physio"], stack_seconds=1.0), features_dir=tmp_path)
    assert ctx.modalities["physio"].dim == 5 and ctx.extra["stack"] == {"physio": 5}


def test_native_keeps_each_modality_at_its_own_rate_and_length(tmp_path):
    clips = _clips([2.0, 1.0, 1.4, 1.0, 1.0])
    _regular(tmp_path / "aud.parquet", clips, 10.0, value=lambda i, k: k)  # 20, 10, 14, 10, 10 rows
    _regular(tmp_path / "vid.parquet", clips, 5.0, value=lambda i, k: k, present=lambda i, k: k != 1)
    words = {  # clip 0: three words (written out of order), clip 1: none, the others one
        "c0": ClipFeatures([0.9, 0.2, 1.5], [True] * 3, [[2.0], [1.0], [3.0]], span=[[0.7, 1.1], [0.0, 0.4], [1.3, 1.7]]),
        **{f"c{i}": ClipFeatures([0.5], [True], [[float(i)]], span=[[0.2, 0.8]]) for i in (2, 3, 4)}}
    write_features(tmp_path / "words.parquet", FeatureMeta("words", "X", "1", 1, None, "text", "T", False), words)
    write_labels(tmp_path / "labels.parquet", {"clip_id": ["c0"], "t": [0.0], "arousal": [0.3], "valence": [0.1]})
    params = SegmentParams(modalities={"speech": "aud", "face": "vid", "text": "words"}, layout="native",
                           max_steps=2, native_max_steps={"speech": 16, "face": 40})
    seg = _roundtrip(segment_corpus(INFO, clips, params, features_dir=tmp_path, labels_path=tmp_path / "labels.parquet"),
                     tmp_path)
    assert seg.layout == "native" and seg.origin is None and seg.arousal is None
    assert "not written" in seg.extra["continuous_labels"] and seg.extra["native_max_steps"] == {"speech": 16, "face": 40, "text": 2}
    assert seg.lengths["speech"].tolist() == [16, 10, 14, 10, 10]  # cut to 16
    assert seg.lengths["face"].tolist() == [10, 5, 7, 5, 5]
    assert seg.lengths["text"].tolist() == [2, 1, 1, 1, 1]  # cut to max_steps; no words: one absent step
    assert {m: v.shape for m, v in seg.x.items()} == {"speech": (5, 16, 1), "face": (5, 10, 1), "text": (5, 2, 1)}
    assert seg.length.tolist() == [16, 10, 14, 10, 10]
    assert seg.valid("face")[1].tolist() == [True] * 5 + [False] * 5
    assert seg.mask["face"][0].tolist() == [True, False] + [True] * 8  # the absent row stays a step
    assert not seg.mask["text"][1].any() and seg.valid("text")[1].tolist() == [True, False]
    for m in seg.x:
        assert not (seg.mask[m] & ~seg.valid(m)).any()
    text = seg.x["text"][..., 0] * seg.std["text"][0] + seg.mean["text"][0]
    np.testing.assert_allclose(text[0], [1.0, 2.0], atol=1e-5)  # words in time order
    speech = seg.x["speech"][..., 0] * seg.std["speech"][0] + seg.mean["speech"][0]
    np.testing.assert_allclose(speech[2, :14], np.arange(14), atol=1e-4)
    np.testing.assert_allclose(seg.t[0], (np.arange(16) + 0.5) / 10)  # the longest modality's times
    assert seg.t.shape == (5, 16) and seg.t[1, 10:].tolist() == [0.0] * 6


def test_native_for_fold_renormalises_each_modality(tmp_path):
    clips = _clips([1.0, 0.6, 0.8, 1.0, 0.4, 0.6], n_speakers=6)
    _regular(tmp_path / "aud.parquet", clips, 10.0, value=lambda i, k: i * 3 + k)
    _regular(tmp_path / "vid.parquet", clips, 5.0, value=lambda i, k: -i - k)
    params = SegmentParams(modalities={"speech": "aud", "face": "vid"}, layout="native",
                           partition=PartitionParams(protocol="leave_one_group_out", devel=0.25))
    seg = _roundtrip(segment_corpus(INFO, clips, params, features_dir=tmp_path), tmp_path)
    assert seg.x["speech"].shape[1] == 10 and seg.x["face"].shape[1] == 5
    for k in range(seg.n_folds):
        fold = seg.for_fold(k)
        train = fold.partition == "train"
        for m in ("speech", "face"):
            present = fold.x[m][train][fold.mask[m][train]]
            assert np.allclose(present.mean(0), 0, atol=1e-4) and np.allclose(present.std(0), 1, atol=1e-3)
            assert fold.x[m].shape == seg.x[m].shape


def test_aligned_is_unchanged(tmp_path):
    clips = _clips([1.0, 2.0, 0.4, 1.0, 1.0])
    _regular(tmp_path / "aud.parquet", clips, 10.0, value=lambda i, k: i + k)
    seg = _roundtrip(segment_corpus(INFO, clips, SegmentParams(modalities={"acoustic": "aud"}, max_steps=8),
                                    features_dir=tmp_path), tmp_path)
    assert seg.layout == "aligned" and seg.origin is None and seg.lengths == {}
    assert seg.length.tolist() == [5, 8, 2, 5, 5] and seg.x["acoustic"].shape == (5, 8, 1)
    assert seg.extra == {"corpus": "t", "max_steps": 8, "protocol": "corpus", "folds": 1}
    assert seg.valid("acoustic")[2].tolist() == [True, True] + [False] * 6


@pytest.mark.parametrize("raw, where, why", [
    ({"layout": "sliding"}, "segment.layout", "aligned"),
    ({"win": 0}, "segment.win", "greater than or equal to 1"),
    ({"hop": 0}, "segment.hop", "greater than or equal to 1"),
    ({"frames": 0}, "segment.frames", "greater than or equal to 1"),
    ({"stack": ["audio"]}, "segment.stack.0", "'audio' is not in segment.modalities"),
    ({"stack_seconds": -1}, "segment.stack_seconds", "greater than or equal to 0"),
    ({"stack_seconds": 0.05}, "segment.stack_seconds", "= 0 frames"),
    ({"native_max_steps": {"vision": 40}}, "segment.native_max_steps.vision", "'vision' is not in segment.modalities"),
    ({"native_max_steps": {"face": 0}}, "segment.native_max_steps.face", "at least 1"),
])
def test_param_errors_name_the_key(raw, where, why):
    lines = section_problems("segment", raw)
    assert len(lines) == 1 and lines[0].startswith(f"{where}: ") and why in lines[0], lines
