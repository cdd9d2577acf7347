"""Evaluation protocols: the corpus split, repeated speaker splits and leave-one-group-out folds."""

import numpy as np
import pytest

from pipeline.corpus.manifest import Clip
from pipeline.segment.protocols import ProtocolError, assign_folds


def clips(n_speakers=10, per=3, sessions=None, partition=None):
    out = []
    for s in range(n_speakers):
        for i in range(per):
            out.append(Clip(f"s{s}_{i}", f"spk{s}", "x.mp4", 1.0, partition=partition,
                            session=None if sessions is None else f"S{s % sessions}"))
    return out


def speaker_apart(cs, fold):
    by = {}
    for c, p in zip(cs, fold):
        by.setdefault(c.speaker, set()).add(p)
    return all(len(v) == 1 for v in by.values())


def test_corpus_protocol_keeps_the_manifest_split_or_draws_one_speaker_split():
    cs = clips(partition="train")
    cs[0].partition = "test"
    assert assign_folds(cs).tolist() == [[c.partition for c in cs]]
    free = clips()
    f = assign_folds(free, devel=0.2, test=0.2, seed=3)
    assert f.shape == (1, 30) and speaker_apart(free, f[0])
    assert sorted(np.unique(f[0], return_counts=True)[1]) == [6, 6, 18]  # 2 + 2 + 6 speakers × 3 clips
    half = clips()
    half[0].partition = "train"
    with pytest.raises(ProtocolError, match="29 of 30 clips have no partition"):
        assign_folds(half)


def test_speaker_random_repeats_are_fresh_splits_and_reproducible():
    cs = clips(20)
    f = assign_folds(cs, "speaker_random", devel=0.15, test=0.15, repeats=20, seed=0)
    assert f.shape == (20, 60)
    assert all(speaker_apart(cs, fold) for fold in f)
    assert all((fold == "test").sum() == 9 and (fold == "devel").sum() == 9 for fold in f)  # 3 speakers each
    assert len({tuple(fold) for fold in f}) == 20
    assert np.array_equal(f, assign_folds(cs, "speaker_random", devel=0.15, test=0.15, repeats=20, seed=0))


def test_leave_one_session_out_tests_each_session_once():
    cs = clips(10, sessions=5)
    f = assign_folds(cs, "leave_one_group_out", devel=0.2, group="session")
    assert f.shape == (5, 30)
    tested = [{c.session for c, p in zip(cs, fold) if p == "test"} for fold in f]
    assert tested == [{"S0"}, {"S1"}, {"S2"}, {"S3"}, {"S4"}]
    for fold in f:
        assert speaker_apart(cs, fold) and (fold == "devel").any() and (fold == "train").any()
    with pytest.raises(ProtocolError, match="no session"):
        assign_folds(clips(), "leave_one_group_out", group="session")


def test_leave_one_session_out_with_devel_inside_the_held_out_session():
    """003 §5.3: the held-out session's speakers split into validation and test; every other session trains."""
    cs = clips(10, sessions=5)  # IEMOCAP's shape: 2 speakers per session
    f = assign_folds(cs, "leave_one_group_out", group="session", devel_from="held_out", seed=0)
    assert f.shape == (5, 30)
    for k, fold in enumerate(f):
        assert speaker_apart(cs, fold)
        devel = {c.speaker for c, p in zip(cs, fold) if p == "devel"}
        test = {c.speaker for c, p in zip(cs, fold) if p == "test"}
        assert len(devel) == len(test) == 1 and {c.session for c in cs if c.speaker in devel | test} == {f"S{k}"}
        assert all(p == "train" for c, p in zip(cs, fold) if c.session != f"S{k}")  # the devel share is not drawn
    assert np.array_equal(f, assign_folds(cs, "leave_one_group_out", group="session", devel_from="held_out", seed=0))
    other = assign_folds(cs, "leave_one_group_out", group="session", devel_from="held_out", seed=1)
    assert not np.array_equal(f, other)  # which speaker validates is seeded
    three = clips(9, sessions=3)  # 3 speakers a session: 1 devel, 2 test
    assert all((fold == "devel").sum() == 3 and (fold == "test").sum() == 6
               for fold in assign_folds(three, "leave_one_group_out", group="session", devel_from="held_out"))
    with pytest.raises(ProtocolError, match=r"fold 'spk0': devel_from held_out needs at least 2 speakers in the held-out speaker"):
        assign_folds(clips(3), "leave_one_group_out", devel_from="held_out")
    # the segment stage passes `notes`: a session of one speaker (the demo's odd last one) draws its
    # fold's devel from the training speakers, and that is said
    odd, notes = clips(5, sessions=3), []
    odd_folds = assign_folds(odd, "leave_one_group_out", group="session", devel_from="held_out", notes=notes)
    assert notes == ["fold 'S2': the held-out session has one speaker (spk2), so its devel is a 0.2 share of the "
                     "training speakers (devel_from: training)"]
    last = odd_folds[2]
    assert {c.speaker for c, p in zip(odd, last) if p == "test"} == {"spk2"} and (last == "devel").any()


def test_leave_one_speaker_out_and_its_errors():
    cs = clips(4)
    f = assign_folds(cs, "leave_one_group_out", devel=0.3, group="speaker")
    assert f.shape == (4, 12) and all((fold == "test").sum() == 3 for fold in f)
    with pytest.raises(ProtocolError, match="at least 2"):
        assign_folds(clips(1), "leave_one_group_out")
    shared = clips(4, sessions=2)
    shared[0].session = "S1"  # spk0 recorded in two sessions
    with pytest.raises(ProtocolError, match="appear in"):
        assign_folds(shared, "leave_one_group_out", group="session")


def test_a_corpus_split_without_test_is_an_error_naming_the_fix():
    cs = clips(partition="train")
    cs[0].partition = "devel"  # Aff-Wild2's official split: train and validation only
    with pytest.raises(ProtocolError, match="no test partition.*speaker_random"):
        assign_folds(cs)


def test_official_protocol_tests_on_the_validation_set_and_carves_devel_from_training():
    """002/004 report on Aff-Wild2's official validation set; its test labels are not public."""
    cs = clips(10, partition="train")
    for c in cs:
        if c.speaker in ("spk8", "spk9"):
            c.partition = "devel"  # the official validation set
    f = assign_folds(cs, "official", devel=0.25, seed=0)
    assert f.shape == (1, 30) and speaker_apart(cs, f[0])
    assert {c.speaker for c, p in zip(cs, f[0]) if p == "test"} == {"spk8", "spk9"}
    assert len({c.speaker for c, p in zip(cs, f[0]) if p == "devel"}) == 2  # round(0.25 × 8)
    assert np.array_equal(f, assign_folds(cs, "official", devel=0.25, seed=0))
    with pytest.raises(ProtocolError, match=r"use protocol official"):
        assign_folds(cs, "corpus")
    assert assign_folds(clips(), "official").shape == (1, 30)  # no split: the seeded speaker split, as corpus
    cs[0].partition = "devel"  # spk0 in both sets
    with pytest.raises(ProtocolError, match=r"speakers \['spk0'\] are in the corpus's training and validation sets"):
        assign_folds(cs, "official")
