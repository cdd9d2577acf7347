"""The segment stage in bounded memory (`segment_to`): feature tables streamed clip by clip, every feature
array built in its staged .npy, statistics streamed, z-scores in place. Its folder must be the same bytes
as the in-memory path (`segment_corpus(...).save`) for every layout, with blocks and batches smaller
than one clip, tables in another order than the manifest, and clips a table lacks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.core import features as store
from pipeline.core.features import (
    ClipFeatures,
    FeatureMeta,
    feature_table,
    iter_clip_features,
    read_features,
    write_features,
)
from pipeline.core.store import write_table
from pipeline.corpus.manifest import Clip, CorpusInfo, write_labels
from pipeline.segment import align as segment_align
from pipeline.segment import lazy as lazy_arrays
from pipeline.segment import stage as segment
from pipeline.segment.align import align_clip, grid_steps
from pipeline.segment.contract import load_segments
from pipeline.segment.layouts import (
    MIN_STD,
    stack_frames,
    statistics,
    streamed_statistics,
)
from pipeline.segment.params import PartitionParams, SegmentError, SegmentParams
from pipeline.segment.stage import segment_corpus, segment_to

INFO = CorpusInfo(name="t", classes=["a", "b"])
LOGO = PartitionParams(protocol="leave_one_group_out", devel=0.25)
LAYOUTS = {
    "aligned": SegmentParams(modalities={"acoustic": "aud", "face": "vid", "text": "words"}, rate_hz=5.0, max_steps=12,
                             partition=PartitionParams(protocol="speaker_random", repeats=3)),
    "windows": SegmentParams(modalities={"acoustic": "aud", "face": "vid"}, layout="windows", rate_hz=4.0, win=5, hop=2,
                             partition=LOGO),
    "frames": SegmentParams(modalities={"acoustic": "lld", "face": "vid"}, layout="frames", rate_hz=5.0, frames=4,
                            stack=["acoustic"], partition=LOGO),
    "frames_context": SegmentParams(modalities={"acoustic": "lld", "face": "vid"}, layout="frames", rate_hz=5.0, frames=4,
                                    stack=["acoustic"], stack_seconds=0.8, partition=LOGO),
    "native": SegmentParams(modalities={"acoustic": "aud", "face": "vid", "text": "words"}, layout="native", max_steps=20,
                            native_max_steps={"face": 8}, partition=PartitionParams(protocol="speaker_random", repeats=2)),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """24 clips of 0.5-3 s, 6 speakers, the manifest in another order than the tables (sorted by clip id);
    absent rows; clip c03 has no face rows at all; a table clip not in the manifest; words with spans."""
    root = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(3)
    clips = [Clip(clip_id=f"c{i:02d}", speaker=f"s{i % 6}", media_path="x.mp4", duration=float(d), label="ab"[i % 2],
                  partition=["train", "train", "train", "devel", "test"][i % 5])
             for i, d in enumerate(rng.uniform(0.5, 3.0, 24))]
    for name, rate, dim in (("aud", 20.0, 5), ("vid", 5.0, 3), ("lld", 20.0, 4)):
        rows = {}
        for i, c in enumerate(clips + [Clip(clip_id="zz", speaker="s0", media_path="x", duration=1.0, label="a")]):
            if name == "vid" and c.clip_id == "c03":
                continue
            n = int(round(c.duration * rate))
            # magnitudes over 24 decades: float64 sums round, so a different order of addition shows
            values = rng.normal(size=(n, dim)) * 10 ** rng.uniform(-12, 12, size=(n, dim)) + i % 2
            values[:, 0] = 1.5  # a constant dimension: scale 1 (MIN_STD)
            rows[c.clip_id] = ClipFeatures((np.arange(n) + 0.5) / rate, rng.random(n) > 0.1, values.astype(np.float32))
        write_features(root / f"{name}.parquet", FeatureMeta(name, "X", "1", dim, rate, "audio", "A", True), rows)
    words = {}
    for c in clips:
        t = np.sort(rng.uniform(0, c.duration, 4))
        words[c.clip_id] = ClipFeatures(t, np.ones(4, bool), rng.normal(size=(4, 6)).astype(np.float32),
                                        np.stack([t - 0.2, t + 0.2], axis=1))
    write_features(root / "words.parquet", FeatureMeta("words", "X", "1", 6, None, "text", "B", True), words)
    steps = [(c.clip_id, k / 2) for c in clips for k in range(int(c.duration * 2) + 1)]
    write_labels(root / "labels.parquet", {"clip_id": [c for c, _ in steps], "t": [t for _, t in steps],
                                           "arousal": [np.sin(t) for _, t in steps], "valence": [np.cos(t) for _, t in steps]})
    order = rng.permutation(len(clips))
    return root, [clips[i] for i in order]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_streamed_stage_writes_the_same_bytes_as_the_in_memory_path(corpus, layout, tmp_path, monkeypatch):
    root, clips = corpus
    params = LAYOUTS[layout]
    segment_corpus(INFO, clips, params, features_dir=root, labels_path=root / "labels.parquet").save(tmp_path / "memory")
    monkeypatch.setattr(lazy_arrays, "_CHUNK_BYTES", 100)  # blocks (and page releases) smaller than one sequence
    monkeypatch.setattr(store, "STREAM_BATCH_BYTES", 50)  # table batches of 2-4 rows: clips span batches

    def whole_table(path):
        raise AssertionError(f"{path} read whole")

    monkeypatch.setattr(segment, "read_features", whole_table)
    seg = segment_to(tmp_path / "streamed", INFO, clips, params, features_dir=root, labels_path=root / "labels.parquet")
    memory = sorted(p.name for p in (tmp_path / "memory").iterdir())
    assert memory == sorted(p.name for p in (tmp_path / "streamed").iterdir())
    assert any(name.startswith(("x__", "ctx__")) for name in memory)
    for name in memory:
        assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "streamed" / name).read_bytes(), name
    assert not list(tmp_path.glob(".streamed.staging-*"))  # the staging folder became the folder
    assert set(seg.x) == set(params.modalities)
    built = [getattr(v, "table", v) for v in seg.x.values()]  # a context modality's frames, else x
    assert all(isinstance(v, np.memmap) for v in built)  # built in the folder, not in memory
    loaded = load_segments(tmp_path / "streamed")
    assert loaded.n_folds == seg.n_folds > 1  # several folds' statistics, streamed in the same passes


@pytest.mark.parametrize("dim", [1, 2, 3, 7])
def test_streamed_statistics_are_the_bits_of_statistics(dim):
    """Two passes with a running float64 sum carried across blocks equal numpy's mean/std over the
    selected rows (x[sel], row-major), constant dimensions included; if numpy ever changes its reduction
    order, this fails."""
    rng = np.random.default_rng(dim)
    x = (rng.normal(size=(40, 9, dim)) * 10 ** rng.uniform(-12, 12, size=(40, 9, dim))).astype(np.float32)
    x[..., 0] = 2.25  # constant: MIN_STD → 1
    selections = [rng.random((40, 9)) > p for p in (0.2, 0.5, 0.9)] + [np.zeros((40, 9), bool)]
    for chunk in (16, 200, 1 << 20):  # a block smaller than one row, a few rows, all
        got = streamed_statistics(x, selections, chunk)
        for sel, stats in zip(selections[:3], got):
            mean, std = statistics(x[sel])
            assert np.array_equal(stats[0], mean) and np.array_equal(stats[1], std)
            assert stats[1][0] == 1.0 and np.all(np.asarray(x[sel]).std(axis=0)[1:] > MIN_STD)
        assert got[3] is None


def test_clip_by_clip_reading_gives_the_rows_read_whole(corpus):
    root, _ = corpus
    for name in ("aud", "words"):
        meta, whole = read_features(root / f"{name}.parquet")
        for batch_rows in (1, 3, 1000):
            _, stream = iter_clip_features(root / f"{name}.parquet", batch_rows)
            got = dict(stream)
            assert list(got) == list(whole)
            for cid, rows in whole.items():
                for field in ("t", "present", "values", "span"):
                    a, b = getattr(rows, field), getattr(got[cid], field)
                    assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b)), (cid, field)


def test_a_table_not_grouped_by_clip_is_a_clear_error(corpus, tmp_path):
    root, clips = corpus
    meta, rows = read_features(root / "vid.parquet")
    table = feature_table(meta, rows)
    assert table.column("clip_id")[1].as_py() == "c00"  # c00 has several rows: its first one moved to the end
    write_table(tmp_path / "vid.parquet", table.take(pa.array(list(range(1, len(table))) + [0])))
    for name in ("aud", "lld", "words"):
        (tmp_path / f"{name}.parquet").symlink_to(root / f"{name}.parquet")
    with pytest.raises(SegmentError, match=r"vid\.parquet\): the rows of clip 'c00' are not together"):
        segment_to(tmp_path / "out", INFO, clips, LAYOUTS["aligned"], features_dir=tmp_path)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.staging-*"))


@pytest.mark.parametrize("layout", ["windows", "frames"])
def test_piece_statistics_count_each_step_of_a_training_clip_once(corpus, layout, tmp_path):
    """Overlapping windows (and stacked frames) share one statistics per fold: that of the training clips'
    whole grids, each step once (`first_cover`), as the builder computed it before pieces were streamed."""
    root, clips = corpus
    params = LAYOUTS[layout]
    seg = segment_to(tmp_path / "out", INFO, clips, params, features_dir=root)
    r = params.rate_hz
    for m, table in params.modalities.items():
        meta, rows = read_features(root / f"{table}.parquet")
        k = seg.extra.get("stack", {}).get(m, 1)
        per_clip = []
        for c in clips:
            full = grid_steps(c.duration, r, np.iinfo(np.int64).max)
            if k > 1:
                per_clip.append(stack_frames(*align_clip(rows.get(c.clip_id), full * k, r * k, meta.dim), k))
            else:
                per_clip.append(align_clip(rows.get(c.clip_id), full, r, meta.dim, meta.rate_hz))
        clip_index = {c.clip_id: i for i, c in enumerate(clips)}
        for f in range(seg.n_folds):
            train = sorted({clip_index[str(cid)] for cid, p in zip(seg.clip_id, seg.folds[f]) if p == "train"})
            mean, std = statistics(np.concatenate([per_clip[i][0][per_clip[i][1]] for i in train]))
            assert np.array_equal(seg.fold_mean[m][f], mean.astype(np.float32))
            assert np.array_equal(seg.fold_std[m][f], std.astype(np.float32))
    assert layout == "frames" or (seg.origin > 0).any() and len(set(seg.clip_id.tolist())) < seg.n  # windows overlap


def _align_whole(rows, n_steps, rate_hz, dim, source_rate_hz=None):
    """`align_clip` as it was: the whole clip's float64 sums at once (np.add.at in row order)."""
    if rows is not None and rows.span is None and source_rate_hz and source_rate_hz < rate_hz and len(rows.t):
        half = 0.5 / source_rate_hz
        rows = ClipFeatures(rows.t, rows.present, rows.values, np.stack([rows.t - half, rows.t + half], axis=1))
    sums, counts = np.zeros((n_steps, dim)), np.zeros(n_steps, np.int64)
    if rows is not None and len(rows.t):
        keep = rows.present
        if rows.span is None:
            step, vals = np.floor(rows.t[keep] * rate_hz).astype(np.int64), rows.values[keep]
        else:
            first = np.floor(rows.span[keep, 0] * rate_hz).astype(np.int64)
            last = np.maximum(first, np.ceil(rows.span[keep, 1] * rate_hz - 1e-9).astype(np.int64) - 1)
            reps = last - first + 1
            step = np.repeat(first, reps) + np.concatenate([np.arange(r) for r in reps] + [np.zeros(0, np.int64)])
            vals = np.repeat(rows.values[keep], reps, axis=0)
        inside = (step >= 0) & (step < n_steps)
        np.add.at(sums, step[inside], vals[inside])
        np.add.at(counts, step[inside], 1)
    present = counts > 0
    values = np.zeros((n_steps, dim), np.float32)
    values[present] = (sums[present] / counts[present, None]).astype(np.float32)
    return values, present


@pytest.mark.parametrize("block_bytes", [8, 100, 1 << 24])
def test_aligning_a_block_of_steps_at_a_time_gives_the_whole_clip_bits(block_bytes, monkeypatch):
    """A long clip's rows are averaged onto the grid a block of steps at a time (bounded float64 sums);
    each step adds the same rows in the same order as the whole-clip np.add.at, so the same bits."""
    monkeypatch.setattr(segment_align, "ALIGN_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(7)
    t = rng.uniform(-0.2, 6.2, 300)  # unsorted, some outside the clip, several rows per step
    values = (rng.normal(size=(300, 4)) * 10 ** rng.uniform(-12, 12, size=(300, 4))).astype(np.float32)
    span = np.stack([t - rng.uniform(0, 0.6, 300), t + rng.uniform(0, 0.6, 300)], axis=1)
    cases = [(ClipFeatures(t, rng.random(300) > 0.2, values), 5.0, None),
             (ClipFeatures(t, rng.random(300) > 0.2, values, span), 5.0, None),  # words: every step a span overlaps
             (ClipFeatures(t[:12], np.ones(12, bool), values[:12]), 5.0, 2.0),  # slower than the grid: held
             (None, 5.0, None), (ClipFeatures.empty(4), 5.0, None)]
    for rows, rate, source in cases:
        got, want = align_clip(rows, 30, rate, 4, source), _align_whole(rows, 30, rate, 4, source)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert want[1].sum() == 0 and align_clip(cases[0][0], 30, 5.0, 4)[1].sum() > 20
