"""Freed memory kept for reuse: glibc's default allocator vs `keep_freed_memory()`, on 003's shapes.

glibc returns every freed block above its mmap threshold (≤ 32 MiB) to the kernel, so each large tensor
of the next batch is mapped and page-faulted in anew. The scoring workers (evaluate, importance) call
`pipeline.core.stage.keep_freed_memory()` (blocks up to 1 GiB stay in the heap); training does not, and
the `train` figures here say why (its peak RSS). This benchmark times,
each in a fresh process pinned to one thread as a stage is:

    eval     MCT-HFR (003's defaults) forward in eval mode over --sequences sequences of 003's padded
             lengths (speech 400 × 512, face 40 × 512, text 50 × 768), batch 64 as `predict` reads them
    train    MCT-HFR training steps (forward, cross-entropy, backward, AdamW), batch 32 (003 §5.3)

under the naive baseline `default` (glibc as it comes) and `kept` (keep_freed_memory), and reports wall,
user and system seconds, minor page faults and peak RSS, the speed-up of kept over default, and whether
the outputs are identical (the allocator must not change a number). Printed last, one JSON line.

    python benchmarks/allocator.py [--sequences 128] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKLOAD = r"""
import hashlib, json, resource, sys, time
mode, work, n, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from pipeline.core.stage import keep_freed_memory, pin_threads
kept = keep_freed_memory() if mode == "kept" else None
pin_threads(1)
import torch
from pipeline.models import mct_hfr
from pipeline.runs.feed import EVAL_BATCH_SIZE
torch.manual_seed(0)
T, D = {"text": 50, "speech": 400, "face": 40}, {"text": 768, "speech": 512, "face": 512}
model = mct_hfr.MCTHFR(D, 4)
g = torch.Generator().manual_seed(1)
x = {m: torch.randn(n, T[m], D[m], generator=g) for m in T}
lens = {m: (torch.rand(n, generator=g) * T[m]).long().clamp(min=1) for m in T}
mask = {m: torch.arange(T[m])[None] < lens[m][:, None] for m in T}
y = torch.randint(0, 4, (n,), generator=g)
def rows(a, b):
    return {m: v[a:b] for m, v in x.items()}, {m: v[a:b] for m, v in mask.items()}
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
if work == "eval":
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(*rows(a, a + EVAL_BATCH_SIZE)) for a in range(0, n, EVAL_BATCH_SIZE)])
else:
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    for s in range(steps):
        a = (s * 32) % max(n - 32, 1)
        opt.zero_grad()
        logits = model(*rows(a, a + 32))
        torch.nn.functional.cross_entropy(logits, y[a:a + 32]).backward()
        opt.step()
    out = torch.cat([p.detach().flatten() for p in model.parameters()])
wall = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": round(wall, 2), "user_s": round(r1.ru_utime - r0.ru_utime, 2),
                  "sys_s": round(r1.ru_stime - r0.ru_stime, 2), "minor_faults": r1.ru_minflt - r0.ru_minflt,
                  "peak_rss_mb": round(r1.ru_maxrss / 1024), "kept": kept,
                  "sha256": hashlib.sha256(out.numpy().tobytes()).hexdigest()}))
"""


def run(mode: str, work: str, n: int, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", WORKLOAD, mode, work, str(n), str(steps)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sequences", type=int, default=128, help="sequences the eval forward reads (default 128)")
    ap.add_argument("--steps", type=int, default=4, help="training steps of batch 32 (default 4)")
    args = ap.parse_args()
    figures: dict = {"benchmark": "allocator", "sequences": args.sequences, "steps": args.steps,
                     "load_before": round(os.getloadavg()[0], 2)}
    for work in ("eval", "train"):
        default = run("default", work, args.sequences, args.steps)
        kept = run("kept", work, args.sequences, args.steps)
        print(f"{work}: default {default['wall_s']} s (sys {default['sys_s']}), kept {kept['wall_s']} s "
              f"(sys {kept['sys_s']})", file=sys.stderr)
        figures[work] = {"default": default, "kept": kept,
                         "speedup": round(default["wall_s"] / kept["wall_s"], 2),
                         "identical": default["sha256"] == kept["sha256"]}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
