"""Scoring trained runs under missing-modality conditions, one run after another in this process or each
run as a Ray work item (`pipeline.core.compute`): the loop the evaluation grid (`pipeline.evaluate.grid`) and the
importance search (`pipeline.evaluate.importance`) share.

A `ScoreJob` names a model file and a *context*: the split it is scored on, the conditions, what some
mechanisms need (`ConditionContext`) and, for evaluation, what the masked-steps record needs.

Memory does not grow with the number of conditions: a run is scored condition by condition, and a
condition is never applied to the values of the split. Every condition only removes steps (mask False,
values zeroed), repeats an earlier step (`frame_repeat`) or leaves a modality alone; none computes new
values. So it is applied to *step indices* instead (`plan_condition`): a [N,T,1] int32 array holding
t + 1 at step t goes through the condition's own `apply_with`, with the same seeded generator
(`condition_seed(name)`, every worker draws the same), and comes back saying, for each step, which
source step's values it carries (k − 1) or 0 where they were zeroed. That `Plan` ([N,T] indices and the
new masks, no feature axis) is materialised one batch of rows at a time while the model predicts
(`PlannedRows`): the same float32 values, bit for bit, as applying the condition to the whole split,
because the operations only select, copy and zero (np.where with +0.0). The one condition that reads
the values, `mnar` (the weakest steps by signal norm), gets the norms computed beforehand batch by batch
(`SignalNorms`; rows are independent, so the floats are the same) through `ConditionContext.norms`.

At most one condition's plan is alive at a time; beside it the scorer holds the split (or its row
views), one batch of materialised rows, the run's outputs and, when an `mnar` condition is scored, the
[N,T] signal norms of the context. The plans are rebuilt for each run: drawing masks costs little next
to the model's forward passes over the split. A work item is one run, or a slice of its conditions
when the runs alone would leave workers idle (`split_jobs`: 002's one seed under 31 conditions on 2 cores),
and a run's result does not wait for the fold's other runs.

What travels through Ray: the contexts once (a split holds the scored partition's rows only), each
run's metrics and outputs back, in the jobs' order. With one CPU per worker the results equal the
local backend's, so evaluate's tables and the importance files are byte-identical (tests/test_compute.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Hashable, Iterator, Mapping, Sequence

import numpy as np
import torch

from pipeline.core.compute import ComputeSettings, map_ordered, worker_count
from pipeline.core.stage import keep_freed_memory
from pipeline.evaluate.clip_scores import masked_steps
from pipeline.missing import Condition, ConditionContext, condition_seed
from pipeline.missing.ops import signal_norm
from pipeline.runs.feed import EVAL_BATCH_SIZE, Split, score_conditions
from pipeline.runs.files import load_trained
from pipeline.segment.contract import Segments

#: one run's scores: {condition: (metrics, outputs)}
Scores = dict[str, tuple[dict[str, float], np.ndarray]]
# elements of a batch of rows turned into float64 at once for the signal norms (32 MB)
_NORM_CHUNK = 1 << 22


@dataclass(frozen=True)
class MaskedRecord:
    """What `pipeline.evaluate.clip_scores.masked_steps` needs beside the conditions' masks."""

    clip_ids: np.ndarray
    origin: np.ndarray | None
    fold: int


@dataclass(frozen=True)
class ScoringContext:
    """A split and the conditions its runs are scored under."""

    split: Split
    conditions: tuple[Condition, ...]
    condition_context: ConditionContext | None = None
    masked: MaskedRecord | None = None  # what a job with `masked` needs for its masked_steps rows


@dataclass(frozen=True)
class ScoreJob:
    path: Path
    context: Hashable  # a key of the contexts
    conditions: tuple[str, ...] | None = None  # a subset of the context's conditions, by name; None: all
    masked: bool = False  # also return the context's masked_steps rows (every `missing` condition's)


@dataclass
class ScoredRun:
    info: dict[str, Any]  # the model file's info (`pipeline.runs.files.load_trained`)
    scores: Scores
    masked_rows: list[dict[str, Any]] | None  # the context's masked_steps rows, for a job with `masked`


# ---- plans: a condition applied to step indices ---------------------------------------------------


@dataclass
class Plan:
    """One condition's effect on a split. `source[m]` [N,T_m] int32: 1 + the step whose values step t
    carries, 0 where they are zeroed; None where the condition leaves modality m's values as they are.
    `mask[m]` [N,T_m] bool: the presence masks under the condition (the split's own arrays where the
    condition leaves them alone)."""

    name: str
    source: dict[str, np.ndarray | None]
    mask: dict[str, np.ndarray]

    def applied(self, split: Split) -> tuple[dict[str, "PlannedRows"], dict[str, np.ndarray]]:
        """(x, mask) of the split under the condition, x as row views (`PlannedRows`), for `predict`."""
        return {m: PlannedRows(split.x[m], src) for m, src in self.source.items()}, self.mask


class PlannedRows:
    """A modality of a split under a plan, materialised only for the rows asked: `view[rows]` is
    [len(rows), T, D], the same values as the condition applied to the whole array, rows `rows`. The
    split's values are read through `x[rows]` only (an array or a lazy row view)."""

    def __init__(self, x: Any, source: np.ndarray | None):
        self.x, self.source = x, source

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(getattr(self.x, "dtype", np.float32))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        if self.source is None:
            return np.asarray(self.x[rows])
        src = self.source[rows]
        keep = src > 0
        if not keep.any():  # the modality zeroed in every row: nothing to read
            return np.zeros((len(src), *self.shape[1:]), self.dtype)
        values = np.asarray(self.x[rows])
        own = np.arange(1, src.shape[1] + 1, dtype=src.dtype)
        if not np.array_equal(np.where(keep, src, own), np.broadcast_to(own, src.shape)):  # some step repeats another
            values = np.take_along_axis(values, (np.where(keep, src, 1) - 1)[..., None].astype(np.intp), axis=1)
        if keep.all():
            return values
        if not values.flags.writeable or (isinstance(self.x, np.ndarray) and np.may_share_memory(values, self.x)):
            values = values.copy()  # never write the split (a view of it, or a read-only map)
        # zeroed in place (+0.0, as np.where writes): one batch of values alive, not two
        np.copyto(values, np.zeros((), values.dtype), where=~keep[..., None])
        return values


def _step_indices(n: int, t: int) -> np.ndarray:
    """[n,t,1] int32 holding t + 1 at step t (a read-only broadcast view: the operations never write
    their inputs)."""
    return np.broadcast_to(np.arange(1, t + 1, dtype=np.int32)[None, :, None], (n, t, 1))


def plan_condition(condition: Condition, split: Split, context: ConditionContext | None = None) -> Plan:
    """`condition` applied to the split's step indices and masks (its generator seeded by
    `condition_seed(name)`, as `apply_conditions`): which step's values each step carries, and the
    masks. `mnar` ranks `context.norms` (made here, computed only if read, when the context has none;
    the scorer passes its own, kept for the context's next runs)."""
    if context is not None and context.norms is None:
        context = replace(context, norms=SignalNorms(split, context.mean or {}, context.std or {}))
    steps = {m: _step_indices(*np.shape(split.mask[m])[:2]) for m in split.x}
    mask = {m: split.mask[m] for m in split.x}
    out_x, out_mask = condition.apply_with(steps, mask, np.random.default_rng(condition_seed(condition.name)), context)
    source = {m: None if out_x[m] is steps[m] else np.ascontiguousarray(out_x[m][..., 0], dtype=np.int32) for m in split.x}
    return Plan(condition.name, source, {m: np.asarray(out_mask[m]) for m in split.x})


class SignalNorms(dict):
    """{modality: [N,T] float64}: each step's signal norm (`ops.signal_norm`, what `mnar` ranks) for the
    split's rows, computed on first use in batches of rows, then kept."""

    def __init__(self, split: Split, mean: Mapping[str, Any], std: Mapping[str, Any]):
        super().__init__()
        self.split, self.mean, self.std = split, mean, std

    def __missing__(self, m: str) -> np.ndarray:
        x = self.split.x[m]
        n, t = int(x.shape[0]), int(x.shape[1])
        chunk = max(1, _NORM_CHUNK // max(1, t * int(np.prod(x.shape[2:]))))
        out = np.empty((n, t), np.float64)
        for start in range(0, n, chunk):
            rows = np.arange(start, min(start + chunk, n))
            out[rows] = signal_norm(np.asarray(x[rows]), self.mean[m], self.std[m])
        self[m] = out
        return out


def apply_conditions(conditions: Sequence[Condition], split: Split, context: ConditionContext | None = None) -> dict[str, tuple[dict, dict]]:
    """Each condition applied to the whole split at once, its generator seeded by `condition_seed(name)`:
    a full copy of the split per condition. The reference the streamed scoring is tested against
    (tests/test_streamed_scoring.py) and a convenience on small data; scoring never calls it."""
    return {c.name: c.apply_with(split.x, split.mask, np.random.default_rng(condition_seed(c.name)), context) for c in conditions}


def condition_context(split: Split, segments: Segments | None = None) -> ConditionContext:
    """What the mechanisms need of a split: the valid steps of each modality (`split.valid` where the
    Split carries them, else `segments.valid(m)` of its rows) and the segments' normalisation statistics."""
    valid = getattr(split, "valid", None)
    if valid is None and segments is not None and hasattr(segments, "valid"):
        valid = {m: segments.valid(m)[split.idx] for m in split.mask}
    return ConditionContext(valid=valid, mean=None if segments is None else segments.mean,
                            std=None if segments is None else segments.std)


# ---- the worker ------------------------------------------------------------------------------------


class _Scorer:
    """A worker's state: the contexts, and the signal norms of the latest one (computed when an `mnar`
    condition first needs them)."""

    def __init__(self, contexts: Mapping[Hashable, ScoringContext], device: str | torch.device,
                 batch_size: int = EVAL_BATCH_SIZE):
        self.contexts, self.device, self.batch_size = contexts, torch.device(device), batch_size
        keep_freed_memory()  # a batch's large tensors are reused, not page-faulted in anew (1.86× on 003)
        self._key: Hashable = object()
        self._context: ConditionContext | None = None

    def __call__(self, job: ScoreJob) -> ScoredRun:
        ctx = self.contexts[job.context]
        if job.context != self._key:
            cc = ctx.condition_context
            # the previous context's norms are dropped here
            self._context = None if cc is None else replace(cc, norms=SignalNorms(ctx.split, cc.mean or {}, cc.std or {}))
            self._key = job.context
        wanted = None if job.conditions is None else set(job.conditions)
        record = ctx.masked if job.masked else None
        model, info = load_trained(job.path, self.device)
        scores: Scores = {}
        masked_rows: list[dict[str, Any]] | None = None if record is None else []
        for c in ctx.conditions:
            score = wanted is None or c.name in wanted
            mark = record is not None and c.family == "missing"
            if score or mark:
                scores.update(self._one(ctx, c, model, info, job.path, score, masked_rows if mark else None))
        if job.conditions is not None:  # in the job's order
            scores = {name: scores[name] for name in job.conditions}
        return ScoredRun(info, scores, masked_rows)

    def _one(self, ctx: ScoringContext, c: Condition, model: torch.nn.Module, info: dict[str, Any], path: Path,
             score: bool, masked_rows: list[dict[str, Any]] | None) -> Scores:
        """One condition: its plan (dropped on return, so one is alive at a time), the run scored on it,
        and its masked_steps rows appended to `masked_rows` when given."""
        plan = plan_condition(c, ctx.split, self._context)
        if masked_rows is not None:
            m = ctx.masked
            masked_rows += masked_steps([c], {c.name: (None, plan.mask)}, ctx.split, m.clip_ids, m.origin, m.fold)
        if not score:
            return {}
        return score_conditions(model, info, ctx.split, {c.name: plan.applied(ctx.split)}, self.device, path, self.batch_size)


def _score(scorer: _Scorer, job: ScoreJob) -> ScoredRun:
    return scorer(job)


def split_jobs(jobs: Sequence[ScoreJob], contexts: Mapping[Hashable, ScoringContext], workers: int) -> list[tuple[int, ScoreJob]]:
    """(index of the job, piece) for each piece the jobs are cut into so that `workers` workers share
    them evenly: with fewer than 4 × workers jobs, each job's conditions are cut into the fewest
    contiguous slices k (at most one per condition) that fill the last round of work at least 90 %
    (one run on 2 workers: 2 slices; 3 or 5 runs on 2: 2 slices each, instead of a last round with
    one worker idle). Only a job's first piece asks for the masked steps. Each piece loads the model
    again (small next to scoring a slice of conditions). With enough jobs, or one worker, every job
    is its own piece."""
    n = len(jobs)
    if workers < 2 or n == 0 or n >= 4 * workers:
        return list(enumerate(jobs))
    names = [j.conditions if j.conditions is not None else tuple(c.name for c in contexts[j.context].conditions) for j in jobs]
    most = max(len(x) for x in names)
    k = next((k for k in range(1, most + 1) if n * k / (-(-n * k // workers) * workers) >= 0.9), most)
    pieces: list[tuple[int, ScoreJob]] = []
    for i, (job, own) in enumerate(zip(jobs, names)):
        cut = max(1, min(k, len(own)))
        if cut == 1:
            pieces.append((i, job))
            continue
        bounds = [j * len(own) // cut for j in range(cut + 1)]
        pieces += [(i, replace(job, conditions=own[a:b], masked=job.masked and j == 0)) for j, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    return pieces


def _joined(pieces: list[tuple[int, ScoreJob]], scored: Iterator[ScoredRun]) -> Iterator[ScoredRun]:
    """The scored pieces of each job (consecutive, in order) as one `ScoredRun`, yielded as soon as the
    job's last piece is in: the conditions in the pieces' order, the masked steps of the piece that
    asked for them. Closing this closes `scored` (the pool or Ray's work)."""
    left = Counter(i for i, _ in pieces)
    job: ScoredRun | None = None
    try:
        for (i, _), run in zip(pieces, scored):
            if job is None:
                job = run
            else:
                job.scores.update(run.scores)
                job.masked_rows = job.masked_rows if run.masked_rows is None else run.masked_rows
            left[i] -= 1
            if left[i] == 0:
                yield job
                job = None
    finally:
        getattr(scored, "close", lambda: None)()


def score_runs(
    jobs: Sequence[ScoreJob],
    contexts: Mapping[Hashable, ScoringContext],
    device: str | torch.device,
    settings: ComputeSettings | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
) -> Iterator[ScoredRun]:
    """Each job's `ScoredRun`, in the jobs' order (jobs of one context next to each other, so a worker
    computes a context's signal norms once). Where the jobs alone would leave workers idle, a job's
    conditions are shared between workers (`split_jobs`); every condition is scored alone with its own seeded masks, so the
    results are the same bytes however the jobs are cut (tests/test_streamed_scoring.py). A job's error
    (a PipelineError: a non-finite output, a model file that does not load) is raised when its turn
    comes, after every earlier job's result. `batch_size`: the rows the model predicts at once, which
    are also the rows materialised at once."""
    gpu = torch.device(device).type == "cuda"
    jobs = list(jobs)
    conditions = sum(len(j.conditions) if j.conditions is not None else len(contexts[j.context].conditions) for j in jobs)
    pieces = split_jobs(jobs, contexts, worker_count(conditions, settings, gpu))
    scored = map_ordered(_score, [p for _, p in pieces], setup=partial(_Scorer, dict(contexts), str(device), batch_size),
                         settings=settings, gpu=gpu)
    return _joined(pieces, scored)


__all__ = ["MaskedRecord", "Plan", "PlannedRows", "ScoreJob", "ScoredRun", "ScoringContext", "SignalNorms",
           "apply_conditions", "condition_context", "plan_condition", "score_runs", "split_jobs"]
