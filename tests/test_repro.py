"""`mer repro` (pipeline/repro.py): the scheduler's rules with fake jobs, and real DVC running two
stages of a small repository at once, with dvc.lock and `dvc status` as `dvc repro` leaves them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.compute import ComputeSettings, stage_jobs
from pipeline.core.errors import PipelineError
from pipeline.repro import (
    BackgroundPlan,
    StagePlan,
    dvc_repro_job,
    plan_stages,
    run_plan,
)


class FakeJob:
    """A job that ends after `polls` polls with `code`; the log records the order of events."""

    def __init__(self, stage, events, polls=2, code=0):
        self.stage, self.events, self.left, self.code = stage, events, polls, code
        events.append(("start", stage))

    def poll(self):
        self.left -= 1
        if self.left > 0:
            return None
        if ("end", self.stage) not in self.events:
            self.events.append(("end", self.stage))
        return self.code


def _run(plan, jobs, tmp_path, polls=None, codes=None):
    events, lines, shown = [], [], []
    polls, codes = polls or {}, codes or {}

    def start(stage, log):
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"output of {stage}\n")
        return FakeJob(stage, events, polls.get(stage, 2), codes.get(stage, 0))

    held = []  # what the jobserver is told after each change: how many stages run
    failed = run_plan(plan, jobs, start, tmp_path / "logs", lines.append, shown.append, poll_s=0, running_now=held.append)
    assert held and max(held) == _max_running(events) and all(0 <= k <= jobs for k in held)
    return failed, events, lines, shown


def _max_running(events):
    running = peak = 0
    for kind, _ in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    return peak


# a → (b, c) → d, and e after a on a longer chain e → f
DIAMOND = StagePlan(
    order=["a", "b", "c", "e", "d", "f"],
    upstream={"a": frozenset(), "b": frozenset("a"), "c": frozenset("a"), "e": frozenset("a"),
              "d": frozenset("bc"), "f": frozenset("e")},
)


def test_chain_counts_the_longest_path_to_the_end():
    assert DIAMOND.chain() == {"a": 3, "b": 2, "c": 2, "e": 2, "d": 1, "f": 1}


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_stages_start_after_their_upstream_and_never_more_than_jobs(tmp_path, jobs):
    failed, events, _, shown = _run(DIAMOND, jobs, tmp_path)
    assert failed == []
    assert sorted(s for k, s in events if k == "start") == sorted(DIAMOND.order)
    when = {e: i for i, e in enumerate(events)}
    for stage, ups in DIAMOND.upstream.items():
        for up in ups:
            assert when[("end", up)] < when[("start", stage)], (up, stage)
    assert _max_running(events) == jobs  # 3 ready after a: b, c and e
    assert sorted(shown) == sorted(f"output of {s}" for s in DIAMOND.order)  # each stage's output, once


def test_the_longer_chain_starts_first(tmp_path):
    plan = StagePlan(order=["short", "long", "long2"],
                     upstream={"short": frozenset(), "long": frozenset(), "long2": frozenset({"long"})})
    _, events, _, _ = _run(plan, 1, tmp_path)
    assert [s for k, s in events if k == "start"] == ["long", "short", "long2"]  # then dvc.yaml's order


def test_a_failure_starts_nothing_new_and_lets_the_running_stage_finish(tmp_path):
    # b fails fast while c runs on; d (after both) and e's chain must not start once b failed
    plan = StagePlan(order=["a", "b", "c", "d"],
                     upstream={"a": frozenset(), "b": frozenset("a"), "c": frozenset("a"), "d": frozenset("bc")})
    failed, events, lines, _ = _run(plan, 2, tmp_path, polls={"b": 1, "c": 5}, codes={"b": 3})
    assert failed == ["b"]
    assert ("end", "c") in events and ("start", "d") not in events
    assert any("FAILED b (exit 3)" in line and "b.log" in line for line in lines)
    assert lines[-1] == "not run, after the failure: d"


def test_jobs_follow_mer_jobs_then_the_workers():
    assert stage_jobs(ComputeSettings(jobs=3)) == 3
    assert stage_jobs(ComputeSettings(workers=1)) == 1  # MER_WORKERS=1: one process at a time
    assert stage_jobs(ComputeSettings(workers=4)) == 2
    assert stage_jobs(ComputeSettings(workers=4), gpu=True) == 2  # MER_WORKERS named: the user's count
    assert stage_jobs(ComputeSettings(), gpu=True) == 1  # the GPU is the worker: one stage on it


# ----------------------------------------------------------------------------------------------
# Real DVC: two independent stages at once
# ----------------------------------------------------------------------------------------------

SLOW = "python -c \"import time,pathlib,sys; p=pathlib.Path(sys.argv[1]); t=time.time(); time.sleep(3); " \
       "p.write_text(f'{t} {time.time()}')\""
DVC_YAML = f"""stages:
  a:
    cmd: python -c "import pathlib; pathlib.Path('a.txt').write_text('a')"
    outs: [a.txt]
  b:
    cmd: {SLOW} b.txt
    deps: [a.txt]
    outs: [b.txt]
  c:
    cmd: {SLOW} c.txt
    deps: [a.txt]
    outs: [c.txt]
  d:
    cmd: python -c "import pathlib; pathlib.Path('d.txt').write_text(open('b.txt').read() + open('c.txt').read())"
    deps: [b.txt, c.txt]
    outs: [d.txt]
"""


def _dvc(root, *args):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True, check=True)


def _dvc_repo(tmp_path, dvc_yaml):
    root = tmp_path / "repo"
    root.mkdir()
    _dvc(root, "init", "--no-scm", "-q")
    _dvc(root, "config", "core.analytics", "false")
    (root / "dvc.yaml").write_text(dvc_yaml)
    return root


@pytest.mark.integration
def test_dvc_runs_two_stages_at_once_and_leaves_the_lock_as_dvc_repro_does(tmp_path):
    root = _dvc_repo(tmp_path, DVC_YAML)
    plan = plan_stages(root)
    assert plan.order == ["a", "b", "c", "d"]
    assert plan.upstream == {"a": frozenset(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}}
    background = BackgroundPlan(root)  # what `mer repro` reads while it checks params.yaml
    assert background.result() == plan and background.proc.returncode == 0
    background.cancel()  # after the result: nothing left to stop
    lines, shown = [], []
    failed = run_plan(plan, 2, lambda s, log: dvc_repro_job(s, log, root), root / "logs", lines.append, shown.append)
    assert failed == [], "\n".join(shown)
    (b0, b1), (c0, c1) = ([float(x) for x in (root / f).read_text().split()] for f in ("b.txt", "c.txt"))
    assert b0 < c1 and c0 < b1, "b and c ran one after the other"  # their 3 s sleeps overlapped
    assert any("Running stage 'b'" in text for text in shown)
    assert (root / "logs" / "c.log").read_text().count("Running stage 'c'") == 1

    # DVC's own view afterwards: every stage locked, nothing out of date, and a new plan is empty
    assert _dvc(root, "status", "--json").stdout.strip() == "{}"
    assert plan_stages(root).order == []
    # an edit of c's command: c and what follows
    (root / "dvc.yaml").write_text(DVC_YAML.replace(f"{SLOW} c.txt", f"{SLOW} c.txt && echo edited"))
    assert plan_stages(root).order == ["c", "d"]


@pytest.mark.integration
def test_the_background_plan_reports_dvcs_error_as_the_plan_does_and_can_be_cancelled(tmp_path):
    root = _dvc_repo(tmp_path, "stages:\n  a:\n    cmd: [unclosed\n")
    with pytest.raises(PipelineError) as direct:
        plan_stages(root)
    with pytest.raises(PipelineError) as background:
        BackgroundPlan(root).result()
    assert str(background.value) == str(direct.value) and str(direct.value).startswith(f"{root / 'dvc.yaml'}: DVC: ")
    (root / "dvc.yaml").write_text(DVC_YAML)
    cancelled = BackgroundPlan(root)
    cancelled.cancel()
    assert cancelled.proc.returncode is not None  # stopped and reaped
