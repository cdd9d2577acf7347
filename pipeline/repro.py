"""`mer repro`: dvc.yaml's out-of-date stages, independent ones side by side.

`dvc repro` runs one stage at a time (DVC has no parallel repro: iterative/dvc#755), so a stage's
serial parts — its process start, a last round of runs that leaves workers idle, DVC's hashing of its
outputs — leave cores idle even though every stage spreads its own work over every core
(`pipeline.core.compute`). DVC does allow several `dvc repro` processes in one repository: it
releases its repository lock while a stage's command runs and guards each stage's deps and outs with
read/write locks (`dvc/stage/decorators.py`: `unlocked_repo`, `rwlocked`). This module builds on
exactly that and nothing more:

1. `plan_stages` asks DVC (its Python API, once) for the stage graph and which stages are out of date
   (`Repo.status`); those and everything downstream of them are to run. `mer repro` runs it in a process
   of its own (`BackgroundPlan`) while it checks params.yaml, so the two share the cores.
2. `run_plan` starts each as `dvc --wait-for-lock repro --single-item <stage>` once every upstream stage
   it waits for has finished, `jobs` at a time, the stage on the longest chain of stages still to run
   first. DVC itself decides in each process whether the stage really changed (an upstream output
   that came out byte-identical leaves it skipped) and writes dvc.lock under its lock.

What it changes is only when a stage runs: every stage still runs through DVC, in its own process,
on the same inputs, so every output is the same as `dvc repro`'s (and each is byte-identical whatever
the workers: tests/test_pipeline_dvc.py runs a clone this way on 2 jobs against a lab run serially).

Output: each stage's output goes to `logs/repro/<stage>.log` and is printed whole when the stage ends
(as `make --output-sync` does), so two stages' progress bars never interleave; a line says when each
stage starts. A failed stage stops the launching of new ones; those running finish; the exit status
is 1. With one job it is plain `dvc repro`, live output and all (the cli decides).

Hand-written: DVC has no scheduler to reuse, and the one here is a ready-set loop over DVC's own graph.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from pipeline.core.errors import PipelineError

LOG_DIR = Path("logs") / "repro"


@dataclass(frozen=True)
class StagePlan:
    """The stages to run (`order`: an order DVC could run them in, dvc.yaml's order among
    independent ones) and, for each, the stages of the plan it waits for."""

    order: list[str]
    upstream: dict[str, frozenset[str]]

    def chain(self) -> dict[str, int]:
        """Each stage's longest chain of stages still to run from it, itself included: the stage on the
        longer chain starts first, so the critical path never waits behind a side branch."""
        downstream: dict[str, list[str]] = {s: [] for s in self.order}
        for stage, ups in self.upstream.items():
            for up in ups:
                downstream[up].append(stage)
        length: dict[str, int] = {}
        for stage in reversed(self.order):
            length[stage] = 1 + max((length[d] for d in downstream[stage]), default=0)
        return length


def plan_stages(root: Path) -> StagePlan:
    """The out-of-date stages of the repository at `root` and everything downstream of them (DVC's
    view: `dvc status`). PipelineError when DVC cannot read the project or its lock is held."""
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:  # from the root, as `dvc` runs: DVC names a stage relative to the working directory
        with contextlib.chdir(root), Repo(".") as repo:
            graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
            stages = [s for s in graph if s.cmd]  # .dvc files and imports have no command: data, not stages
            position = {s: i for i, s in enumerate(stages)}
            changed = set(repo.status())
            names = {s: s.addressing for s in stages}
    except DvcException as e:
        raise PipelineError(f"{root / 'dvc.yaml'}: DVC: {e}") from None
    run = {s for s in stages if s.addressing in changed}
    for s in list(run):
        run |= {d for d in nx.ancestors(graph, s) if d.cmd}
    sub = graph.subgraph(run).reverse(copy=True)  # edges now run upstream → downstream
    order = list(nx.lexicographical_topological_sort(sub, key=lambda s: position[s]))
    return StagePlan(
        order=[names[s] for s in order],
        upstream={names[s]: frozenset(names[d] for d in graph.successors(s) if d in run) for s in order},
    )


class BackgroundPlan:
    """`plan_stages` in a process of its own, started before `mer repro` checks params.yaml: DVC's import
    and its reading of dvc.yaml and dvc.lock (1.5 s, 3 s in a fresh clone) run on another core meanwhile
    instead of before the first stage. `result()` waits for it; `cancel()` stops it (nothing to plan:
    params.yaml is wrong, or the stages run one at a time as plain `dvc repro`)."""

    def __init__(self, root: Path):
        self.root = root
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.repro", str(root)], cwd=root,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> StagePlan:
        out, _ = self.proc.communicate()  # once: cancel() afterwards finds it ended
        try:  # DVC may print warnings first: the answer is the last line
            data = json.loads(out.strip().splitlines()[-1])
            if self.proc.returncode == PLAN_ERROR:  # the project's own problem, in plan_stages' words
                raise PipelineError(data["error"])
            return StagePlan(data["order"], {s: frozenset(up) for s, up in data["upstream"].items()})
        except (IndexError, ValueError, KeyError, TypeError):  # the process itself failed: plan here instead
            return plan_stages(self.root)

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


PLAN_ERROR = 3  # `python -m pipeline.repro`'s exit status when plan_stages raised PipelineError


def _plan_main(argv: list[str]) -> int:
    """`python -m pipeline.repro ROOT`: the plan, or plan_stages' error, as the last line of stdout (JSON)."""
    try:
        plan = plan_stages(Path(argv[0]))
    except PipelineError as e:
        print(json.dumps({"error": str(e)}))
        return PLAN_ERROR
    print(json.dumps({"order": plan.order, "upstream": {s: sorted(up) for s, up in plan.upstream.items()}}))
    return 0


class Job(Protocol):
    def poll(self) -> int | None: ...


@dataclass
class StageRun:
    """A stage's `dvc repro` process, its log and when it started."""

    stage: str
    job: Job
    log: Path
    started: float = field(default_factory=time.perf_counter)


def dvc_repro_job(stage: str, log: Path, root: Path, env: dict[str, str] | None = None) -> Job:
    """`dvc repro` of this one stage (`--single-item`: the plan ran its upstream already) in a process of
    its own, its output to `log`; it waits for DVC's repository lock while another stage's process holds
    it (DVC holds it only between stage commands). `env`: added to its environment (the jobserver's)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage],
                                cwd=root, env=dict(stage_env(), **(env or {})), stdout=out, stderr=subprocess.STDOUT)


def stage_env() -> dict[str, str]:
    """This environment, with the directory of the interpreter running this first on PATH: dvc.yaml's
    commands call `python`, which must be this one, as under an activated venv."""
    return dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def run_plan(
    plan: StagePlan,
    jobs: int,
    start: Callable[[str, Path], Job],
    log_dir: Path,
    say: Callable[[str], None],
    show: Callable[[str], None],
    poll_s: float = 0.1,
    running_now: Callable[[int], None] = lambda n: None,
) -> list[str]:
    """Run the plan's stages, at most `jobs` at once, a stage only after every upstream stage of the plan
    succeeded; `start(stage, log)` launches one, `say` prints a line of this runner's, `show` a finished
    stage's output, `running_now(n)` hears how many stages run after each change (the jobserver's
    `hold`). Returns the stages that failed (empty: all ran). After a failure no new stage starts;
    the running ones finish."""
    chain = plan.chain()
    rank = {s: i for i, s in enumerate(plan.order)}
    waiting, running, done, failed = list(plan.order), {}, set(), []
    while waiting or running:
        ready = sorted((s for s in waiting if plan.upstream[s] <= done), key=lambda s: (-chain[s], rank[s]))
        while ready and len(running) < jobs and not failed:
            stage = ready.pop(0)
            waiting.remove(stage)
            log = log_dir / f"{stage}.log"
            say(f"start {stage}")
            running[stage] = StageRun(stage, start(stage, log), log)
        running_now(len(running))  # a stage that ended hands its core to the one started in its place
        if failed and not running:
            break
        time.sleep(poll_s)
        for stage, run in list(running.items()):
            code = run.job.poll()
            if code is None:
                continue
            del running[stage]
            seconds = time.perf_counter() - run.started
            show(_read_log(run.log))
            if code == 0:
                done.add(stage)
                say(f"done  {stage} in {seconds:.1f} s")
            else:
                failed.append(stage)
                say(f"FAILED {stage} (exit {code}) after {seconds:.1f} s; its output: {run.log}")
    if failed and waiting:
        say(f"not run, after the failure: {', '.join(waiting)}")
    return failed


def _read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace").rstrip("\n")
    except OSError as e:
        return f"(its log {path} cannot be read: {e})"


if __name__ == "__main__":
    sys.exit(_plan_main(sys.argv[1:]))
