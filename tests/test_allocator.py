"""`keep_freed_memory`: a freed large block stays in the heap for reuse instead of going back to the kernel
(to be mapped and page-faulted in anew at the next batch); glibc only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.stage import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os, sys
import numpy as np
from pipeline.core.stage import keep_freed_memory
def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
kept = keep_freed_memory() if sys.argv[1] == "kept" else None
before = resident_mb()
a = np.ones(200 * 2**20 // 8)  # 200 MB: above glibc's largest default mmap threshold (32 MiB)
held = resident_mb()
del a
print(json.dumps({"kept": kept, "held": held - before, "after_free": resident_mb() - before}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_large_blocks_are_reused_not_faulted_in_again():
    default, kept = _probe("default"), _probe("kept")
    assert default["held"] > 190 and kept["held"] > 190, (default, kept)
    # glibc as it comes unmaps the freed block (the next one is mapped and faulted in anew) …
    assert default["after_free"] < 10, default
    # … kept: it stays in the heap for the next allocation of its size
    assert kept["kept"] is True and kept["after_free"] > 190, kept


def test_keep_freed_memory_is_harmless_without_glibc(monkeypatch):
    import ctypes

    def no_libc(*a, **k):
        raise OSError("no libc here")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert keep_freed_memory() is False
