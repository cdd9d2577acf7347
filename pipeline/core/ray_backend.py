"""The Ray backend of `pipeline.core.compute` (MER_BACKEND=ray): joining or starting Ray, the actors and
tasks, and the ordered map over them. Settings and reproducibility: compute.py's docstring."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
from collections import deque
from typing import Any, Callable, Iterator

from pipeline.core.errors import PipelineError
from pipeline.core.workers import NOTED, ComputeError, Raised, prepare

_STARTED = False  # whether this process started (and so shuts down) the Ray instance


def ray_runtime(settings: Any) -> Any:
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


def ray_worker_count(ray: Any, settings: Any, n_items: int) -> int:
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


def _call(fn: Callable, args: tuple, cwd: str, threads: int) -> Any:
    prepare(cwd, threads)
    try:
        return fn(*args)
    except PipelineError as e:
        return Raised(e)


class _Worker:
    """A Ray actor: `setup()` once (lazily, so its errors come back like any item's), then
    `fn(state, item)` per item."""

    def __init__(self, setup: Callable[[], Any], cwd: str, threads: int):
        self._setup, self._cwd, self._threads = setup, cwd, threads
        self._state: Any = None
        self._ready = False

    def run(self, fn: Callable, item: Any) -> Any:
        prepare(self._cwd, self._threads)
        try:
            if not self._ready:
                self._state, self._ready = self._setup(), True
                prepare(self._cwd, self._threads)  # pins torch where building the state loaded it
            return fn(self._state, item)
        except PipelineError as e:
            return Raised(e)


def _deaths(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors for a worker that is gone (killed, out of memory, its machine lost), not for an error
    in the work itself."""
    x = ray.exceptions
    return (x.RayActorError, x.WorkerCrashedError, x.ObjectLostError, x.OutOfMemoryError, x.NodeDiedError)


def map_ray(fn, items, resources, setup, settings) -> Iterator:
    ray = ray_runtime(settings)
    options = resources if resources is not None else settings.resources()
    threads = max(1, int(options.get("num_cpus", 1)))
    n = ray_worker_count(ray, settings, len(items))
    if not options.get("num_gpus") and ray.cluster_resources().get("GPU", 0) and not NOTED.get("gpu"):
        NOTED["gpu"] = True
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
                if isinstance(value, Raised):
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
