"""Where the pipeline's parallel work runs: on a pool of worker processes of this machine (`local`, the
default) or on Ray.

Three callers share one API, `map_ordered(fn, items, ...)`: extraction (`pipeline.extract.runner`: clips
in groups, each worker building its extractor once), the training grid (`pipeline.train.families.train_all`:
each run an item), and the scoring of trained runs by the importance search and the evaluation grid
(`pipeline.evaluate.scoring`: each run an item). Results come back in the items' order, so the caller writes
exactly what a one-process loop writes, in the same order, with the same error policy.

Settings are environment variables, i.e. execution settings and not parameters: DVC never reruns a
stage because they changed (like MER_THREADS, `pipeline.core.stage`).

    MER_BACKEND           local | ray (default local)
    MER_WORKERS           how many workers. local: worker processes, default one per usable core
                          (`os.sched_getaffinity`) divided by the threads each runs (MER_THREADS, 1), and 1
                          where the work runs on a GPU; 1 = everything in the stage's own process.
                          ray: actors or concurrent tasks, default what the cluster's resources allow
    RAY_ADDRESS           Ray's own variable: the cluster to join (`auto`: the cluster this machine
                          joined with `ray start`; `ray://head:10001`: Ray Client). Unset: a private
                          local Ray instance is started (and shut down at exit)
    MER_JOBS              how many DVC stages `mer repro` runs at once (`pipeline.repro`), default 2 where a
                          stage gets two or more workers, else 1 (`stage_jobs`); they share the cores
                          through its jobserver (MER_JOBSERVER, `pipeline.core.jobserver`): a helper
                          process starts only while a core is free
    MER_CPUS_PER_WORKER   CPUs one Ray worker asks for (default 1); its torch/OpenMP threads
    MER_GPUS_PER_WORKER   GPUs one Ray worker asks for (default 0; fractions share a GPU)

The local pool (why processes, why forkserver): torch runs one thread per worker, so threads in one
process would serialise on the GIL around every small op; processes each pinned to one thread sum every
float in the same order as the one-process run, so every output is byte-identical whatever the worker
count (tests/test_compute.py, tests/test_pipeline_resume_after_kill.py). Workers come from a forkserver
(spawn where there is none) that has imported torch once: 2.4 s for two workers against 3.7 s with
spawn on the 2-core project machine, and never `fork` (a forked child of a process whose thread pools
have started can deadlock). The pool is used only where there are two or more items and two or more
workers, so a stage with one item pays nothing. Ray would work too (MER_BACKEND=ray), but pays its
daemons' start-up (10-20 s) in every stage.

Reproducibility: a worker runs torch on MER_THREADS threads (1 unless set) locally, or on as many threads
as the CPUs Ray gives it. With 1 thread per worker the outputs are byte-identical to a one-process run's
(tested); another count sums floats in another order (see `pipeline.core.stage`).

What travels to the workers: the function and the per-worker setup (cloudpickle, once per worker), each
item, and each result back to this process, which writes every output. Read-only memory-mapped arrays
(the segments) travel as their file and offset, not their bytes (`pipeline.segment.lazy`). The workers
run in this process's working directory (the same path on shared storage, for Ray).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.core.pool import LAST_POOL, map_pool
from pipeline.core.ray_backend import map_ray, ray_runtime, ray_worker_count, shutdown
from pipeline.core.stage import stage_threads, usable_cores
from pipeline.core.workers import UNSET, ComputeError

T = TypeVar("T")
R = TypeVar("R")

ENV = {
    "backend": "MER_BACKEND",
    "address": "RAY_ADDRESS",
    "workers": "MER_WORKERS",
    "jobs": "MER_JOBS",
    "cpus_per_worker": "MER_CPUS_PER_WORKER",
    "gpus_per_worker": "MER_GPUS_PER_WORKER",
}


class ComputeSettings(BaseModel):
    """The execution settings (`compute_settings()` reads them from the environment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "ray"] = "local"
    address: str | None = Field(None, description="RAY_ADDRESS: a cluster to join; None: a local instance")
    workers: int | None = Field(None, ge=1, description="None: local, one per usable core; ray, what the cluster allows")
    jobs: int | None = Field(None, ge=1, description="None: 2 where a stage gets 2 or more workers, else 1")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)

    def resources(self) -> dict[str, float]:
        """Ray resource options of one worker (`num_cpus`, `num_gpus`)."""
        return {"num_cpus": self.cpus_per_worker, "num_gpus": self.gpus_per_worker}

    def threads(self) -> int:
        """Torch/OpenMP threads of one worker: the whole CPUs it asks for, at least 1."""
        return max(1, int(self.cpus_per_worker))


def compute_settings(environ: dict[str, str] | None = None) -> ComputeSettings:
    """The settings from the environment (unset or empty variables take the defaults)."""
    env = os.environ if environ is None else environ
    raw = {field: env[var].strip() for field, var in ENV.items() if env.get(var, "").strip()}
    if "backend" in raw:
        raw["backend"] = raw["backend"].lower()
    try:
        return ComputeSettings(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        var = ENV.get(field, field)
        raise ComputeError(f"{var}={raw.get(field)!r}: {err['msg']}") from None


def worker_count(n_items: int, settings: ComputeSettings | None = None, gpu: bool = False) -> int:
    """How many workers `map_ordered` runs `n_items` items on, never more than the items. local:
    MER_WORKERS, else `local_workers(gpu)`; ray: MER_WORKERS or what the cluster's resources allow
    (joining or starting Ray)."""
    settings = settings or compute_settings()
    if n_items < 2:
        return 1
    if settings.backend == "local":
        return max(1, min(stage_workers(settings, gpu), n_items))
    return ray_worker_count(ray_runtime(settings), settings, n_items)


def local_workers(gpu: bool = False) -> int:
    """The default local worker count: one per usable core, each running MER_THREADS threads (1 unless
    set); 1 where the work runs on a GPU (the GPU is the worker; processes would only share it)."""
    if gpu:
        return 1
    return max(1, usable_cores() // stage_threads())


def stage_workers(settings: ComputeSettings | None = None, gpu: bool = False) -> int:
    """The local workers a stage's shared work runs on when it has enough items: MER_WORKERS, else
    `local_workers(gpu)` (one per usable core)."""
    settings = settings or compute_settings()
    return settings.workers if settings.workers is not None else local_workers(gpu)


def stage_jobs(settings: ComputeSettings | None = None, gpu: bool = False) -> int:
    """How many independent DVC stages `mer repro` runs at once: MER_JOBS, else 2 where a stage gets two
    or more workers (`stage_workers`), else 1 (MER_WORKERS=1: one process at a time, as `dvc repro`;
    `gpu`: the stages' work runs on this machine's GPU, which two stages would only share).
    Not one per core: each stage already spreads its work over every core, and a second stage fills
    the cores one leaves idle (its start, a last round of runs, DVC's hashing); each further stage
    would add its workers' memory (every worker holds its model) for little more speed."""
    settings = settings or compute_settings()
    if settings.jobs is not None:
        return settings.jobs
    return 2 if stage_workers(settings, gpu) >= 2 else 1


def map_ordered(
    fn: Callable[..., R],
    items: Iterable[T],
    resources: dict[str, float] | None = None,
    setup: Callable[[], Any] | None = None,
    settings: ComputeSettings | None = None,
    gpu: bool = False,
    state: Any = UNSET,
) -> Iterator[R]:
    """`fn(item)` for each item — or `fn(state, item)` with `state = setup()` made once per worker —
    yielded in the items' order.

    local: with one worker (`worker_count`; `gpu`: the work runs on a GPU), in this process, one item
    after the other (`setup()` once, or `state` where the caller has it already); with n, in this
    process and n - 1 helper processes (each runs `setup()` once and pins MER_THREADS threads; items go
    to a helper once it is ready). ray: `fn` (and `setup`) go to
    Ray's object store once; without `setup` each item is a Ray task, with it the items are shared
    over a pool of actors; `resources` (default: the settings' `num_cpus`/`num_gpus`) are what each
    task or actor asks for. At most `workers` items run at once, and at most 2 × workers results wait
    for an earlier one, so memory stays bounded.

    Errors: an item's PipelineError is raised here as itself (one line), any other error as Ray's
    task error (with the worker's traceback); both when that item's turn comes, so every earlier
    result has been yielded, as in the local loop. Closing the iterator early cancels what is left.
    Must be consumed in the process that made it; `fn`, `setup` and the items must pickle
    (cloudpickle: module functions, partials, dataclasses, numpy arrays)."""
    settings = settings or compute_settings()
    items = list(items)
    if settings.backend == "local":
        n = worker_count(len(items), settings, gpu)
        if n > 1:
            yield from map_pool(fn, items, setup, n, state)
            return
        if state is UNSET:
            state = setup() if setup is not None and items else None
        for item in items:
            yield fn(item) if setup is None else fn(state, item)
        return
    if items:
        yield from map_ray(fn, items, resources, setup, settings)


__all__ = ["LAST_POOL", "ComputeError", "ComputeSettings", "compute_settings", "local_workers", "map_ordered", "ray_runtime", "shutdown",
           "worker_count"]
