"""What every stage script shares: threads pinned, and its main run with pipeline errors turned into one
clear line.

Threads: every stage runs torch (and the OpenMP/BLAS pools under numpy, openSMILE's dependencies) on
`MER_THREADS` threads when set, else on its entry of `STAGE_THREADS` (1 for every stage unless the
measurement there says otherwise). Two reasons. (1) Results: a float reduction split over a different
number of threads sums in a different order, so BERT features differed by up to 5.6e-6 between 1 and 2
threads and every output after them changed hash; with the count fixed, a stage's outputs are
byte-identical from run to run and clone to clone on the same kind of CPU. (2) Speed: on a machine
whose cores are shared, an unpinned pool spins against the other process and ran 25–40× slower
(`benchmarks/threads.py` measures it). MER_THREADS is an execution setting, not a parameter: DVC does
not rerun anything when it changes, so a lab that raises it must not expect byte-identical outputs
against a lock made with another count (they agree within float tolerance).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from pipeline.core.errors import PipelineError

THREADS_ENV = "MER_THREADS"
_POOL_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


#: Per-stage default thread count where MER_THREADS is not set (stages not listed: 1), chosen by
#: measurement: `python benchmarks/threads.py --stages` times every extraction stage on 1 and 2 threads,
#: quiet and with one other busy core (docs/precision-and-threads.md has the figures). A stage gets 2
#: only where 2 threads were faster in both conditions; on the 2-core project machine none was (2
#: threads ran 0.09-1.06x one thread), so every stage runs on 1. Capped at the usable cores.
STAGE_THREADS: dict[str, int] = {
    "faces": 1,
    "face_embed": 1,
    "resnet50": 1,
    "lld": 1,
    "compare": 1,
    "wav2vec2": 1,
    "bert": 1,
}


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or `taskset`'s limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def stage_threads(stage: str | None = None) -> int:
    """The thread count stages run with: MER_THREADS when set, else the stage's entry in
    STAGE_THREADS (capped at the usable cores), else 1."""
    raw = os.environ.get(THREADS_ENV)
    if raw is None:
        return max(1, min(STAGE_THREADS.get(stage or "", 1), usable_cores()))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise PipelineError(f"{THREADS_ENV}={raw!r}: expected a whole number of threads ≥ 1")
    return n


def pin_threads(n: int | None = None, stage: str | None = None) -> int:
    """Run torch's intra-op pool (and OpenMP/BLAS pools started after this call) on `n` threads
    (default `stage_threads(stage)`), with one inter-op thread; returns n."""
    n = stage_threads(stage) if n is None else n
    for name in _POOL_ENVS:
        os.environ[name] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started in this process
        pass
    return n


#: glibc's malloc hands a freed block above its mmap threshold (at most 32 MiB by default) back to the
#: kernel, and the next tensor of that size is mapped and page-faulted in anew. A batch's attention scores are
#: such blocks (MCT-HFR at 64 × 4 heads × 400 × 490: 200 MB, a few per layer), so half of 003's evaluation
#: time went to the kernel. Keeping freed blocks up to this size in the heap for reuse made MCT-HFR's
#: evaluation forward 1.86× faster with identical outputs, for 15 % more peak RSS (`benchmarks/allocator.py`;
#: 0.3-0.5 GB per scoring process in 003's quarter-size evaluation, docs/benchmarks.md).
#: Scoring turns it on (`pipeline.evaluate.scoring`); training does not: there the heap's fragmentation
#: raised the peak RSS 3.9 → 6.0 GB for a 1.4× faster step, and a training worker's memory is the scarcer.
KEEP_FREED_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def keep_freed_memory(limit: int = KEEP_FREED_BYTES) -> bool:
    """Make glibc's malloc keep freed blocks below `limit` bytes for reuse instead of unmapping them
    (mallopt M_MMAP_THRESHOLD and M_TRIM_THRESHOLD). Allocation only: no result changes. Returns False
    where there is no glibc (macOS, musl): nothing changes there."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


def run_stage(main: Callable[[], object], stage: str | None = None) -> None:
    """Run a stage's main with pinned threads (`stage_threads(stage)`; `stage` defaults to the
    script's name, stages/<stage>.py); a PipelineError prints `error: <message>` and exits 1 (no
    traceback)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    stage = stage or Path(sys.argv[0]).stem
    try:
        pin_threads(stage=stage)
        main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
