"""Where the pipeline's parallel work runs: on a pool of worker processes of this machine (`local`, the
default) or on Ray.

Three callers share one API, `map_ordered(fn, items, ...)`: extraction (`pipeline.extract.runner`: clips
in groups, each worker building its extractor once), the training grid (`pipeline.grid_runs.train_all`:
each run an item), and the scoring of trained runs by the importance search and the evaluation grid
(`pipeline.run_scoring`: each run an item). Results come back in the items' order, so the caller writes
exactly what a one-process loop writes, in the same order, with the same error policy.

Settings are environment variables, i.e. execution settings and not parameters: DVC never reruns a
stage because they changed (like MER_THREADS, `pipeline.stage`).

    MER_BACKEND           local | ray (default local)
    MER_WORKERS           how many workers. local: worker processes, default one per usable core
                          (`os.sched_getaffinity`) divided by the threads each runs (MER_THREADS, 1), and 1
                          where the work runs on a GPU; 1 = everything in the stage's own process.
                          ray: actors or concurrent tasks, default what the cluster's resources allow
    RAY_ADDRESS           Ray's own variable: the cluster to join (`auto`: the cluster this machine
                          joined with `ray start`; `ray://head:10001`: Ray Client). Unset: a private
                          local Ray instance is started (and shut down at exit)
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
(tested); another count sums floats in another order (see `pipeline.stage`).

What travels to the workers: the function and the per-worker setup (cloudpickle, once per worker), each
item, and each result back to this process, which writes every output. Read-only memory-mapped arrays
(the segments) travel as their file and offset, not their bytes (`pipeline.lazy_arrays`). The workers
run in this process's working directory (the same path on shared storage, for Ray).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import PipelineError
from pipeline.stage import _POOL_ENVS, pin_threads, stage_threads, usable_cores

T = TypeVar("T")
R = TypeVar("R")

ENV = {
    "backend": "MER_BACKEND",
    "address": "RAY_ADDRESS",
    "workers": "MER_WORKERS",
    "cpus_per_worker": "MER_CPUS_PER_WORKER",
    "gpus_per_worker": "MER_GPUS_PER_WORKER",
}


class ComputeError(PipelineError):
    """The compute settings are wrong, or Ray cannot be used; the message names the variable."""


class ComputeSettings(BaseModel):
    """The execution settings (`compute_settings()` reads them from the environment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "ray"] = "local"
    address: str | None = Field(None, description="RAY_ADDRESS: a cluster to join; None: a local instance")
    workers: int | None = Field(None, ge=1, description="None: local, one per usable core; ray, what the cluster allows")
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


# ---- Ray -----------------------------------------------------------------------------------------

_STARTED = False  # whether this process started (and so shuts down) the Ray instance
_NOTED: dict[str, bool] = {}  # notes printed once per process
_UNSET: Any = object()  # map_ordered's `state` when the caller has none


def ray_runtime(settings: ComputeSettings) -> Any:
    """The `ray` module, connected: to RAY_ADDRESS, or to a Ray already initialised in this process
    (e.g. by a test), else to a private local instance started here (shut down at exit)."""
    global _STARTED
    try:
        import ray
    except ImportError:
        raise ComputeError(
            "MER_BACKEND=ray: Ray is not installed; `pip install ray` (the `distributed` extra of "
            "mer-pipeline; `make install` installs it) or unset MER_BACKEND"
        ) from None
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports (no network at run time)
    common = dict(log_to_driver=False, logging_level=logging.WARNING)
    try:
        if settings.address:
            _check_reachable(settings.address)
            ray.init(address=settings.address, **common)
        else:
            # "local": a new instance even where `ray start` left one running on this machine
            cpus = None if settings.workers is None else settings.workers * settings.cpus_per_worker
            gpus = None if settings.workers is None or not settings.gpus_per_worker else settings.workers * settings.gpus_per_worker
            ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False, **common)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"RAY_ADDRESS={settings.address!r}" if settings.address else "a local Ray instance"
        raise ComputeError(f"MER_BACKEND=ray: cannot start or join {where}: {e}") from None
    if not _STARTED:
        atexit.register(shutdown)
    _STARTED = True
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A host:port (or ray://host:port) address where nothing listens stops here with one line: Ray
    itself would retry connecting to it for ever. `auto` and `local` are Ray's to resolve."""
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host:
        host, port = hostport, "10001" if address.startswith("ray://") else "6379"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise ComputeError(
            f"RAY_ADDRESS={address!r}: no Ray cluster answers at {host}:{port} ({e}); start its head with "
            "`ray start --head` or unset RAY_ADDRESS for a local instance"
        ) from None


def shutdown() -> None:
    """Stop the Ray instance this process started or joined through `ray_runtime` (no-op otherwise)."""
    global _STARTED
    if _STARTED:
        import ray

        ray.shutdown()
        _STARTED = False


def worker_count(n_items: int, settings: ComputeSettings | None = None, gpu: bool = False) -> int:
    """How many workers `map_ordered` runs `n_items` items on, never more than the items. local:
    MER_WORKERS, else `local_workers(gpu)`; ray: MER_WORKERS or what the cluster's resources allow
    (joining or starting Ray)."""
    settings = settings or compute_settings()
    if n_items < 2:
        return 1
    if settings.backend == "local":
        n = settings.workers if settings.workers is not None else local_workers(gpu)
        return max(1, min(n, n_items))
    return _worker_count(ray_runtime(settings), settings, n_items)


def local_workers(gpu: bool = False) -> int:
    """The default local worker count: one per usable core, each running MER_THREADS threads (1 unless
    set); 1 where the work runs on a GPU (the GPU is the worker; processes would only share it)."""
    if gpu:
        return 1
    return max(1, usable_cores() // stage_threads())


def _worker_count(ray: Any, settings: ComputeSettings, n_items: int) -> int:
    if settings.workers is not None:
        n = settings.workers
    else:
        total = ray.cluster_resources()
        n = int(total.get("CPU", 1) // settings.cpus_per_worker)
        if settings.gpus_per_worker:
            n = min(n, int(total.get("GPU", 0) // settings.gpus_per_worker))
        if n < 1:
            raise ComputeError(
                f"MER_CPUS_PER_WORKER={settings.cpus_per_worker:g}, MER_GPUS_PER_WORKER={settings.gpus_per_worker:g}: "
                f"more than the Ray cluster has ({dict(total)})"
            )
    return max(1, min(n, n_items))


# ---- the worker side -----------------------------------------------------------------------------


class _Raised:
    """A PipelineError raised by a worker, carried back as a value so the caller re-raises it as the
    same one-line error (a Ray task error would wrap it in a remote traceback)."""

    def __init__(self, error: PipelineError):
        self.error = error


def _prepare(cwd: str, threads: int) -> None:
    """Run like a local stage: the caller's working directory (paths in items are relative to it),
    offline Hugging Face, threads pinned (`pipeline.stage.pin_threads`) — torch's pool where torch is
    loaded already (by the work's own imports), else only the OpenMP/BLAS variables, which torch reads
    when it loads: a worker whose work needs no torch (openSMILE) does not pay for importing it."""
    if os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if "torch" in sys.modules:
        pin_threads(threads)
    else:
        for name in _POOL_ENVS:
            os.environ[name] = str(threads)


def _call(fn: Callable, args: tuple, cwd: str, threads: int) -> Any:
    _prepare(cwd, threads)
    try:
        return fn(*args)
    except PipelineError as e:
        return _Raised(e)


class _Worker:
    """A Ray actor: `setup()` once (lazily, so its errors come back like any item's), then
    `fn(state, item)` per item."""

    def __init__(self, setup: Callable[[], Any], cwd: str, threads: int):
        self._setup, self._cwd, self._threads = setup, cwd, threads
        self._state: Any = None
        self._ready = False

    def run(self, fn: Callable, item: Any) -> Any:
        _prepare(self._cwd, self._threads)
        try:
            if not self._ready:
                self._state, self._ready = self._setup(), True
                _prepare(self._cwd, self._threads)  # pins torch where building the state loaded it
            return fn(self._state, item)
        except PipelineError as e:
            return _Raised(e)


def _deaths(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors for a worker that is gone (killed, out of memory, its machine lost), not for an error
    in the work itself."""
    x = ray.exceptions
    return (x.RayActorError, x.WorkerCrashedError, x.ObjectLostError, x.OutOfMemoryError, x.NodeDiedError)


# ---- the caller side -----------------------------------------------------------------------------


def map_ordered(
    fn: Callable[..., R],
    items: Iterable[T],
    resources: dict[str, float] | None = None,
    setup: Callable[[], Any] | None = None,
    settings: ComputeSettings | None = None,
    gpu: bool = False,
    state: Any = _UNSET,
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
            yield from _map_pool(fn, items, setup, n, state)
            return
        if state is _UNSET:
            state = setup() if setup is not None and items else None
        for item in items:
            yield fn(item) if setup is None else fn(state, item)
        return
    if items:
        yield from _map_ray(fn, items, resources, setup, settings)


# ---- the local pool ------------------------------------------------------------------------------
# n workers = this process + (n - 1) helper processes. This process never waits idle while the helpers
# start (2-3 s: a forkserver fork, the work unpickled, the setup built): it runs items itself, and an
# item goes to the helpers only once one of them says it is ready. A stage with little work is done
# before any helper is up, and costs what the one-process loop costs.

_POOL: dict[str, Any] = {}  # a helper's function, setup and state
#: the latest local pool in this process: its workers and the items its helpers ran (tests, notes)
LAST_POOL: dict[str, int] = {"workers": 0, "on_helpers": 0}


def _pool_init(blob: bytes, cwd: str, threads: int, environ: dict[str, str]) -> None:
    """A helper's start: the caller's environment (the forkserver kept the one it started with), its
    working directory and thread count, then the function and setup."""
    import cloudpickle

    os.environ.clear()
    os.environ.update(environ)
    _prepare(cwd, threads)
    fn, setup = cloudpickle.loads(blob)
    _POOL.update(fn=fn, setup=setup, ready=setup is None, state=None, cwd=cwd, threads=threads)
    _prepare(cwd, threads)  # pins torch where unpickling the work loaded it


def _pool_ready() -> int | _Raised:
    """Build the helper's state (once): its pid when it is ready to take items, or the setup's error."""
    try:
        if not _POOL["ready"]:
            _POOL["state"], _POOL["ready"] = _POOL["setup"](), True
            _prepare(_POOL["cwd"], _POOL["threads"])  # pins torch where building the state loaded it
        return os.getpid()
    except PipelineError as e:
        return _Raised(e)


def _pool_run(item_blob: bytes) -> Any:
    import cloudpickle

    item = cloudpickle.loads(item_blob)
    ready = _pool_ready()
    if isinstance(ready, _Raised):
        return ready
    try:
        return _POOL["fn"](item) if _POOL["setup"] is None else _POOL["fn"](_POOL["state"], item)
    except PipelineError as e:
        return _Raised(e)


def _pool_context(fn: Callable) -> Any:
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # the server imports torch and the work's own module once, so each helper starts with them (no
    # effect once this process's server runs)
    module = getattr(getattr(fn, "func", fn), "__module__", None)
    ctx.set_forkserver_preload([m for m in ("torch", module) if m and m.startswith(("torch", "pipeline.")) and m in sys.modules])
    return ctx


def _map_pool(fn: Callable, items: list, setup: Callable | None, n: int, state: Any = _UNSET) -> Iterator:
    """`map_ordered` on this process and n - 1 helper processes. Items are claimed in order, one at a
    time, by this process (between the results it yields) and by a feeder thread that gives each ready
    helper one item at a time, so nobody holds an item another could start now. At most 2 × n + 1 items
    are claimed and not yet yielded, so memory stays bounded. `state`: this process's own state for the
    items it runs (default: `setup()`, built at its first item)."""
    import threading

    import cloudpickle
    from concurrent.futures import Future, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        blob = cloudpickle.dumps((fn, setup))
    except Exception as e:  # e.g. a model that only serialises through its state_dict
        raise ComputeError(f"MER_WORKERS={n}: cannot send the work to worker processes ({type(e).__name__}: {e}); "
                           "MER_WORKERS=1 runs it in this process") from None
    pool = ProcessPoolExecutor(n - 1, mp_context=_pool_context(fn), initializer=_pool_init,
                               initargs=(blob, os.getcwd(), stage_threads(), dict(os.environ)))
    LAST_POOL.update(workers=n, on_helpers=0)
    if not _NOTED.get("pool"):
        _NOTED["pool"] = True
        print(f"workers: this process and {n - 1} helper process{'es' * (n > 2)}, {stage_threads()} thread each "
              "(MER_WORKERS sets how many; MER_WORKERS=1: this process alone)", file=sys.stderr)
    cond = threading.Condition()
    probes = [pool.submit(_pool_ready) for _ in range(n - 1)]
    for f in probes:
        f.add_done_callback(lambda _: _notify(cond))
    results: dict[int, Future | tuple[bool, Any]] = {}  # claimed item → its future, or (ok, value) run here
    claim = {"next": 0, "out": 0, "in_flight": 0, "stop": False}
    window = 2 * n + 1
    mine = {"state": state}  # _UNSET: setup() at this process's first item

    def claimable() -> bool:
        return claim["next"] < len(items) and claim["next"] - claim["out"] < window

    def ready_helpers() -> int:
        return len({f.result() for f in probes if f.done() and not f.cancelled() and not f.exception()
                    and isinstance(f.result(), int)})

    def finished(i: int, f: Future) -> None:
        with cond:
            results[i] = f
            claim["in_flight"] -= 1
            cond.notify_all()

    def feed() -> None:  # the helpers' share: one item at a time to each ready helper
        while True:
            with cond:
                while not claim["stop"] and not (claimable() and claim["in_flight"] < ready_helpers()):
                    if claim["next"] >= len(items):
                        return
                    cond.wait(0.05)
                if claim["stop"]:
                    return
                i = claim["next"]
                claim["next"] += 1
                claim["in_flight"] += 1
                LAST_POOL["on_helpers"] += 1
            try:
                future = pool.submit(_pool_run, cloudpickle.dumps(items[i]))
            except Exception as e:  # a broken pool refuses new work
                future = Future()
                future.set_exception(e)
            future.add_done_callback(lambda f, i=i: finished(i, f))

    def run_here(i: int) -> tuple[bool, Any]:
        try:
            if mine["state"] is _UNSET:
                mine["state"] = setup() if setup is not None else None
            return True, (fn(items[i]) if setup is None else fn(mine["state"], items[i]))
        except Exception as e:  # raised when its turn comes, as the one-process loop would
            return False, e

    feeder = threading.Thread(target=feed, name="mer-pool-feeder", daemon=True)
    feeder.start()
    try:
        while claim["out"] < len(items):
            with cond:
                while claim["out"] not in results and not claimable():
                    cond.wait()
                result = results.pop(claim["out"], None)
                if result is None:  # nothing to yield yet: this process takes the next item itself
                    i = claim["next"]
                    claim["next"] += 1
            if result is None:
                done = run_here(i)
                with cond:
                    results[i] = done
                    cond.notify_all()
                continue
            if isinstance(result, Future):
                try:
                    result = (True, result.result())
                except BrokenProcessPool as e:
                    died = ComputeError(f"MER_WORKERS={n}: a worker process died (killed, or out of memory?): {e}; "
                                        "fewer workers (MER_WORKERS) need less memory")
                    died.__suppress_context__ = True
                    result = (False, died)
                except Exception as e:
                    result = (False, e)
            with cond:
                claim["out"] += 1
                cond.notify_all()
            ok, value = result
            if not ok:
                raise value
            if isinstance(value, _Raised):
                raise value.error from None
            yield value
    finally:
        with cond:
            claim["stop"] = True
            cond.notify_all()
        feeder.join(timeout=10)
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        # helpers idle or still starting (a short stage), or running items an error or an early close
        # left without a use: stopped, not waited for
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)


def _notify(cond: Any) -> None:
    with cond:
        cond.notify_all()


def _map_ray(fn, items, resources, setup, settings) -> Iterator:
    ray = ray_runtime(settings)
    options = resources if resources is not None else settings.resources()
    threads = max(1, int(options.get("num_cpus", 1)))
    n = _worker_count(ray, settings, len(items))
    if not options.get("num_gpus") and ray.cluster_resources().get("GPU", 0) and not _NOTED.get("gpu"):
        _NOTED["gpu"] = True
        print(f"note: the Ray cluster has {ray.cluster_resources()['GPU']:g} GPUs but MER_GPUS_PER_WORKER is 0: "
              "the workers run on CPUs (Ray hides the GPUs from them)", file=sys.stderr)
    cwd = os.getcwd()
    try:
        fn_ref = ray.put(fn)
        setup_ref = ray.put(setup) if setup is not None else None
    except Exception as e:  # e.g. a model that only serialises through its state_dict
        raise ComputeError(f"MER_BACKEND=ray: cannot send the work to Ray workers: {type(e).__name__}: {e}") from None

    if setup is None:
        task = ray.remote(_call).options(**options)
        workers: list[Any] = list(range(n))  # n slots
        submit = lambda w, item: task.remote(fn_ref, (item,), cwd, threads)  # noqa: E731
    else:
        actor = ray.remote(_Worker).options(**options)
        workers = [actor.remote(setup_ref, cwd, threads) for _ in range(n)]
        submit = lambda w, item: w.run.remote(fn_ref, item)  # noqa: E731

    # an actor takes its next group while this process reads its last result: two calls queued per actor
    free = deque(workers if setup is None else workers * 2)
    pending: dict[Any, tuple[int, Any]] = {}  # ref → (item index, worker)
    done: dict[int, tuple[bool, Any]] = {}  # item index → (ok, result or exception)
    next_out = submitted = 0
    window = 2 * n
    try:
        while next_out < len(items):
            while free and submitted < len(items) and submitted - next_out < window:
                w = free.popleft()
                pending[submit(w, items[submitted])] = (submitted, w)
                submitted += 1
            if next_out in done:
                ok, value = done.pop(next_out)
                next_out += 1
                if not ok:
                    raise value
                if isinstance(value, _Raised):
                    raise value.error from None
                yield value
                continue
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, w = pending.pop(ref)
                free.append(w)
                try:
                    done[i] = (True, ray.get(ref))
                except _deaths(ray) as e:
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    died = ComputeError(f"MER_BACKEND=ray: a Ray worker died or was lost (out of memory? see `ray status`): {first}")
                    died.__suppress_context__ = True
                    done[i] = (False, died)
                except Exception as e:  # raised when its turn comes
                    done[i] = (False, e)
    finally:
        for ref in pending:
            try:
                ray.cancel(ref)
            except Exception:  # already finished, or a task Ray cannot cancel: its result is dropped
                pass
        if setup is not None:
            for w in workers:
                ray.kill(w)


__all__ = ["ComputeError", "ComputeSettings", "compute_settings", "local_workers", "map_ordered", "ray_runtime", "shutdown", "worker_count"]
