"""Evaluation protocols: which clips train, select (devel) and test, once or over several folds.

The papers do not share one split, so `segment.partition.protocol` offers:

    corpus                the corpus's own partition (every clip has one in the manifest); a corpus
                          without one gets a single seeded speaker-independent split (`devel`/`test`
                          shares of the speakers) — the demo's case.
    official              where a corpus's test labels are withheld (Aff-Wild2: the official split is train and
                          validation): its validation set (the manifest's `devel`) is the test set, and
                          devel is a `devel` share of its training speakers (seeded), as 002 and 004
                          report on the official validation set. A corpus whose split has a test
                          partition keeps it (as `corpus`); one without a split gets the seeded split.
    speaker_random        `repeats` fresh speaker-independent splits (001 §4.3: 70/15/15 × 20),
                          repeat k drawn with seed [seed, k].
    leave_one_group_out   one fold per group (`group: speaker | session`; 003: 5-fold IEMOCAP,
                          6-fold MSP-IMPROV by session). `devel_from: training`: the group is the test
                          set and a `devel` share of the remaining speakers (at least one, seeded per
                          fold) selects the epoch. `devel_from: held_out` (003 §5.3: "the data from a
                          certain session was split by speakers into the validation and testing sets"):
                          half of the group's speakers (seeded per fold; the smaller half when odd, at
                          least one) select the epoch and the others test; the other groups train. A
                          group of one speaker draws its fold's devel as `training` does, and the
                          segment stage says so.
                          003 does not say which speaker of a session validates, nor whether the roles
                          are swapped; a seeded choice, not swapped, is ours.

`assign_folds` returns partitions as an array [K, N] of 'train' | 'devel' | 'test' (fold k, clip i);
every fold keeps speakers apart: no speaker is in two partitions of one fold.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.corpus.manifest import PARTITIONS, Clip

# under several folds, statistics pair replicates (fold, seed), numbered (fold + 1)·REPLICATE + seed
# (`replicate`), so a replicate number never equals a plain seed
REPLICATE = 1000


def replicate(fold: int | None, seed: int) -> int:
    """The replicate number of a run: its seed with one fold, (fold + 1)·REPLICATE + seed with several."""
    return seed if fold is None else (fold + 1) * REPLICATE + seed

Protocol = Literal["corpus", "official", "speaker_random", "leave_one_group_out"]


class ProtocolError(PipelineError):
    """The protocol cannot split this corpus; the message says why and what to change."""


def speaker_split(speakers: Sequence[str], devel: float, test: float, rng: np.random.Generator) -> dict[str, str]:
    """{speaker: partition} for a random speaker-independent split: round(test·n) test speakers (at
    least one), round(devel·n) devel speakers (at least one when devel > 0), the rest train."""
    speakers = sorted(set(speakers))
    n = len(speakers)
    n_test = max(1, int(round(test * n))) if test > 0 else 0
    n_devel = max(1, int(round(devel * n))) if devel > 0 else 0
    if n - n_test - n_devel < 1:
        raise ProtocolError(
            f"{n} speakers cannot be split into train/devel/test with devel={devel}, test={test}: "
            "need at least one training speaker"
        )
    order = rng.permutation(n)
    return {
        speakers[idx]: "test" if rank < n_test else "devel" if rank < n_test + n_devel else "train"
        for rank, idx in enumerate(order)
    }


def assign_folds(
    clips: list[Clip],
    protocol: Protocol = "corpus",
    devel: float = 0.2,
    test: float = 0.2,
    repeats: int = 1,
    group: Literal["speaker", "session"] = "speaker",
    seed: int = 0,
    devel_from: Literal["training", "held_out"] = "training",
    notes: list[str] | None = None,
) -> np.ndarray:
    """Partitions [K, N] (see the module docstring). `notes` (a list) collects what a fold had to do
    otherwise than asked (a held-out group of one speaker under `devel_from: held_out`); without it, that
    is an error."""
    if not clips:
        raise ProtocolError("the manifest holds no clips")
    speakers = [c.speaker for c in clips]
    given = [c.partition for c in clips]
    if protocol == "official" and all(p is not None for p in given) and "test" not in given:
        return _official(clips, devel, seed)
    if protocol in ("corpus", "official"):
        if all(p is not None for p in given):
            unknown = sorted(set(given) - set(PARTITIONS))
            if unknown:
                raise ProtocolError(f"manifest partitions {unknown} are not in {PARTITIONS}")
            lacking = [p for p in ("train", "test") if p not in given]
            if lacking:  # e.g. Aff-Wild2's official split: train and validation, the test labels are not public
                raise ProtocolError(f"the corpus's own split has no {' and no '.join(lacking)} partition "
                                    f"(it has {sorted(set(given))}); use protocol official (its devel set tests), "
                                    "speaker_random or leave_one_group_out")
            return np.array([given], dtype=str)
        if any(p is not None for p in given):
            n = sum(p is None for p in given)
            raise ProtocolError(f"{n} of {len(clips)} clips have no partition in the manifest: protocol 'corpus' "
                                "needs one for every clip (or none, for a seeded speaker split)")
        part = speaker_split(speakers, devel, test, np.random.default_rng(seed))
        return np.array([[part[s] for s in speakers]], dtype=str)
    if protocol == "speaker_random":
        folds = []
        for k in range(repeats):
            part = speaker_split(speakers, devel, test, np.random.default_rng([seed, k]))
            folds.append([part[s] for s in speakers])
        return np.array(folds, dtype=str)
    if protocol == "leave_one_group_out":
        if group == "session":
            lacking = sum(c.session is None for c in clips)
            if lacking:
                raise ProtocolError(f"leave_one_group_out by session: {lacking} clips have no session in the manifest; "
                                    "use group: speaker, or a corpus whose adapter gives sessions")
            groups = [str(c.session) for c in clips]
        else:
            groups = speakers
        names = sorted(set(groups))
        if len(names) < 2:
            raise ProtocolError(f"leave_one_group_out needs at least 2 {group}s, the corpus has {len(names)}")
        folds = []
        for k, held in enumerate(names):
            rest = sorted({s for s, g in zip(speakers, groups) if g != held})
            mine = sorted({s for s, g in zip(speakers, groups) if g == held})
            overlap = sorted(set(mine) & set(rest))
            if overlap:
                raise ProtocolError(f"leave_one_group_out by {group}: speakers {overlap[:3]} appear in '{held}' and in "
                                    "other groups, so a fold would test on a training speaker")
            in_devel: set[str] = set()
            if devel_from == "held_out" and len(mine) < 2 and notes is not None:
                # one speaker cannot both validate and test: this fold draws devel as `training` does
                notes.append(f"fold '{held}': the held-out {group} has one speaker ({mine[0]}), so its devel is "
                             f"a {devel:g} share of the training speakers (devel_from: training)")
            if devel_from == "held_out" and len(mine) >= 2:
                rng = np.random.default_rng([seed, k])
                in_devel = {mine[i] for i in rng.permutation(len(mine))[:len(mine) // 2]}
                folds.append(["devel" if s in in_devel else "test" if g == held else "train"
                              for s, g in zip(speakers, groups)])
                continue
            if devel_from == "held_out" and len(mine) < 2 and notes is None:
                raise ProtocolError(f"fold '{held}': devel_from held_out needs at least 2 speakers in the held-out "
                                    f"{group}, it has {len(mine)}")
            if devel > 0:
                if len(rest) < 2:
                    raise ProtocolError(f"fold '{held}': {len(rest)} training speaker(s) cannot give a devel share")
                n_devel = min(len(rest) - 1, max(1, int(round(devel * len(rest)))))
                rng = np.random.default_rng([seed, k])
                in_devel = {rest[i] for i in rng.permutation(len(rest))[:n_devel]}
            folds.append(["test" if g == held else "devel" if s in in_devel else "train" for s, g in zip(speakers, groups)])
        return np.array(folds, dtype=str)
    raise ProtocolError(f"unknown protocol {protocol!r}; use corpus, official, speaker_random or leave_one_group_out")


def _official(clips: list[Clip], devel: float, seed: int) -> np.ndarray:
    """The `official` protocol on a split of train and devel (see the module docstring)."""
    unknown = sorted({c.partition for c in clips} - {"train", "devel"})
    if unknown:
        raise ProtocolError(f"protocol official: manifest partitions {unknown} are not train or devel")
    train = sorted({c.speaker for c in clips if c.partition == "train"})
    held = {c.speaker for c in clips if c.partition == "devel"}
    if not train or not held:
        raise ProtocolError(f"protocol official: the corpus's split needs train and devel (its validation set) clips; "
                            f"it has {len(train)} training and {len(held)} validation speakers")
    both = sorted(held & set(train))
    if both:
        raise ProtocolError(f"protocol official: speakers {both[:3]} are in the corpus's training and validation sets, so "
                            "the test set would share speakers with training; use speaker_random")
    n_devel = max(1, int(round(devel * len(train)))) if devel > 0 else 0
    if len(train) - n_devel < 1:
        raise ProtocolError(f"protocol official: {len(train)} training speakers cannot give a devel share of {devel}")
    rng = np.random.default_rng(seed)
    in_devel = {train[i] for i in rng.permutation(len(train))[:n_devel]}
    return np.array([["test" if c.partition == "devel" else "devel" if c.speaker in in_devel else "train" for c in clips]],
                    dtype=str)
