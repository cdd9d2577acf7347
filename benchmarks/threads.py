"""Threads under contention: a training workload with the stages' pinned threads vs torch's default.

Every stage runs torch on `MER_THREADS` threads (default 1; pipeline/stage.py). This benchmark
measures why: the same training steps of the demo's cross-modal transformer (d_model 128, batch 16,
4 modalities, 64 steps) timed in a fresh process

    pinned    pin_threads() as a stage does (MER_THREADS=1)
    default   torch's own choice (one thread per core)

each once on a quiet machine and once while one other process keeps a core busy (a Python loop, as
another stage, a test run or a colleague's job would). The naive baseline is `default`, measured in
the same run. Printed last, one JSON line: seconds per condition and the slowdowns under contention.

    python benchmarks/threads.py [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WORKLOAD = r"""
import os, sys, time
mode, steps = sys.argv[1], int(sys.argv[2])
import torch
if mode == "pinned":
    from pipeline.stage import pin_threads
    pin_threads()
from pipeline.models.registry import build_model
torch.manual_seed(0)
dims = {"face": 512, "acoustic": 25, "speech": 64, "text": 384}
model = build_model("crossmodal", dims, 4, "classification", {"d_model": 128})
opt = torch.optim.Adam(model.parameters(), 1e-4)
x = {m: torch.randn(16, 64, d) for m, d in dims.items()}
mask = {m: torch.ones(16, 64, dtype=torch.bool) for m in dims}
y = torch.randint(0, 4, (16,))
def step():
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x, mask), y)
    loss.backward()
    opt.step()
step()  # warm-up
t0 = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"seconds": time.perf_counter() - t0, "threads": torch.get_num_threads()}))
""".replace("import os, sys, time", "import json, os, sys, time")


def run(mode: str, steps: int, busy: bool) -> dict:
    env = dict(os.environ)
    env.pop("MER_THREADS", None)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(name, None)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if hog is not None:
            time.sleep(0.5)
        out = subprocess.run([sys.executable, "-c", WORKLOAD, mode, str(steps)], env=env, capture_output=True,
                             text=True, check=True).stdout
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    r = {}
    for mode in ("pinned", "default"):
        for busy in (False, True):
            key = f"{mode}_{'busy' if busy else 'quiet'}"
            r[key] = run(mode, args.steps, busy)
            print(f"{key:>14}: {r[key]['seconds']:.2f} s on {r[key]['threads']} thread(s)", flush=True)
    figures = {
        "cores": os.cpu_count(),
        **{f"{k}_s": round(v["seconds"], 3) for k, v in r.items()},
        "default_threads": r["default_quiet"]["threads"],
        "slowdown_under_contention_pinned": round(r["pinned_busy"]["seconds"] / r["pinned_quiet"]["seconds"], 2),
        "slowdown_under_contention_default": round(r["default_busy"]["seconds"] / r["default_quiet"]["seconds"], 2),
        "pinned_vs_default_under_contention": round(r["default_busy"]["seconds"] / r["pinned_busy"]["seconds"], 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
