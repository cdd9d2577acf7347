"""`mer repro`: `dvc repro` with independent stages running side by side (pipeline/repro.py says how)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.markup import escape

from pipeline.cli.common import console, fail
from pipeline.core import jobserver
from pipeline.core.compute import (
    ComputeError,
    compute_settings,
    local_workers,
    stage_jobs,
    stage_workers,
)
from pipeline.core.errors import PipelineError
from pipeline.core.paths import PARAMS_FILE
from pipeline.params_checks import check_params
from pipeline.repro import (
    LOG_DIR,
    BackgroundPlan,
    dvc_repro_job,
    plan_stages,
    run_plan,
    stage_env,
)


def repro(
    jobs: int = typer.Option(None, "--jobs", "-j", min=1, help="stages at once (default MER_JOBS, else 2 on a "
                             "machine with 2 or more cores, 1 with MER_WORKERS=1)"),
    dry: bool = typer.Option(False, "--dry", help="list the stages that would run and what each waits for"),
) -> None:
    """Run every out-of-date stage of dvc.yaml, as `dvc repro` does, with independent stages side by
    side (each still through DVC; same outputs). Each stage's output is printed when it ends and kept in
    logs/repro/<stage>.log. With one job: plain `dvc repro`."""
    root = Path.cwd()
    try:
        settings = compute_settings()
    except ComputeError as e:
        settings, bad_env = None, e
    # where stages may run side by side, DVC reads the plan in a process of its own while params.yaml is
    # checked here (a GPU found below may still make it one stage at a time: then the plan goes unused)
    planner = BackgroundPlan(root) if dry or (settings and (jobs or _jobs_without_gpu(settings)) >= 2) else None
    try:
        problems = check_params(PARAMS_FILE)
        if problems:
            fail("\n".join(problems))
        if settings is None:
            fail(str(bad_env))
        try:
            # torch is imported to look for a GPU only where neither MER_JOBS nor MER_WORKERS decides it
            jobs = jobs or stage_jobs(settings, gpu=settings.jobs is None and settings.workers is None and _cuda())
            workers = stage_workers(settings)
        except ComputeError as e:
            fail(str(e))
        if jobs == 1 and not dry:  # plain `dvc repro` (the planner is stopped on the way out)
            raise typer.Exit(subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, env=stage_env()).returncode)
        try:
            plan = planner.result() if planner else plan_stages(root)
        except PipelineError as e:
            fail(str(e))
    finally:
        if planner:
            planner.cancel()
    if not plan.order:
        console.print("Data and pipelines are up to date.")
        return
    if dry:
        for stage in plan.order:
            after = ", ".join(sorted(plan.upstream[stage]))
            console.print(f"{escape(stage)}" + (f"  [dim](after {escape(after)})[/dim]" if after else ""), soft_wrap=True)
        return
    t0 = time.perf_counter()

    def say(line: str) -> None:
        console.print(f"[bold]mer repro[/bold] {time.perf_counter() - t0:6.1f} s  {escape(line)}", soft_wrap=True)

    def show(text: str) -> None:
        if text:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    say(f"{len(plan.order)} stages to run, {jobs} at a time (MER_JOBS), each on up to {workers} worker"
        f"{'s' * (workers != 1)} (MER_WORKERS); each stage's output is printed when it ends and kept in {LOG_DIR}/")
    # the stages share the cores: a stage's helper processes start only while a core is free
    cores = jobserver.start(local_workers()) if workers >= 2 else None
    env = cores.env() if cores else {}
    try:
        failed = run_plan(plan, jobs, lambda stage, log: dvc_repro_job(stage, log, root, env), root / LOG_DIR, say, show,
                          running_now=cores.hold if cores else lambda n: None)
    finally:
        if cores:
            cores.close()
    if failed:
        raise typer.Exit(1)
    say(f"all {len(plan.order)} stages done in {time.perf_counter() - t0:.0f} s")


def _jobs_without_gpu(settings) -> int:
    """The stages at once if no GPU is found (what decides whether a plan is worth starting early)."""
    try:
        return stage_jobs(settings)
    except ComputeError:
        return 1  # reported where the jobs are decided


def _cuda() -> bool:
    """Whether the stages' work will run on a GPU here (their `device: auto` picks CUDA when torch sees one)."""
    import torch

    return torch.cuda.is_available()
