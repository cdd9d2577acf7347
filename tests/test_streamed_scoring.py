"""The streamed scoring (pipeline/evaluate/scoring.py) against the all-at-once application it replaced.

A condition is applied to step indices (`plan_condition`) and materialised a batch of rows at a time
(`PlannedRows`); the result must be the very bytes `apply_conditions` (every condition applied to the
whole split) gives, for every condition family, zero-filled or not, on a split with padding and a
modality at its own number of steps (the `native` layout), and the scores of a run the same floats.
The split's values are only read a batch of rows at a time, and one plan is alive at a time.
"""

from __future__ import annotations

import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline.evaluate.scoring as rs
from pipeline.evaluate.clip_scores import masked_steps
from pipeline.missing import ConditionContext, parse_conditions
from pipeline.missing.conditions import (
    Availability,
    Burst,
    ClipZero,
    FrameRepeat,
    FrameZero,
    Imbalanced,
    MissingModality,
    OnePresent,
    RandomMissing,
    WeakestMissing,
)
from pipeline.missing.ops import signal_norm
from pipeline.models.registry import build_model
from pipeline.runs.feed import Split, score_conditions
from pipeline.runs.files import load_trained, save_trained
from pipeline.runs.params import TrainParams

DIMS = {"a": 3, "b": 2, "c": 4}
NATIVE = {"a": 12, "b": 12, "c": 5}  # 'c' at its own rate: fewer steps (layout `native`)
ALIGNED = {"a": 12, "b": 12, "c": 12}
N = 11
CLASSES = ["w", "x", "y", "z"]
EVERY_FAMILY = ["all_present", "each_missing", "each_pair_missing", "clip_zero_grid", "frame_zero_grid", "frame_repeat_grid",
                "random_missing_grid", "availability_grid", "imbalanced_grid", "one_present_grid", "mnar_grid", "burst_grid"]
# every family again without zero-filling (names repeat those above: scored in a context of their own)
NOT_ZEROED = [MissingModality("a", zero_fill=False), MissingModality(("a", "c"), zero_fill=False), ClipZero("b", 0.5, False),
              FrameZero("c", 0.5, False), FrameRepeat("a", 0.7, False), FrameRepeat("c", 1.0, False),
              RandomMissing(None, 0.4, False), Availability("b", 0.3, False), Imbalanced("a", 0.6, False),
              OnePresent("b", 0.6, False), WeakestMissing(None, 0.5, False), Burst("c", 0.5, False)]


class RowsOnly:
    """A split's features readable only as `view[rows]` for an int array, like the segments' lazy row
    views; records the most rows one read asked for."""

    def __init__(self, a: np.ndarray):
        self.a, self.shape, self.dtype, self.most = a, a.shape, a.dtype, 0

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, rows):
        assert isinstance(rows, np.ndarray) and rows.dtype.kind in "iu", f"read with {type(rows).__name__}"
        self.most = max(self.most, len(rows))
        return self.a[rows]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array was read")


def make_split(steps: dict[str, int], regression: bool = False, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    length = rng.integers(3, 13, N)  # in 'a' steps; padding beyond
    valid = {m: np.arange(t)[None] < np.ceil(length * t / 12)[:, None] for m, t in steps.items()}
    mask = {m: valid[m] & (rng.random(valid[m].shape) < 0.8) for m in steps}
    x = {}
    for m, t in steps.items():
        v = np.where(mask[m][..., None], rng.normal(size=(N, t, DIMS[m])), 0).astype(np.float32)
        v[mask[m] & (rng.random(mask[m].shape) < 0.1)] = -0.0  # a present -0.0 must stay -0.0, a zeroed step be +0.0
        x[m] = v
    if regression:
        y_mask = valid["a"] & (rng.random(valid["a"].shape) < 0.9)
        y_mask[:, 0] = True
        y = rng.normal(size=(N, steps["a"], 2)).astype(np.float32)
        return Split(idx=np.arange(N), x=x, mask=mask, y=y, y_mask=y_mask, valid=valid)
    return Split(idx=np.arange(N), x=x, mask=mask, y=np.arange(N) % 4, y_mask=None, valid=valid)


def statistics() -> tuple[dict, dict]:
    rng = np.random.default_rng(7)
    return ({m: rng.normal(size=d).astype(np.float32) for m, d in DIMS.items()},
            {m: rng.uniform(0.5, 2, size=d).astype(np.float32) for m, d in DIMS.items()})


def rows_only(split: Split) -> Split:
    return replace(split, x={m: RowsOnly(v) for m, v in split.x.items()})


def context_of(split: Split) -> ConditionContext:
    mean, std = statistics()
    return ConditionContext(valid=split.valid, mean=mean, std=std)


def batches(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(a, min(a + size, n)) for a in range(0, n, size)]


@pytest.mark.parametrize("zero_filled", [True, False])
def test_every_condition_materialises_the_bytes_of_the_all_at_once_application(zero_filled, monkeypatch):
    monkeypatch.setattr(rs, "_NORM_CHUNK", 1)  # mnar's signal norms one row at a time
    split = make_split(NATIVE)
    conditions = parse_conditions(EVERY_FAMILY, list(DIMS)) if zero_filled else NOT_ZEROED
    assert {c.family for c in conditions} | {"all_present"} == {
        "all_present", "missing", "clip_zero", "frame_zero", "frame_repeat", "random_missing", "availability", "imbalanced",
        "one_present", "mnar", "burst"}
    ctx = context_of(split)
    lazy = rows_only(split)
    streamed_ctx = replace(ctx, norms=rs.SignalNorms(lazy, ctx.mean, ctx.std))
    touched = 0
    for c in conditions:
        want_x, want_mask = rs.apply_conditions([c], split, ctx)[c.name]
        plan = rs.plan_condition(c, lazy, streamed_ctx)
        for m in DIMS:
            assert np.array_equal(plan.mask[m], want_mask[m]), f"{c.name}: mask of {m}"
            touched += plan.source[m] is not None
            for size in (1, 3, 64):
                view = rs.PlannedRows(lazy.x[m], plan.source[m])
                got = np.concatenate([view[rows] for rows in batches(N, size)])
                assert got.dtype == want_x[m].dtype and got.tobytes() == np.asarray(want_x[m]).tobytes(), f"{c.name}: {m}, batch {size}"
    # the test is not all identities: zero-filled, most conditions change values; otherwise frame_repeat does
    assert touched > (len(conditions) if zero_filled else 1)
    # the values were read a batch of rows at a time, never whole; mnar's norms, one row at a time, are
    # the floats of the whole array's
    assert max(v.most for v in lazy.x.values()) <= 64
    for m in DIMS:
        assert streamed_ctx.norms[m].tobytes() == signal_norm(split.x[m], ctx.mean[m], ctx.std[m]).tobytes()


def _save_model(path: Path, steps: dict[str, int], task: str) -> Path:
    torch.manual_seed(0)
    n_out = 2 if task == "regression" else len(CLASSES)
    overrides = {"d_rnn": 8, "rnn_layers": 1, "d_fc_out": 8}
    net = build_model("late_fusion_lstm", DIMS, n_out, task, overrides)
    params = TrainParams(modalities=list(DIMS), task=task, model_params={"late_fusion_lstm": overrides})
    save_trained(path, {"state_dict": net.state_dict(), "model": "late_fusion_lstm", "strategy": "standard", "task": task,
                        "targets": ["arousal", "valence"] if task == "regression" else [], "n_outputs": n_out,
                        "params": params.model_dump(mode="json"), "dims": DIMS, "classes": CLASSES,
                        "modalities": list(DIMS), "seed": 0})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"classification": _save_model(root / "cls.pt", NATIVE, "classification"),
            "regression": _save_model(root / "reg.pt", ALIGNED, "regression")}


def _reference(path: Path, split: Split, conditions, ctx: ConditionContext, batch_size: int) -> dict:
    model, info = load_trained(path)
    applied = rs.apply_conditions(conditions, split, ctx)
    return score_conditions(model, info, split, applied, torch.device("cpu"), path, batch_size)


# one or two of each family (the grids' every level is checked on the arrays above), for the model's scores
SCORED = ["all_present", "each_missing", "missing:a+b", "clip_zero:a@0.5", "frame_zero:c@0.9", "frame_repeat:a@0.7",
          "frame_repeat:c@1.0", "random_missing@0.4", "availability:b@0.3", "imbalanced:a@0.6", "one_present:b@0.3",
          "mnar@0.6", "burst@0.3"]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_runs_scores_and_masked_steps_equal_the_all_at_once_ones(task, models, monkeypatch):
    monkeypatch.delenv("MER_BACKEND", raising=False)
    split = make_split(NATIVE if task == "classification" else ALIGNED, regression=task == "regression")
    ctx = context_of(split)
    clip_ids = np.array([f"clip{i // 2}" for i in range(N)])  # two rows per clip, the second from step 3
    origin = np.where(np.arange(N) % 2 == 1, 3, 0).astype(np.int64)
    record = rs.MaskedRecord(clip_ids, origin, 0)
    for conditions, size in ((tuple(parse_conditions(SCORED, list(DIMS))), 3), (tuple(NOT_ZEROED), 64)):
        contexts = {"k": rs.ScoringContext(rows_only(split), conditions, ctx, record)}
        (got,) = rs.score_runs([rs.ScoreJob(models[task], "k", masked=True)], contexts, "cpu", batch_size=size)
        want = _reference(models[task], split, conditions, ctx, size)
        assert list(got.scores) == list(want) == [c.name for c in conditions]
        for name, (metrics, out) in want.items():
            assert got.scores[name][0] == metrics, name
            assert got.scores[name][1].tobytes() == out.tobytes() and got.scores[name][1].shape == out.shape, name
        want_masked = masked_steps(list(conditions), rs.apply_conditions(conditions, split, ctx), split, clip_ids, origin, 0)
        assert got.masked_rows == want_masked and len(want_masked) > 0
        assert max(v.most for v in contexts["k"].split.x.values()) <= 64  # read a batch of rows at a time
    # a subset of the conditions comes back in the job's order, without the masked steps unless asked
    (sub,) = rs.score_runs([rs.ScoreJob(models[task], "k", ("frame_repeat:c@1.0", "missing:a"))], contexts, "cpu",
                           batch_size=64)
    assert list(sub.scores) == ["frame_repeat:c@1.0", "missing:a"] and sub.masked_rows is None
    assert sub.scores["missing:a"][1].tobytes() == want["missing:a"][1].tobytes()


def test_batch_size_changes_no_materialised_value_and_scores_stay_close(models, monkeypatch):
    monkeypatch.delenv("MER_BACKEND", raising=False)
    split = make_split(NATIVE)
    conditions = tuple(parse_conditions(["frame_repeat:a@0.7", "mnar@0.6", "burst@0.3"], list(DIMS)))
    contexts = {0: rs.ScoringContext(split, conditions, context_of(split))}
    outs = {size: next(iter(rs.score_runs([rs.ScoreJob(models["classification"], 0)], contexts, "cpu", batch_size=size)))
            for size in (1, 3, 64)}
    for name in outs[64].scores:
        # the model's floats may differ in the last bits between batch shapes; the inputs do not (above)
        np.testing.assert_allclose(outs[1].scores[name][1], outs[64].scores[name][1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(outs[3].scores[name][1], outs[64].scores[name][1], rtol=1e-5, atol=1e-6)


def test_one_plan_is_alive_at_a_time(models, monkeypatch):
    monkeypatch.delenv("MER_BACKEND", raising=False)
    split = make_split(NATIVE)
    conditions = tuple(parse_conditions(["all_present", "each_missing", "frame_repeat:a@0.7", "mnar@0.6"], list(DIMS)))
    made: list[weakref.ref] = []
    plan_condition = rs.plan_condition

    def counted(*args, **kwargs):
        # no gc.collect(): a plan must be freed by reference counting, the moment its condition is scored
        alive = [r for r in made if r() is not None]
        assert not alive, f"{len(alive)} earlier plan(s) (or their index arrays) still alive"
        plan = plan_condition(*args, **kwargs)
        made.extend([weakref.ref(plan)] + [weakref.ref(s) for s in plan.source.values() if s is not None])
        calls.append(plan.name)
        return plan

    calls: list[str] = []

    monkeypatch.setattr(rs, "plan_condition", counted)
    contexts = {0: rs.ScoringContext(split, conditions, context_of(split))}
    jobs = [rs.ScoreJob(models["classification"], 0), rs.ScoreJob(models["classification"], 0)]
    runs = list(rs.score_runs(jobs, contexts, "cpu"))
    assert len(runs) == 2 and all(list(r.scores) == [c.name for c in conditions] for r in runs)
    assert calls == [c.name for c in conditions] * 2  # each run's plans made anew, one condition after the other
    # an index plan holds [N,T] int32 per modality it touches, no feature axis
    plan = plan_condition(conditions[-1], split, replace(context_of(split), norms=rs.SignalNorms(split, *statistics())))
    assert all(s is None or (s.dtype == np.int32 and s.shape == split.mask[m].shape) for m, s in plan.source.items())


def test_split_jobs_cuts_few_runs_into_slices_of_their_conditions():
    split = make_split(NATIVE)
    conditions = tuple(parse_conditions(["all_present", "each_missing", "frame_repeat:a@0.7", "mnar@0.6"], list(DIMS)))
    names = tuple(c.name for c in conditions)  # 6: all_present, 3 missing, frame_repeat, mnar
    contexts = {0: rs.ScoringContext(split, conditions)}
    one = rs.ScoreJob(Path("m.pt"), 0, masked=True)
    # one run, 2 workers: 2 slices, contiguous, in order; only the first asks for the masked steps
    pieces = rs.split_jobs([one], contexts, 2)
    assert [i for i, _ in pieces] == [0, 0] and [p.masked for _, p in pieces] == [True, False]
    assert sum((p.conditions for _, p in pieces), ()) == names and [len(p.conditions) for _, p in pieces] == [3, 3]
    # 3 runs on 2 workers: 2 slices each (6 pieces end together instead of 3 runs in 2 rounds)
    three = [one, replace(one, masked=False), replace(one, conditions=("mnar@0.6", "all_present"), masked=False)]
    pieces = rs.split_jobs(three, contexts, 2)
    assert [i for i, _ in pieces] == [0, 0, 1, 1, 2, 2]
    assert [p.conditions for _, p in pieces][-2:] == [("mnar@0.6",), ("all_present",)]  # a subset keeps its own order
    # 5 runs on 16 workers: 3 slices each (15 of 16 busy), the run of 2 conditions 2; 4 runs on 2 workers: no cut
    assert [len(p.conditions) for _, p in rs.split_jobs(three + three[:2], contexts, 16)] == [2, 2, 2] * 2 + [1, 1] + [2, 2, 2] * 2
    assert rs.split_jobs(three + three[:1], contexts, 2) == list(enumerate(three + three[:1]))
    # enough runs, or one worker: every run its own piece, unchanged
    assert rs.split_jobs(three * 3, contexts, 2) == list(enumerate(three * 3))
    assert rs.split_jobs([one], contexts, 1) == [(0, one)]
    # never more slices than conditions
    assert len(rs.split_jobs([replace(one, conditions=("all_present",))], contexts, 8)) == 1


def test_a_run_shared_between_workers_scores_the_same_bytes(models, monkeypatch):
    """One run under every family on 2 workers (cut into 2 slices of its conditions) against the
    one-process loop: the same conditions in the same order, the same output bytes, the same masked
    steps. Which process scores which slice depends on when the helper is up; the result must not
    (that a helper's floats equal this process's is tests/test_compute.py's)."""
    from pipeline.core.compute import LAST_POOL, ComputeSettings

    monkeypatch.delenv("MER_BACKEND", raising=False)
    split = make_split(NATIVE)
    ctx = context_of(split)
    record = rs.MaskedRecord(np.array([f"clip{i}" for i in range(N)]), None, 0)
    conditions = tuple(parse_conditions(SCORED, list(DIMS)))
    contexts = {"k": rs.ScoringContext(split, conditions, ctx, record)}
    jobs = [rs.ScoreJob(models["classification"], "k", masked=True)]
    (alone,) = rs.score_runs(jobs, contexts, "cpu", ComputeSettings(workers=1))
    (shared,) = rs.score_runs(jobs, contexts, "cpu", ComputeSettings(workers=2))
    assert LAST_POOL["workers"] == 2
    assert list(shared.scores) == list(alone.scores) == [c.name for c in conditions]
    for name, (metrics, out) in alone.scores.items():
        assert shared.scores[name][0] == metrics and shared.scores[name][1].tobytes() == out.tobytes(), name
    assert shared.masked_rows == alone.masked_rows and len(alone.masked_rows) > 0
    assert shared.info == alone.info
