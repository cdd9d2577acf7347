"""The local backend's pool (`pipeline.core.compute`, MER_BACKEND=local with MER_WORKERS > 1): this process
and n - 1 helper processes share a stage's items. Why processes and a forkserver: compute.py's docstring."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pipeline.core.errors import PipelineError
from pipeline.core.stage import stage_threads
from pipeline.core.workers import NOTED, UNSET, ComputeError, Raised, prepare

# n workers = this process + up to (n - 1) helper processes. This process never waits idle while a helper
# starts (2-4 s: a forkserver fork, the work unpickled, the setup built): its feeder thread starts them
# while this process runs items itself, and an item goes to a helper only once it says it is ready. A
# stage with little work is done before any helper is up, and costs what the one-process loop costs.
# Under `mer repro` a helper starts only while a core is free (`pipeline.core.jobserver`): two stages
# side by side on two cores run two processes, not four, and pay no helper's start.

_POOL: dict[str, Any] = {}  # a helper's function, setup and state
#: the latest local pool in this process: its workers, the helpers it started and the items they ran (tests, notes)
LAST_POOL: dict[str, int] = {"workers": 0, "helpers": 0, "on_helpers": 0}


def _pool_init(blob: bytes, cwd: str, threads: int, environ: dict[str, str]) -> None:
    """A helper's start: the caller's environment (the forkserver kept the one it started with), its
    working directory and thread count, then the function and setup."""
    import cloudpickle

    os.environ.clear()
    os.environ.update(environ)
    prepare(cwd, threads)
    fn, setup = cloudpickle.loads(blob)
    _POOL.update(fn=fn, setup=setup, ready=setup is None, state=None, cwd=cwd, threads=threads)
    prepare(cwd, threads)  # pins torch where unpickling the work loaded it


def _pool_ready() -> int | Raised:
    """Build the helper's state (once): its pid when it is ready to take items, or the setup's error."""
    try:
        if not _POOL["ready"]:
            _POOL["state"], _POOL["ready"] = _POOL["setup"](), True
            prepare(_POOL["cwd"], _POOL["threads"])  # pins torch where building the state loaded it
        return os.getpid()
    except PipelineError as e:
        return Raised(e)


def _pool_run(item_blob: bytes) -> Any:
    import cloudpickle

    item = cloudpickle.loads(item_blob)
    ready = _pool_ready()
    if isinstance(ready, Raised):
        return ready
    try:
        return _POOL["fn"](item) if _POOL["setup"] is None else _POOL["fn"](_POOL["state"], item)
    except PipelineError as e:
        return Raised(e)


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


@dataclass
class _Helper:
    """One helper process (a one-process executor, so each is started, fed and retired on its own), the
    jobserver token it holds, if any, and whether an item of ours runs on it."""

    executor: Any
    probe: Any  # its `_pool_ready` future: the pid once the helper is ready, or the setup's error
    token: bool
    busy: bool = False
    retired: bool = False

    def ready(self) -> bool:
        f = self.probe
        return f.done() and not f.cancelled() and f.exception() is None and isinstance(f.result(), int)

    def processes(self) -> list:
        return list((getattr(self.executor, "_processes", None) or {}).values())


def map_pool(fn: Callable, items: list, setup: Callable | None, n: int, state: Any = UNSET) -> Iterator:
    """`map_ordered` on this process and up to n - 1 helper processes. Items are claimed in order, one at a
    time, by this process (between the results it yields) and by a feeder thread that starts the helpers
    and gives each ready one an item at a time, so nobody holds an item another could start now. At most
    2 × n + 1 items are claimed and not yet yielded, so memory stays bounded. `state`: this process's own
    state for the items it runs (default: `setup()`, built at its first item).

    Helpers start from the feeder thread, so this process never waits for one: at once, or under
    `mer repro`'s jobserver (`pipeline.core.jobserver`) one at a time while a core is free. A helper
    left without items (all claimed) is retired at once, and its core goes back to the jobserver."""
    import threading
    from concurrent.futures import Future, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    import cloudpickle

    from pipeline.core import jobserver

    try:
        blob = cloudpickle.dumps((fn, setup))
    except Exception as e:  # e.g. a model that only serialises through its state_dict
        raise ComputeError(f"MER_WORKERS={n}: cannot send the work to worker processes ({type(e).__name__}: {e}); "
                           "MER_WORKERS=1 runs it in this process") from None
    context = _pool_context(fn)
    initargs = (blob, os.getcwd(), stage_threads(), dict(os.environ))
    tokens = jobserver.client()
    LAST_POOL.update(workers=n, on_helpers=0, helpers=0)
    if not NOTED.get("pool"):
        NOTED["pool"] = True
        shared = " while a core is free (mer repro shares the cores between its stages)" if tokens else ""
        print(f"workers: this process and up to {n - 1} helper process{'es' * (n > 2)}{shared}, {stage_threads()} "
              "thread each (MER_WORKERS sets how many; MER_WORKERS=1: this process alone)", file=sys.stderr)
    cond = threading.Condition()
    helpers: list[_Helper] = []
    results: dict[int, Future | tuple[bool, Any]] = {}  # claimed item → its future, or (ok, value) run here
    claim = {"next": 0, "out": 0, "stop": False, "launch": True}
    window = 2 * n + 1
    mine = {"state": state}  # UNSET: setup() at this process's first item

    def claimable() -> bool:
        return claim["next"] < len(items) and claim["next"] - claim["out"] < window

    def finished(i: int, helper: _Helper, f: Future) -> None:
        with cond:
            results[i] = f
            helper.busy = False
            cond.notify_all()

    def retire(helper: _Helper) -> None:  # under cond
        if helper.retired:
            return
        helper.retired = True
        helper.executor.shutdown(wait=False, cancel_futures=True)
        if not helper.ready():  # still starting: its setup would be wasted
            for p in helper.processes():
                p.terminate()
        if helper.token:
            tokens.give()

    def launch(token: bool) -> None:  # outside cond: the first start waits for the forkserver
        try:
            executor = ProcessPoolExecutor(1, mp_context=context, initializer=_pool_init, initargs=initargs)
            probe = executor.submit(_pool_ready)
        except Exception:  # no process can start here: the items stay with this process
            with cond:
                claim["launch"] = False
            if token:
                tokens.give()
            return
        helper = _Helper(executor, probe, token)
        probe.add_done_callback(lambda _: _notify(cond))
        with cond:
            helpers.append(helper)
            LAST_POOL["helpers"] += 1
            if claim["stop"] or claim["next"] >= len(items):
                retire(helper)

    def feed() -> None:  # starts the helpers, then gives each ready one an item at a time
        while True:
            with cond:
                while True:
                    if claim["stop"]:
                        return
                    if claim["next"] >= len(items):  # all claimed: helpers without an item are retired
                        for h in helpers:
                            if not h.busy:
                                retire(h)
                        if all(h.retired for h in helpers):
                            return
                        cond.wait(0.05)
                        continue
                    for h in helpers:  # a helper whose start failed (its setup raised, or it died) gives its core back
                        if h.probe.done() and not h.ready():
                            retire(h)
                    idle = next((h for h in helpers if not h.busy and not h.retired and h.ready()), None)
                    if idle is not None and claimable():
                        i = claim["next"]
                        claim["next"] += 1
                        idle.busy = True
                        LAST_POOL["on_helpers"] += 1
                        break
                    if claim["launch"] and len(helpers) < n - 1 and (tokens is None or tokens.take()):
                        idle = None
                        break
                    cond.wait(0.05)
            if idle is None:
                launch(tokens is not None)
                continue
            try:
                future = idle.executor.submit(_pool_run, cloudpickle.dumps(items[i]))
            except Exception as e:  # a broken pool refuses new work
                future = Future()
                future.set_exception(e)
            future.add_done_callback(lambda f, i=i, h=idle: finished(i, h, f))

    def run_here(i: int) -> tuple[bool, Any]:
        try:
            if mine["state"] is UNSET:
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
            if isinstance(value, Raised):
                raise value.error from None
            yield value
    finally:
        with cond:
            claim["stop"] = True
            cond.notify_all()
        feeder.join(timeout=10)  # at most a helper's start in progress
        with cond:
            started = list(helpers)
            procs = [p for h in started for p in h.processes()]
            for h in started:  # idle, still starting, or running items an error or an early close left
                if not h.retired:  # without a use: stopped, not waited for
                    retire(h)
        for p in procs:
            if p.is_alive() and p.exitcode is None:
                p.terminate()
        for p in procs:
            p.join(timeout=10)
        if tokens is not None:
            tokens.close()


def _notify(cond: Any) -> None:
    with cond:
        cond.notify_all()
