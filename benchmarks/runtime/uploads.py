"""Memory and time of `prepare_upload` and `decode_for_model` for small files that decode to the
most pixels allowed (40 MP RGB, RGBA and 16-bit PNGs), each in a fresh process: to size web and
worker processes."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.services import ROOT

WORST_CASE = r"""
import io, resource, sys, time
import numpy as np
from worker.runtime.images import DEFAULT_MAX_PIXELS, decode_for_model, prepare_upload
from tests.hostile import png_raw

kind, func = sys.argv[1], sys.argv[2]
width = 8000
height = DEFAULT_MAX_PIXELS // width  # exactly at the pixel limit
if kind == "16-bit grey PNG":
    row = (np.arange(width, dtype=np.uint16) * 8).astype(">u2").tobytes()
    data = png_raw(width, height, bit_depth=16, colour_type=0, rows=(row for _ in range(height)))
elif kind == "RGBA PNG":
    row = np.tile(np.array([10, 20, 30, 128], np.uint8), width).tobytes()
    data = png_raw(width, height, bit_depth=8, colour_type=6, rows=(row for _ in range(height)))
else:
    row = np.tile(np.array([10, 20, 30], np.uint8), width).tobytes()
    data = png_raw(width, height, bit_depth=8, colour_type=2, rows=(row for _ in range(height)))


def peak_kib():
    # VmHWM belongs to this process image; ru_maxrss would carry over the parent's peak across exec.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


before = peak_kib()
start = time.perf_counter()
decode_for_model(data) if func == "decode_for_model" else prepare_upload(data, max_bytes=len(data))
seconds = time.perf_counter() - start
peak = (peak_kib() - before) / 1024
print(f"{len(data) / 1e6:.1f} {peak:.0f} {seconds:.2f} {width}x{height}")
"""


def worst_case_uploads() -> None:
    """Memory and time for tiny files that decode to the most pixels allowed, each in a fresh process."""
    print("\n== worst-case uploads at the pixel limit (fresh process each; RSS growth during the call)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for kind in ("RGB PNG", "RGBA PNG", "16-bit grey PNG"):
        for func in ("prepare_upload", "decode_for_model"):
            proc = subprocess.run(
                [sys.executable, "-W", "ignore", "-c", WORST_CASE, kind, func],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
            if proc.returncode != 0:
                print(f"{kind:16s} {func:17s} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            size_mb, peak, seconds, dims = proc.stdout.split()
            print(f"{kind:16s} {dims} ({size_mb} MB file)  {func:17s} +{peak:>5s} MiB peak RSS  {seconds} s")
