"""Training precision: ``precision=auto|bf16|fp32``.

``auto`` picks bf16 autocast on CUDA and on CPUs that do bf16 natively (AVX512-BF16 or AMX-BF16,
read from the CPU flags and confirmed by a tiny bf16 matmul), fp32 elsewhere. bf16 autocast keeps
the weights, the optimiser and the loss in fp32; only the convolutions and matmuls run in bf16.

Measured (this project's 2-core dev CPU, torch 2.13, channels_last): the fast net trains at
970 images/s in bf16 against 374 in fp32 (batch 512; ``python -m ml bench model=fastnet``).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when this CPU advertises native bf16 (avx512_bf16 / amx_bf16) and oneDNN runs it."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False
    try:
        a = torch.ones(8, 8, dtype=torch.bfloat16)
        return bool((a @ a).float().eq(8).all())
    except RuntimeError:
        return False


def resolve(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = fp32, no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def name(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.").replace("bfloat16", "bf16")
