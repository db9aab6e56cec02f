"""Inference precision of a loaded bundle: ``auto`` | ``bf16`` | ``fp32`` | ``int8``.

A bundle's module is saved in float32. ``bf16`` converts its weights (and its float buffers) to
bfloat16 once, after loading; the module casts the normalised images to its weights' dtype and
returns float32 probabilities, so callers see no difference but speed. ``auto`` (the product's
default, ``WORKER_PRECISION`` in the environment) takes bf16 on CUDA, and on a CPU where bf16 is
measured to pay: the CPU must do bf16 in hardware (AVX512-BF16 or AMX-BF16, read from the CPU flags
and confirmed by a tiny bf16 matmul; without them bf16 is emulated), and a 3x3 convolution like
the fast net's must run at least `BF16_MIN_SPEEDUP` times faster in bf16 than in float32
(`cpu_bf16_speedup`, timed once per process, about 0.1 s). The flags alone do not tell: a 2-core
Intel Xeon with AVX512-BF16 and no AMX ran that convolution at 0.52x in bf16 (182 against 348
GFLOP/s on 2 threads; a 2048^2 matmul 165 against 315), where the AMD EPYC of the same flags ran
about 2x and the Xeon with AMX several times faster. Float32 elsewhere.

``int8`` runs the bundle's int8 twin (``model-int8.pt``, written by ``python -m ml export --int8``:
int8 convolutions on the CPU's integer dot products, `ml.quantize`), on the CPU only; it is never
chosen by ``auto``, because it costs some accuracy (the bundle's ``precision.json`` says how much).

What bf16 and int8 cost in accuracy is measured per bundle at export (``report/precision.json``).
This module imports no Django and nothing from ``ml``.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32", "int8")
PRECISION_ENV = "WORKER_PRECISION"
# auto takes bf16 on a CPU only where it is measured at least this much faster than float32 (the
# bf16 rounding costs a little accuracy: the bundle's report/precision.json says how much).
BF16_MIN_SPEEDUP = 1.15


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


@functools.cache
def cpu_bf16_speedup() -> float:
    """How many times faster a bf16 convolution runs than a float32 one on this CPU: float32 time
    over bf16 time, each the best of 5 calls after 2 warm-up calls, of a 3x3 convolution of 128
    channels on 8 images of 16x16 (channels_last, inference, 0.6 GFLOP: one of the fast net's
    middle layers). 0.0 where the CPU has no native bf16. Measured once per process, on one torch
    thread: the ratio is the cores' own, and a process that forks afterwards has run no parallel
    region (`worker.runtime.threads`)."""
    if not cpu_supports_bf16():
        return 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
            x = torch.randn(8, 128, 16, 16).to(memory_format=torch.channels_last)
            timed = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
            for dtype in timed:
                conv.to(dtype)
                xd = x.to(dtype)
                for call in range(7):
                    start = time.perf_counter()
                    conv(xd)
                    if call >= 2:
                        timed[dtype] = min(timed[dtype], time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    speedup = timed[torch.float32] / timed[torch.bfloat16]
    logger.info(
        "bf16 on this CPU: a convolution %.2fx as fast as float32 (%.2f against %.2f ms); auto takes %s",
        speedup,
        timed[torch.bfloat16] * 1e3,
        timed[torch.float32] * 1e3,
        "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32",
    )
    return speedup


def cpu_bf16_pays() -> bool:
    """True when ``auto`` takes bf16 on this CPU: native bf16, measured `BF16_MIN_SPEEDUP` faster."""
    return cpu_bf16_speedup() >= BF16_MIN_SPEEDUP


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
    return torch.bfloat16 if device.type == "cpu" and cpu_bf16_pays() else torch.float32


def name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.qint8: "int8"}.get(
        dtype, str(dtype)
    )
