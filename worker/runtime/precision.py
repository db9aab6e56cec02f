"""Inference precision of a loaded bundle: ``auto`` | ``bf16`` | ``fp32`` | ``int8``.

A bundle's module is saved in float32. ``bf16`` converts its weights (and its float buffers) to
bfloat16 once, after loading; the module casts the normalised images to its weights' dtype and
returns float32 probabilities, so callers see no difference but speed. ``auto`` (the product's
default, ``WORKER_PRECISION`` in the environment) takes bf16 on CUDA and on CPUs that do bf16 in
hardware (AVX512-BF16 or AMX-BF16, read from the CPU flags and confirmed by a tiny bf16 matmul),
float32 elsewhere: on a CPU without them bf16 is emulated and slower than float32.

``int8`` runs the bundle's int8 twin (``model-int8.pt``, written by ``python -m ml export --int8``:
int8 convolutions on the CPU's integer dot products, `ml.quantize`), on the CPU only; it is never
chosen by ``auto``, because it costs some accuracy (the bundle's ``precision.json`` says how much).

What bf16 and int8 cost in accuracy is measured per bundle at export (``report/precision.json``).
This module imports no Django and nothing from ``ml``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32", "int8")
PRECISION_ENV = "WORKER_PRECISION"


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


def check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def from_env(default: str = "auto") -> str:
    """``WORKER_PRECISION`` when set (auto | bf16 | fp32 | int8), else ``default``."""
    value = os.environ.get(PRECISION_ENV, "").strip().lower()
    if not value:
        return default
    if value not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def resolve(precision: str, device: torch.device) -> torch.dtype:
    """The dtype a module runs in for ``precision`` on ``device`` (``torch.qint8`` for int8)."""
    check(precision)
    if precision == "int8":
        if device.type != "cpu":
            raise ValueError(f"precision int8 runs on the CPU only, not on {device.type}: use auto, bf16 or fp32 there")
        return torch.qint8
    if precision == "fp32":
        return torch.float32
    if precision == "bf16" or device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else torch.float32


def name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.qint8: "int8"}.get(
        dtype, str(dtype)
    )
