"""Per-stage thread defaults (pipeline/core/stage.py STAGE_THREADS): MER_THREADS overrides them, they are
capped at the usable cores, and a stage script is recognised by its file name."""

from __future__ import annotations

import sys

import pytest

from pipeline.core import stage as S


def test_stage_defaults_cap_and_override(monkeypatch):
    monkeypatch.delenv(S.THREADS_ENV, raising=False)
    monkeypatch.setitem(S.STAGE_THREADS, "face_embed", 2)
    monkeypatch.setattr(S, "usable_cores", lambda: 2)
    assert S.stage_threads("face_embed") == 2
    assert S.stage_threads("segment") == 1 and S.stage_threads() == 1  # not in the table: 1
    monkeypatch.setattr(S, "usable_cores", lambda: 1)
    assert S.stage_threads("face_embed") == 1  # never more threads than cores
    monkeypatch.setenv(S.THREADS_ENV, "3")
    assert S.stage_threads("face_embed") == 3 and S.stage_threads("segment") == 3  # MER_THREADS wins


def test_every_extraction_stage_has_a_measured_default():
    assert set(S.STAGE_THREADS) == {"faces", "face_embed", "resnet50", "lld", "compare", "wav2vec2", "bert"}
    assert all(n in (1, 2) for n in S.STAGE_THREADS.values())


def test_run_stage_pins_by_script_name(monkeypatch):
    seen = []
    monkeypatch.setattr(S, "pin_threads", lambda n=None, stage=None: seen.append(stage) or 1)
    monkeypatch.setattr(sys, "argv", ["stages/resnet50.py"])
    S.run_stage(lambda: None)
    S.run_stage(lambda: None, stage="bert")
    assert seen == ["resnet50", "bert"]
    with pytest.raises(SystemExit) as e:
        S.run_stage(lambda: (_ for _ in ()).throw(S.PipelineError("boom")))
    assert e.value.code == 1
