"""Scoring trained runs under missing-modality conditions, one run after another in this process or each
run as a Ray work item (`pipeline.compute`): the loop the evaluation grid (`pipeline.evaluate`) and the
importance search (`pipeline.importance`) share.

A `ScoreJob` names a model file and a *context*: the split it is scored on, the conditions, what some
mechanisms need (`ConditionContext`) and, for evaluation, what the masked-steps record needs. A worker
applies a context's conditions once (each seeded by its name, `condition_seed`, so every worker builds
the same arrays) and keeps them for that context's next runs; in this process that is once per fold,
as before. Only the latest context's conditions are kept, so memory stays at one fold's.

What travels through Ray: the contexts once (a split holds the scored partition's rows only; the
applied conditions, often hundreds of MB, are rebuilt on the worker instead), each run's metrics and
outputs back, in the jobs' order. With one CPU per worker the results equal the local backend's, so
evaluate's tables and the importance files are byte-identical (tests/test_compute.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Hashable, Iterator, Mapping, Sequence

import numpy as np
import torch

from pipeline.clip_scores import masked_steps
from pipeline.compute import ComputeSettings, map_ordered
from pipeline.missing import Condition, ConditionContext, condition_seed
from pipeline.runs import Split, load_trained, score_conditions
from pipeline.segments import Segments

#: one run's scores: {condition: (metrics, outputs)}
Scores = dict[str, tuple[dict[str, float], np.ndarray]]


@dataclass(frozen=True)
class MaskedRecord:
    """What `pipeline.clip_scores.masked_steps` needs beside the applied conditions."""

    clip_ids: np.ndarray
    origin: np.ndarray | None
    fold: int


@dataclass(frozen=True)
class ScoringContext:
    """A split and the conditions its runs are scored under."""

    split: Split
    conditions: tuple[Condition, ...]
    condition_context: ConditionContext | None = None
    masked: MaskedRecord | None = None  # given: the first job of this context also returns masked_steps rows


@dataclass(frozen=True)
class ScoreJob:
    path: Path
    context: Hashable  # a key of the contexts
    conditions: tuple[str, ...] | None = None  # a subset of the context's conditions, by name; None: all


@dataclass
class ScoredRun:
    info: dict[str, Any]  # the model file's info (`pipeline.runs.load_trained`)
    scores: Scores
    masked_rows: list[dict[str, Any]] | None  # the context's masked_steps rows, with its first job only


def apply_conditions(conditions: Sequence[Condition], split: Split, context: ConditionContext | None = None) -> dict[str, tuple[dict, dict]]:
    """Each condition applied to the split, its generator seeded by `condition_seed(name)`."""
    return {c.name: c.apply_with(split.x, split.mask, np.random.default_rng(condition_seed(c.name)), context) for c in conditions}


def condition_context(split: Split, segments: Segments | None = None) -> ConditionContext:
    """What the mechanisms need of a split: the valid steps of each modality (`split.valid` where the
    Split carries them, else `segments.valid(m)` of its rows) and the segments' normalisation statistics."""
    valid = getattr(split, "valid", None)
    if valid is None and segments is not None and hasattr(segments, "valid"):
        valid = {m: segments.valid(m)[split.idx] for m in split.mask}
    return ConditionContext(valid=valid, mean=None if segments is None else segments.mean,
                            std=None if segments is None else segments.std)


class _Scorer:
    """A worker's state: the contexts, and the applied conditions of the latest one."""

    def __init__(self, contexts: Mapping[Hashable, ScoringContext], device: str | torch.device):
        self.contexts, self.device = contexts, torch.device(device)
        self._key: Hashable = object()
        self._applied: dict[str, tuple[dict, dict]] = {}

    def __call__(self, job: ScoreJob) -> ScoredRun:
        ctx = self.contexts[job.context]
        masked_rows = None
        if job.context != self._key:
            self._applied = {}  # free the previous context's arrays first
            self._applied, self._key = apply_conditions(ctx.conditions, ctx.split, ctx.condition_context), job.context
            if ctx.masked is not None:
                m = ctx.masked
                masked_rows = masked_steps(list(ctx.conditions), self._applied, ctx.split, m.clip_ids, m.origin, m.fold)
        used = self._applied if job.conditions is None else {c: self._applied[c] for c in job.conditions}
        model, info = load_trained(job.path, self.device)
        scores = score_conditions(model, info, ctx.split, used, self.device, job.path)
        return ScoredRun(info, scores, masked_rows)


def _score(scorer: _Scorer, job: ScoreJob) -> ScoredRun:
    return scorer(job)


def score_runs(
    jobs: Sequence[ScoreJob],
    contexts: Mapping[Hashable, ScoringContext],
    device: str | torch.device,
    settings: ComputeSettings | None = None,
) -> Iterator[ScoredRun]:
    """Each job's `ScoredRun`, in the jobs' order (jobs of one context next to each other, so each worker
    applies a context's conditions once). A job's error (a PipelineError: a non-finite output, a model
    file that does not load) is raised when its turn comes, after every earlier job's result."""
    return map_ordered(_score, list(jobs), setup=partial(_Scorer, dict(contexts), str(device)), settings=settings)


__all__ = ["MaskedRecord", "ScoreJob", "ScoredRun", "ScoringContext", "apply_conditions", "condition_context", "score_runs"]
