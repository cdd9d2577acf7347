"""fp32 or bf16 for a network, chosen by measuring both on this machine (issue 15).

Whether bf16 pays off is a property of the machine, not of a CPU flag: oneDNN's bf16 convolutions ran
3–4× fp32 on a CPU with AMX tiles, but at 0.65× fp32 on a Xeon with AVX512-BF16 and no AMX (VGG-Face,
benchmarks/extract.py), and 7–8× slower on an AMD EPYC without AVX512-BF16, where bf16 is emulated
(issue 21). So `choose_precision` times both on the network's own forward (the extractor's inference
copies on a small batch of seeded random crops), keeps the faster one that agrees with fp32 within
`MIN_COSINE`, and remembers the decision in a small JSON file so that the next run on the same
machine (and every stage run after the first) does not time again.

The measurement is cheap (`measure`, issue 21). First a pilot (`conv_pilot`: one mid-sized 3×3
convolution, the kernel these CNNs spend their time in, a few milliseconds) in both precisions: where
bf16 is emulated it is several times slower there too, and fp32 is kept without running the network
in bf16 at all (a whole bf16 forward pass costs seconds to minutes on such a CPU). Otherwise one bf16
pass of the network (its warm-up, and the agreement check) after a warm and a timed fp32 pass; then
timed bf16 (and fp32) passes only while neither path is `CLEAR_RATIO` times faster than the other and
the next pass fits in `BUDGET_S`.

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

import copy
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

from pipeline.core.store import write_json

#: the agreement required of bf16: min cosine between bf16 and fp32 embeddings of the same crops, the
#: tolerance tests/test_vggface.py and tests/test_resnet50.py assert for bf16 vs fp32
MIN_COSINE = 0.999
PRECISION_CACHE_ENV = "MER_PRECISION_CACHE"
#: bump when the measurement changes so that old decisions are not reused (the cheaper measurement of
#: issue 21 decides as the full one did wherever the two paths differ clearly: decisions stay valid)
METHOD_VERSION = 1
#: seconds the timed passes may take in all: a further pass is skipped when it would end past this
#: (the three passes every measurement needs — fp32 warm-up, fp32 timed, bf16 first — are not skipped)
BUDGET_S = 10.0
#: one path this many times slower than the other (by its best time) is clearly slower: no repeats
CLEAR_RATIO = 1.5

Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class Decision:
    """What was chosen and why. `fp32_s` / `bf16_s`: best seconds per forward of the probe batch
    (None where not measured; the pilot convolution's where the pilot decided, as the reason says); `min_cosine`: bf16 vs fp32 (None where bf16 failed to run);
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
    from pipeline.core import paths

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


def conv_pilot(device: Any = "cpu") -> Callable[[Precision], Any]:
    """The pilot `measure` runs first: one 3×3 convolution, 128 → 128 channels on one 56×56 image
    (about 0.9 GFLOP), in each precision as the face embedders run their networks (bf16 weights and
    input under bf16 autocast, channels-last). Measured on an AVX512-BF16 CPU: fp32 10 ms, bf16 3 ms;
    the same CPU with oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, bf16 emulated): 15 and 83 ms."""
    import torch

    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    fp32 = torch.nn.Conv2d(128, 128, 3, padding=1)
    with torch.no_grad():
        fp32.weight.copy_(torch.randn(fp32.weight.shape, generator=gen) * 0.03)
        fp32.bias.zero_()
    fp32 = fp32.eval().to(device, memory_format=torch.channels_last)
    nets = {"fp32": fp32, "bf16": copy.deepcopy(fp32).to(torch.bfloat16)}
    x = torch.randn(1, 128, 56, 56, generator=gen).to(device, memory_format=torch.channels_last)

    def run(precision: Precision) -> float:
        bf16 = precision == "bf16"
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return nets[precision](x.to(torch.bfloat16) if bf16 else x).float().sum().item()  # .item(): waits for a GPU

    return run


def _pilot_times(pilot: Callable[[Precision], Any], timer: Callable[[], float], repeats: int = 2) -> tuple[float, float]:
    """Best of `repeats` timed pilot runs per precision, after a warm-up of each."""
    pilot("fp32")
    pilot("bf16")
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for _ in range(repeats):
        for p in best:
            best[p] = min(best[p], _timed(lambda: pilot(p), timer)[1])
    return best["fp32"], best["bf16"]


def _timed(run: Callable[[], Any], timer: Callable[[], float]) -> tuple[Any, float]:
    t0 = timer()
    out = run()
    return out, timer() - t0


def measure(
    run: Callable[[Precision], np.ndarray],
    *,
    repeats: int = 2,
    tolerance: float = MIN_COSINE,
    timer: Callable[[], float] = time.perf_counter,
    budget_s: float = BUDGET_S,
    clear_ratio: float = CLEAR_RATIO,
    pilot: Callable[[Precision], Any] | None = None,
) -> Decision:
    """Time `run('fp32')` and `run('bf16')` and choose, stopping as soon as one is clearly slower.

    `pilot` (e.g. `conv_pilot()`): run first, in both precisions (warm-up, then best of 2 each); bf16
    more than `clear_ratio` times slower there gives fp32 at once, the network never run in bf16 (the
    Decision's times are then the pilot's, and no agreement is measured). A pilot that raises is
    ignored: the network's own bf16 pass then tells.

    fp32: a warm-up pass (the reference output), then a timed one. bf16: a first pass, timed — its
    output is checked against fp32 (a bf16 path that raises or disagrees, min cosine < `tolerance`,
    gives fp32 at once, with the reason) and its time, set-up included, is an upper bound of a bf16
    pass. Then rounds of a timed bf16 pass (and, from the second round, an fp32 one), at most
    `repeats`, each only while neither path's best time is `clear_ratio` times the other's and the
    round is expected to end within `budget_s` of the start. bf16 is kept only when its best time
    (the first pass's where no other was timed) is strictly below fp32's. fp32 failing is not caught
    (that is the network's own error)."""
    start = timer()
    if pilot is not None:
        try:
            pf, pb = _pilot_times(pilot, timer)
        except Exception:  # noqa: BLE001 — the network's bf16 pass below reports a failing bf16 path
            pass
        else:
            if pb > clear_ratio * pf:
                return Decision("fp32", f"measured faster than bf16 ({pb / pf:.2f}x on a pilot convolution; "
                                        "the network was not run in bf16)", pf, pb)
    ref = run("fp32")  # warm-up: one-time set-up (weight layouts, kernels) stays out of the timing
    fp32 = [_timed(lambda: run("fp32"), timer)[1]]
    try:
        out, first_bf16 = _timed(lambda: run("bf16"), timer)
    except Exception as e:  # any failure of the bf16 path (unsupported op, dtype error) means fp32
        return Decision("fp32", f"bf16 failed: {type(e).__name__}: {e}".strip()[:200], fp32_s=fp32[0])
    cos = min_cosine(ref, out)
    if cos < tolerance:
        return Decision("fp32", f"bf16 disagrees with fp32 (min cosine {cos:.5f} < {tolerance})", fp32[0], first_bf16, cos)
    bf16: list[float] = []
    stop = ""
    while True:
        f, b = min(fp32), min(bf16) if bf16 else first_bf16
        if b * clear_ratio < f:
            break  # bf16 clearly faster (even its first pass, set-up included)
        if bf16 and b > clear_ratio * f:
            break  # bf16 clearly slower
        if len(bf16) >= max(1, repeats):
            break
        expected = b + (f if bf16 else 0.0)  # the next round: a bf16 pass, and an fp32 one after the first round
        if timer() - start + expected > budget_s:
            stop = f"; stopped at the {budget_s:g} s budget"
            break
        bf16.append(_timed(lambda: run("bf16"), timer)[1])
        if len(bf16) > 1:
            fp32.append(_timed(lambda: run("fp32"), timer)[1])
    f, b = min(fp32), min(bf16) if bf16 else first_bf16
    how = ("" if bf16 else ", bf16's first pass") + stop
    if b < f:
        return Decision("bf16", f"measured faster than fp32 ({f / b:.2f}x{how})", f, b, cos)
    return Decision("fp32", f"measured faster than bf16 ({b / f:.2f}x{how})", f, b, cos)


def choose_precision(
    run: Callable[[Precision], np.ndarray],
    identity: Mapping[str, Any],
    *,
    path: Path | None = None,
    repeats: int = 2,
    tolerance: float = MIN_COSINE,
    timer: Callable[[], float] = time.perf_counter,
    budget_s: float = BUDGET_S,
    pilot: Callable[[Precision], Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> Decision:
    """The decision for `identity` from the decision file, else measured now (`measure`) and stored."""
    path = path or decision_file()
    found = cached_decision(identity, path)
    if found is not None:
        return found
    decision = measure(run, repeats=repeats, tolerance=tolerance, timer=timer, budget_s=budget_s, pilot=pilot)
    try:
        store_decision(identity, decision, path)
    except OSError as e:  # a read-only cache costs a measurement per run, not the run
        print(f"warning: could not record the precision decision in {path} ({e})", file=sys.stderr)
    if log is not None:
        log(decision.summary())
    return decision
