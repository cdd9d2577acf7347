"""fp32 or bf16 for a network, chosen by measuring both on this machine (issue 15).

Whether bf16 pays off is a property of the machine, not of a CPU flag: oneDNN's bf16 convolutions ran
3–4× fp32 on a CPU with AMX tiles, but at 0.65× fp32 on a Xeon with AVX512-BF16 and no AMX (VGG-Face,
benchmarks/extract.py). So `choose_precision` times both on the network's own forward (the extractor's
inference copies on a small batch of seeded random crops: warm-up, then best of `repeats`), keeps the
faster one that agrees with fp32 within `MIN_COSINE`, and remembers the decision in a small JSON file
so that the next run on the same machine (and every stage run after the first) does not time again.

Decision key (`machine_identity` + the model's identity): the CPU model name, the CPU's bf16-relevant
features as torch reports them (AMX tiles, AVX512-BF16; queried, never assumed), the core count,
torch's intra-op thread count (the ratio of the two paths moves with it), the torch version, the
device (GPU name for CUDA), and the model: class, layer and a signature of every parameter's name and
shape, plus its weights (a digest, or random + seed: the agreement check depends on them). Anything
different re-measures; stale entries are harmless.

File: `$MER_PRECISION_CACHE` when set, else `<cache root>/precision.json` (the per-clip cache's root,
`data/cache` or `$MER_CACHE_DIR`): per machine, not a DVC output, safe to delete (it is measured
again). Written atomically; two stages writing at once can at worst lose the other's entry, which
then is measured again on its next run.

A forced choice (`bf16: true | false` in params) skips all of this.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np

from pipeline.store import write_json

#: the agreement required of bf16: min cosine between bf16 and fp32 embeddings of the same crops, the
#: tolerance tests/test_vggface.py and tests/test_resnet50.py assert for bf16 vs fp32
MIN_COSINE = 0.999
PRECISION_CACHE_ENV = "MER_PRECISION_CACHE"
#: bump when the measurement changes so that old decisions are not reused
METHOD_VERSION = 1

Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class Decision:
    """What was chosen and why. `fp32_s` / `bf16_s`: best seconds per forward of the probe batch
    (None where not measured); `min_cosine`: bf16 vs fp32 (None where bf16 failed to run);
    `measured`: timed now (False: read from the decision file)."""

    precision: Precision
    reason: str
    fp32_s: float | None = None
    bf16_s: float | None = None
    min_cosine: float | None = None
    measured: bool = True

    def summary(self) -> str:
        """One line for logs: the choice, the two timings and the agreement."""
        parts = [f"{self.precision} ({self.reason})"]
        if self.fp32_s is not None:
            parts.append(f"fp32 {self.fp32_s * 1e3:.1f} ms")
        if self.bf16_s is not None:
            parts.append(f"bf16 {self.bf16_s * 1e3:.1f} ms")
        if self.min_cosine is not None:
            parts.append(f"min cosine {self.min_cosine:.5f}")
        parts.append("measured now" if self.measured else "cached decision")
        return ", ".join(parts)


def decision_file() -> Path:
    """Where decisions are kept: $MER_PRECISION_CACHE, else <cache root>/precision.json."""
    env = os.environ.get(PRECISION_CACHE_ENV)
    if env:
        return Path(env)
    from pipeline import paths

    return Path(paths.CACHE_DIR) / "precision.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_flag(name: str) -> bool | None:
    """torch.cpu._is_*_supported (private, so guarded): True/False, None when torch cannot tell."""
    import torch

    probe = getattr(torch.cpu, name, None)
    if probe is None:
        return None
    try:
        return bool(probe())
    except Exception:
        return None


def machine_identity(device: Any = "cpu") -> dict[str, Any]:
    """What makes one machine's timing differ from another's (part of the decision key)."""
    import torch

    ident: dict[str, Any] = {
        "cpu": _cpu_model(),
        "amx": _torch_flag("_is_amx_tile_supported"),
        "avx512_bf16": _torch_flag("_is_avx512_bf16_supported"),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(torch.device(device).type),
    }
    if torch.device(device).type == "cuda":
        ident["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return ident


def model_identity(net: Any, **extra: Any) -> dict[str, Any]:
    """Class and a sha256 of every parameter's and buffer's name and shape, plus `extra` (layer,
    weights digest or seed)."""
    sig = hashlib.sha256()
    for name, t in list(net.named_parameters()) + list(net.named_buffers()):
        sig.update(f"{name}:{tuple(t.shape)};".encode())
    return {"class": f"{type(net).__module__}.{type(net).__qualname__}", "shapes": sig.hexdigest()[:16], **extra}


def decision_key(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps([METHOD_VERSION, identity], sort_keys=True, default=str).encode()).hexdigest()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: measure again (and rewrite it)
        return {}
    return data if isinstance(data, dict) else {}


def cached_decision(identity: Mapping[str, Any], path: Path | None = None) -> Decision | None:
    entry = _read(path or decision_file()).get(decision_key(identity))
    if not isinstance(entry, dict) or entry.get("precision") not in ("fp32", "bf16"):
        return None
    fields = {k: entry.get(k) for k in ("precision", "reason", "fp32_s", "bf16_s", "min_cosine")}
    return Decision(**fields, measured=False)


def store_decision(identity: Mapping[str, Any], decision: Decision, path: Path | None = None) -> None:
    path = path or decision_file()
    data = _read(path)
    entry = {k: v for k, v in asdict(decision).items() if k != "measured"}
    data[decision_key(identity)] = {**entry, "identity": dict(identity), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(path, data)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine between a and b ((N, d) each); -1 for non-finite values."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return -1.0
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cos.min())


def _best_time(run: Callable[[], Any], repeats: int, timer: Callable[[], float]) -> tuple[Any, float]:
    """run() once as warm-up (its output returned), then the best of `repeats` timed calls."""
    out = run()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = timer()
        run()
        best = min(best, timer() - t0)
    return out, best


def measure(
    run: Callable[[Precision], np.ndarray],
    *,
    repeats: int = 2,
    tolerance: float = MIN_COSINE,
    timer: Callable[[], float] = time.perf_counter,
) -> Decision:
    """Time `run('fp32')` and `run('bf16')` (each: warm-up, then best of `repeats`) and choose.

    bf16 is kept only when it agrees with fp32 (min cosine ≥ `tolerance`) and is strictly faster;
    a bf16 path that raises or disagrees gives fp32, with the reason. fp32 failing is not caught
    (that is the network's own error)."""
    ref, fp32_s = _best_time(lambda: run("fp32"), repeats, timer)
    try:
        out, bf16_s = _best_time(lambda: run("bf16"), repeats, timer)
    except Exception as e:  # any failure of the bf16 path (unsupported op, dtype error) means fp32
        return Decision("fp32", f"bf16 failed: {type(e).__name__}: {e}".strip()[:200], fp32_s=fp32_s)
    cos = min_cosine(ref, out)
    if cos < tolerance:
        return Decision("fp32", f"bf16 disagrees with fp32 (min cosine {cos:.5f} < {tolerance})", fp32_s, bf16_s, cos)
    if bf16_s < fp32_s:
        return Decision("bf16", f"measured faster than fp32 ({fp32_s / bf16_s:.2f}x)", fp32_s, bf16_s, cos)
    return Decision("fp32", f"measured faster than bf16 ({bf16_s / fp32_s:.2f}x)", fp32_s, bf16_s, cos)


def choose_precision(
    run: Callable[[Precision], np.ndarray],
    identity: Mapping[str, Any],
    *,
    path: Path | None = None,
    repeats: int = 2,
    tolerance: float = MIN_COSINE,
    timer: Callable[[], float] = time.perf_counter,
    log: Callable[[str], None] | None = None,
) -> Decision:
    """The decision for `identity` from the decision file, else measured now (`measure`) and stored."""
    path = path or decision_file()
    found = cached_decision(identity, path)
    if found is not None:
        return found
    decision = measure(run, repeats=repeats, tolerance=tolerance, timer=timer)
    try:
        store_decision(identity, decision, path)
    except OSError as e:  # a read-only cache costs a measurement per run, not the run
        print(f"warning: could not record the precision decision in {path} ({e})", file=sys.stderr)
    if log is not None:
        log(decision.summary())
    return decision
