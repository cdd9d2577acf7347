"""Where neural code runs (extractors, training, evaluation), and in which precision.

`pick_device()` takes CUDA when present, else the CPU. `autocast_context(device, enabled)` runs the
block under bf16 autocast where the hardware computes bf16 natively: any CUDA GPU with bf16 support,
and CPUs with AMX tiles or AVX512-BF16 instructions (oneDNN then runs convolutions and matrix products
in bf16; on CPUs without them bf16 is emulated and slower than fp32, so it stays off). Elsewhere it is
a no-op context. The flags only say bf16 is possible, not that it pays: on one AVX512-BF16 Xeon without
AMX oneDNN's bf16 ran at 0.65x fp32. The face embedders therefore decide by measurement
(pipeline/extract/precision.py: both paths timed once per machine, the faster kept within 0.999 cosine).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """`prefer` when given (e.g. 'cpu' to force the CPU), else CUDA when present, else CPU."""
    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cpu_flag(name: str) -> bool:
    # torch.cpu._is_*_supported query the CPU through cpuinfo; private, so guard their absence
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # pragma: no cover - a failing probe means "unknown", treated as absent
        return False


def cpu_has_amx() -> bool:
    """True when the CPU has AMX tiles (Sapphire Rapids and later): bf16 matmuls/convs run 3-4x fp32."""
    return _cpu_flag("_is_amx_tile_supported")


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AMX or AVX512-BF16), so bf16 autocast pays off."""
    return cpu_has_amx() or _cpu_flag("_is_avx512_bf16_supported")


def bf16_supported(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def autocast_context(device: torch.device | str, enabled: bool = True) -> AbstractContextManager:
    """bf16 autocast on `device` when `enabled` and the hardware supports it; else a null context."""
    device = torch.device(device)
    if enabled and bf16_supported(device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def precision(device: torch.device | str, enabled: bool = True) -> str:
    """'bf16' or 'fp32': what `autocast_context(device, enabled)` will run (for provenance)."""
    return "bf16" if enabled and bf16_supported(device) else "fp32"
