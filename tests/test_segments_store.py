"""The segments folder (format 2: one .npy per array, features memory-mapped) and the lazy views over it
(pipeline/segment/lazy.py): the same values and the same trained model as the whole arrays they replace."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.core.features import (
    ClipFeatures,
    FeatureMeta,
    read_features,
    write_features,
)
from pipeline.core.store import StoreError
from pipeline.corpus.manifest import Clip, CorpusInfo, write_labels
from pipeline.runs.feed import task_split
from pipeline.runs.files import HISTORY_FILE, MODEL_FILE, run_dir
from pipeline.runs.params import TrainParams
from pipeline.segment import lazy as lazy_arrays
from pipeline.segment.align import align_clip, grid_steps, normalise
from pipeline.segment.contract import (
    META,
    NPZ,
    Segments,
    load_segments,
    read_segments_array,
)
from pipeline.segment.layouts import stack_context
from pipeline.segment.lazy import ContextFrames, Renormalised, RowView
from pipeline.segment.params import PartitionParams, SegmentParams
from pipeline.segment.stage import segment_corpus
from pipeline.train.loop import train_one

INFO = CorpusInfo(name="t", classes=["a", "b"])
LOGO = PartitionParams(protocol="leave_one_group_out", devel=0.25)
LAYOUTS = {
    "aligned": SegmentParams(modalities={"acoustic": "aud", "face": "vid"}, rate_hz=5.0, max_steps=12,
                             partition=PartitionParams(protocol="speaker_random", repeats=3)),
    "windows": SegmentParams(modalities={"acoustic": "aud", "face": "vid"}, layout="windows", rate_hz=4.0, win=5, hop=2,
                             partition=LOGO),
    # 002's context window: 4 frames of 4-d frames side by side (16-d), with several folds
    "frames": SegmentParams(modalities={"acoustic": "lld", "face": "vid"}, layout="frames", rate_hz=5.0, frames=4,
                            stack=["acoustic"], stack_seconds=0.8, partition=LOGO),
    "native": SegmentParams(modalities={"acoustic": "aud", "face": "vid"}, layout="native", max_steps=20,
                            native_max_steps={"face": 8}, partition=PartitionParams(protocol="speaker_random", repeats=2)),
}
TINY = TrainParams(modalities=["acoustic", "face"], seeds=[0], epochs=2, batch_size=8, lr=3e-3, patience=50,
                   model_params={"late_fusion_lstm": {"d_rnn": 4, "rnn_layers": 1, "d_fc_out": 4}})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """30 clips of 0.5-3 s, 6 speakers; random features with absent rows; arousal/valence curves."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    clips = [Clip(clip_id=f"c{i:02d}", speaker=f"s{i % 6}", media_path="x.mp4", duration=float(d), label="ab"[i % 2],
                  partition=["train", "train", "train", "devel", "test"][i % 5])
             for i, d in enumerate(rng.uniform(0.5, 3.0, 30))]
    for name, rate, dim in (("aud", 20.0, 5), ("vid", 5.0, 3), ("lld", 20.0, 4)):
        rows = {}
        for i, c in enumerate(clips):
            n = int(round(c.duration * rate))
            rows[c.clip_id] = ClipFeatures((np.arange(n) + 0.5) / rate, list(rng.random(n) > 0.1),
                                           (rng.normal(size=(n, dim)) * 3 + i % 2).astype(np.float32))
        write_features(root / f"{name}.parquet", FeatureMeta(name, "X", "1", dim, rate, "audio", "A", True), rows)
    steps = [(c.clip_id, k / 2) for c in clips for k in range(int(c.duration * 2) + 1)]
    write_labels(root / "labels.parquet", {"clip_id": [c for c, _ in steps], "t": [t for _, t in steps],
                                           "arousal": [np.sin(t) for _, t in steps], "valence": [np.cos(t) for _, t in steps]})
    return root, clips


def _build(corpus, layout):
    root, clips = corpus
    return segment_corpus(INFO, clips, LAYOUTS[layout], features_dir=root, labels_path=root / "labels.parquet")


# ---- the whole-array computations these views replace (the code before format 2) ----------------


def _stacked_context(corpus, seg, modality="acoustic"):
    """The n·D stacked context as the builder used to materialise it: `stack_context` per piece, then
    z-scored in place with the float32 statistics, 0 where the frame is absent."""
    root, clips = corpus
    params = LAYOUTS["frames"]
    meta, rows = read_features(root / f"{params.modalities[modality]}.parquet")
    n, r, T = seg.extra["stack"][modality], params.rate_hz, seg.t.shape[1]
    full = [grid_steps(c.duration, r, np.iinfo(np.int64).max) for c in clips]
    per_clip = [align_clip(rows.get(c.clip_id), full[i], r, meta.dim, meta.rate_hz) for i, c in enumerate(clips)]
    index = {c.clip_id: i for i, c in enumerate(clips)}
    xm = np.zeros((seg.n, T, n * meta.dim), np.float32)
    for w, (cid, s) in enumerate(zip(seg.clip_id, seg.origin)):
        values, present = per_clip[index[str(cid)]]
        steps = min(T, len(present) - int(s))
        stack_context(values, present, n, int(s), steps, out=xm[w, :steps])
    xm -= seg.mean[modality]
    xm /= seg.std[modality]
    xm[~seg.mask[modality]] = 0.0
    return xm


def _whole_for_fold(seg: Segments, k: int) -> Segments:
    """`for_fold` as it was: every x array re-normalised whole."""
    if k == 0:
        return replace(seg, x={m: np.asarray(v) for m, v in seg.x.items()})
    x = {}
    for m, v in seg.x.items():
        raw = np.asarray(v) * seg.std[m] + seg.mean[m]
        out = ((raw - seg.fold_mean[m][k]) / seg.fold_std[m][k]).astype(np.float32)
        out[~seg.mask[m]] = 0.0
        x[m] = out
    return replace(seg, partition=seg.folds[k], x=x, mean={m: seg.fold_mean[m][k] for m in x},
                   std={m: seg.fold_std[m][k] for m in x})


def _save_npz(seg: Segments, folder):
    """The previous format: one compressed segments.npz (x stacked in full) and a json without "format"."""
    folder.mkdir(parents=True)
    arrays = {"clip_id": seg.clip_id.astype(str), "partition": seg.partition.astype(str), "label": seg.label,
              "length": seg.length, "t": seg.t}
    for m in seg.modalities:
        arrays.update({f"x__{m}": np.asarray(seg.x[m]), f"mask__{m}": seg.mask[m], f"mean__{m}": seg.mean[m],
                       f"std__{m}": seg.std[m]})
        if seg.folds is not None:
            arrays.update({f"fold_mean__{m}": seg.fold_mean[m], f"fold_std__{m}": seg.fold_std[m]})
    arrays.update({f"length__{m}": v for m, v in seg.lengths.items()})
    for name in ("folds", "origin", "arousal", "valence", "label_mask"):
        if getattr(seg, name) is not None:
            arrays[name] = getattr(seg, name)
    np.savez_compressed(folder / NPZ, **arrays)
    (folder / META).write_text(json.dumps({"classes": seg.classes, "rate_hz": seg.rate_hz, "layout": seg.layout,
                                           "modalities": {m: i.__dict__ for m, i in seg.modalities.items()},
                                           "extra": seg.extra}))


def _assert_same(a: Segments, b: Segments, where: str):
    for name in ("clip_id", "partition", "label", "length", "t", "origin", "arousal", "valence", "label_mask", "folds"):
        u, v = getattr(a, name), getattr(b, name)
        assert (u is None) == (v is None), f"{where}: {name}"
        if u is not None:
            assert u.dtype == v.dtype and np.array_equal(u, v), f"{where}: {name}"
    for name in ("x", "mask", "mean", "std", "lengths", "fold_mean", "fold_std"):
        u, v = getattr(a, name), getattr(b, name)
        assert u.keys() == v.keys(), f"{where}: {name}"
        for m in u:  # the same bits, not just close
            uu, vv = np.asarray(u[m]), np.asarray(v[m])
            assert uu.dtype == vv.dtype and uu.tobytes() == vv.tobytes(), f"{where}: {name}[{m}]"


# ---- values --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_fold_reads_the_same_arrays_as_the_whole_array_path(corpus, layout, tmp_path, monkeypatch):
    seg = _build(corpus, layout)
    assert seg.n_folds > 1
    monkeypatch.setattr(lazy_arrays, "_CHUNK_BYTES", 200)  # every blockwise step in blocks of a row or two
    _assert_same(_build(corpus, layout), replace(seg, x={m: np.asarray(v) for m, v in seg.x.items()}), "blockwise build")
    if layout == "frames":  # the stored frames, not the 4× stacked copy; the values of the stacked copy
        assert isinstance(seg.x["acoustic"], ContextFrames) and seg.x["acoustic"].shape[-1] == 16
        assert seg.modalities["acoustic"].dim == 16
        assert np.asarray(seg.x["acoustic"]).tobytes() == _stacked_context(corpus, seg).tobytes()
    whole = replace(seg, x={m: np.asarray(v) for m, v in seg.x.items()})
    _save_npz(whole, tmp_path / "old")
    seg.save(tmp_path / "new")
    new, old = load_segments(tmp_path / "new"), load_segments(tmp_path / "old")
    assert json.loads((tmp_path / "new" / META).read_text())["format"] == 2
    if layout == "frames":
        assert not (tmp_path / "new" / "x__acoustic.npy").exists() and isinstance(new.x["acoustic"], ContextFrames)
    assert all(isinstance(v, (np.memmap, ContextFrames)) for v in new.x.values())  # features not read whole
    assert all(isinstance(v, np.ndarray) and not isinstance(v, np.memmap) for v in old.x.values())
    new.save(tmp_path / "again")  # from the memory-mapped arrays, a block at a time
    _assert_same(load_segments(tmp_path / "again"), new, f"{layout} saved again")
    for folder in ("new", "old"):  # the report reads one array (the partitions) of either format
        assert np.array_equal(read_segments_array(tmp_path / folder, "partition"), seg.partition)
        assert read_segments_array(tmp_path / folder, "no_such_array") is None
    for k in range(seg.n_folds):
        want = _whole_for_fold(whole, k)
        _assert_same(new.for_fold(k), want, f"{layout} fold {k} (format 2)")
        _assert_same(old.for_fold(k), want, f"{layout} fold {k} (segments.npz)")
        _assert_same(seg.for_fold(k), want, f"{layout} fold {k} (as built)")


def _train(seg, out, fold, task="classification"):
    train_one(seg, TINY.model_copy(update={"task": task}), "late_fusion_lstm", "standard", 0, out, device="cpu",
              progress=False, fold=fold)
    target = run_dir(out, "late_fusion_lstm", "standard", 0, fold)
    return torch.load(target / MODEL_FILE, weights_only=True)["state_dict"], (target / HISTORY_FILE).read_bytes()


@pytest.mark.parametrize("layout, task", [("frames", "regression"), ("aligned", "classification")])
def test_training_from_the_lazy_arrays_gives_the_same_model(corpus, layout, task, tmp_path):
    seg = _build(corpus, layout)
    seg.save(tmp_path / "seg")
    lazy = load_segments(tmp_path / "seg").for_fold(1)
    split = task_split(lazy, "train", ["acoustic", "face"], task)
    assert all(isinstance(v, RowView) for v in split.x.values())  # a split holds no copy of its features
    assert isinstance(split.x["face"].base, Renormalised) and isinstance(split.x["face"].base.base, np.memmap)
    whole = _whole_for_fold(replace(seg, x={m: np.asarray(v) for m, v in seg.x.items()}), 1)
    (s1, h1), (s2, h2) = _train(lazy, tmp_path / "lazy", 1, task), _train(whole, tmp_path / "whole", 1, task)
    assert h1 == h2 and s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_blockwise_normalisation_is_the_whole_array_expression(monkeypatch):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(9, 5, 3)) * 1e3 + 7).astype(np.float32)
    mask = rng.random((9, 5)) > 0.3
    train = np.arange(9) % 3 != 0
    sel = x[train][mask[train]]
    mean, std = sel.mean(axis=0, dtype=np.float64), sel.std(axis=0, dtype=np.float64)
    want = ((x - mean) / std).astype(np.float32)  # the expression the segment stage used on the whole array
    want[~mask] = 0.0
    monkeypatch.setattr(lazy_arrays, "_CHUNK_BYTES", 100)
    out, m, s = normalise(x.copy(), mask, train)
    assert out.tobytes() == want.tobytes() and m.tobytes() == mean.astype(np.float32).tobytes()
    assert s.tobytes() == std.astype(np.float32).tobytes()


# ---- the folder ----------------------------------------------------------------------------------


def test_an_incomplete_folder_is_rejected_with_one_line(corpus, tmp_path):
    seg = _build(corpus, "aligned")
    seg.save(tmp_path / "seg")
    with pytest.raises(StoreError, match=r"segments\.json: not found; run the segment stage"):
        load_segments(tmp_path / "nothing")
    (tmp_path / "seg" / "x__face.npy").rename(tmp_path / "x__face.npy")
    with pytest.raises(StoreError, match=r"x__face\.npy: not found, though segments\.json lists it: an incomplete"):
        load_segments(tmp_path / "seg")
    data = (tmp_path / "x__face.npy").read_bytes()
    (tmp_path / "seg" / "x__face.npy").write_bytes(data[: len(data) // 2])  # a truncated copy
    with pytest.raises(StoreError, match=r"x__face\.npy: unreadable, truncated"):
        load_segments(tmp_path / "seg")
    (tmp_path / "seg" / "x__face.npy").write_bytes(data)
    assert load_segments(tmp_path / "seg").x["face"].shape == seg.x["face"].shape
    (tmp_path / "seg" / META).unlink()  # arrays without the json written last: not a finished folder
    with pytest.raises(StoreError, match=r"segments\.json: not found beside the arrays: an incomplete segments folder") as e:
        load_segments(tmp_path / "seg")
    assert "\n" not in str(e.value)


def test_a_failed_save_leaves_the_previous_folder(corpus, tmp_path, monkeypatch):
    import pipeline.segment.contract as segments_mod

    seg = _build(corpus, "aligned")
    seg.save(tmp_path / "seg")
    before = sorted(p.name for p in tmp_path.iterdir())
    calls = []

    def failing(folder, key, value, dtype):
        calls.append(key)
        if key.startswith("x__"):
            raise OSError("disk full")
        return write(folder, key, value, dtype)

    write = segments_mod._write_array
    monkeypatch.setattr(segments_mod, "_write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        replace(seg, classes=["x", "y"]).save(tmp_path / "seg")
    assert len(calls) > 1 and sorted(p.name for p in tmp_path.iterdir()) == before  # no staging folder left
    assert load_segments(tmp_path / "seg").classes == seg.classes


# ---- the views -----------------------------------------------------------------------------------


def test_lazy_views_index_like_the_arrays_they_stand_for(corpus):
    seg = _build(corpus, "frames")
    views = {"context": seg.x["acoustic"], "fold": seg.for_fold(2).x["acoustic"],
             "rows": RowView(seg.for_fold(1).x["face"], np.array([5, 0, 3, 3, 9, 1]))}
    rng = np.random.default_rng(1)
    for name, view in views.items():
        whole = np.asarray(view)
        assert whole.shape == view.shape and view.ndim == 3 and view.dtype == np.float32 and len(view) == len(whole)
        n = len(view)
        keys = [0, -1, n - 1, np.int64(2), slice(None), slice(1, None, 2), slice(-3, None), rng.integers(0, n, 7),
                [2, 0, 2], np.array([], np.int64), rng.random(n) > 0.5, (np.array([1, 0]), slice(None, 2)),
                (1, 2), (slice(None), 0, 1), (Ellipsis, 0), np.array([-1, -2])]
        for key in keys:
            got = view[key]
            assert isinstance(got, np.ndarray) and np.array_equal(got, whole[key]), f"{name}[{key!r}]"
        for bad in (n, -n - 1, np.array([0, n])):
            with pytest.raises(IndexError):
                view[bad]
    # a view of a view indexes the original; a split's rows are those of the segments
    inner = views["rows"]
    assert np.array_equal(RowView(inner, [1, 2])[:], np.asarray(seg.for_fold(1).x["face"])[[0, 3]])
    assert RowView(inner, [1, 2]).base is inner.base
