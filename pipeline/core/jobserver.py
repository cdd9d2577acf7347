"""Cores shared between the stages `mer repro` runs side by side: a jobserver, as `make -j`'s.

Without it each of two stages would start a helper process per core (`pipeline.core.pool`), so two
stages on two cores run four busy processes, and every helper's start (a forkserver importing torch,
the stage's model built again: 3-4 CPU-seconds) is paid while no core is free to gain from it. With
it, a core is a token: `mer repro` holds one for each stage it runs, and a stage's pool starts a
helper only when it can take a token, that is while a core is idle (one stage running alone, or the
other between its items and its end); the token goes back when the pool closes.

The tokens are bytes in a named pipe (a FIFO, as GNU make's `--jobserver-style=fifo`) whose path
travels in MER_JOBSERVER, so it crosses `dvc repro` and the stage's `python` without inherited file
descriptors. Taking never blocks: a pool without a token runs its items in its own process, as with
MER_WORKERS=1, and tries again every few tens of milliseconds. A process killed while it holds tokens
loses them: later stages start fewer helpers, never wait. Where there is no FIFO (Windows) or no
MER_JOBSERVER (`dvc repro`, `mer run`), a pool starts its helpers at once, as before. The FIFO lives in
a temporary folder named after `mer repro`'s pid; one left by a `mer repro` that was killed outright is
removed by the next one.

Hand-written: the standard library has no cross-process semaphore that survives exec, and the pipe
protocol is ten lines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

ENV = "MER_JOBSERVER"


class Tokens:
    """A process's end of the jobserver: `take()` a token if one is free (never blocks), `give()` it back."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # O_RDWR: opening never waits for a writer

    def take(self) -> bool:
        try:
            return len(os.read(self.fd, 1)) == 1
        except (BlockingIOError, InterruptedError):
            return False

    def give(self, n: int = 1) -> None:
        if n > 0:
            os.write(self.fd, b"+" * n)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def client(environ: dict[str, str] | None = None) -> Tokens | None:
    """This process's tokens where `mer repro` runs a jobserver (MER_JOBSERVER), else None (no limit
    beyond MER_WORKERS). A path that cannot be opened (the runner gone) counts as no jobserver."""
    path = (os.environ if environ is None else environ).get(ENV)
    if not path:
        return None
    try:
        return Tokens(path)
    except OSError:
        return None


class Jobserver:
    """`mer repro`'s side: a FIFO holding `tokens` tokens. `hold(k)` keeps k of them for the stages it runs
    (taking or giving back the difference, so a token freed by a stage that ended goes straight to the
    stage started in its place); `env()` is what the stages' environment gets."""

    def __init__(self, tokens: int):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        self.path = self.dir / "tokens"
        os.mkfifo(self.path, 0o600)
        self.tokens = Tokens(str(self.path))
        self.tokens.give(tokens)
        self.held = 0

    def env(self) -> dict[str, str]:
        return {ENV: str(self.path)}

    def hold(self, k: int) -> None:
        while self.held < k and self.tokens.take():
            self.held += 1
        if self.held > k:
            self.tokens.give(self.held - k)
            self.held = k

    def close(self) -> None:
        self.tokens.close()
        shutil.rmtree(self.dir, ignore_errors=True)


PREFIX = "mer-jobserver-"


def start(tokens: int) -> Jobserver | None:
    """A jobserver with `tokens` tokens, or None where named pipes do not exist (Windows). First removes the
    folders of jobservers whose `mer repro` is gone (killed before it could remove its own)."""
    if not hasattr(os, "mkfifo"):
        return None
    remove_stale(Path(tempfile.gettempdir()))
    return Jobserver(tokens)


def remove_stale(tmp: Path) -> list[Path]:
    """Remove the jobserver folders under `tmp` whose owner process no longer exists; returns them."""
    removed = []
    for folder in tmp.glob(f"{PREFIX}*-*"):
        pid = folder.name[len(PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
