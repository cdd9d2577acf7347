"""What every worker of `pipeline.core.compute` shares, whichever backend runs it: the backend's error,
how a worker's one-line PipelineError travels back, and how a worker prepares to run like a stage."""

from __future__ import annotations

import os
import sys
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.stage import _POOL_ENVS, pin_threads

NOTED: dict[str, bool] = {}  # notes printed once per process
UNSET: Any = object()  # map_ordered's `state` when the caller has none


class ComputeError(PipelineError):
    """The compute settings are wrong, or Ray cannot be used; the message names the variable."""


class Raised:
    """A PipelineError raised by a worker, carried back as a value so the caller re-raises it as the
    same one-line error (a Ray task error would wrap it in a remote traceback)."""

    def __init__(self, error: PipelineError):
        self.error = error


def prepare(cwd: str, threads: int) -> None:
    """Run like a local stage: the caller's working directory (paths in items are relative to it),
    offline Hugging Face, threads pinned (`pipeline.core.stage.pin_threads`) — torch's pool where torch is
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
