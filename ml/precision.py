"""Training precision: ``precision=auto|bf16|fp32``.

``auto`` picks bf16 autocast on CUDA, and on CPUs that do bf16 natively (AVX512-BF16 or AMX-BF16,
read from the CPU flags and confirmed by a tiny bf16 matmul) where a bf16 convolution is measured
at least 1.15x as fast as float32 (`worker.runtime.precision.cpu_bf16_speedup`, the same rule as
serving); fp32 elsewhere. bf16 autocast keeps the weights, the optimiser and the loss in fp32;
only the convolutions and matmuls run in bf16.

Measured (torch 2.13, channels_last, ``python -m ml bench model=fastnet``): on the 2-core Xeon
with AMX the fast net trains at 970 images/s in bf16 against 374 in fp32 (batch 512); on a 2-core
Xeon with AVX512-BF16 and no AMX at 209 against 254 (batch 1024: 0.82x), which is why the flags
alone do not decide.
"""

from __future__ import annotations

import contextlib

import torch

# one rule for training and serving (the inference runtime imports nothing from ml)
from worker.runtime import precision as runtime_precision
from worker.runtime.precision import (  # noqa: F401
    BF16_MIN_SPEEDUP,
    PRECISIONS,
    cpu_bf16_pays,
    cpu_bf16_speedup,
    cpu_supports_bf16,
)


def resolve(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = fp32, no autocast). Training and
    the other ``ml`` commands take auto | bf16 | fp32; int8 is for serving a bundle only."""
    if precision == "int8":
        raise ValueError(
            "precision int8 is for serving an exported bundle (ml export --int8); train in auto, bf16 or fp32"
        )
    dtype = runtime_precision.resolve(precision, device)
    return None if dtype == torch.float32 else dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def name(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.").replace("bfloat16", "bf16")
