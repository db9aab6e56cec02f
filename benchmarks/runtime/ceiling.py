"""The arithmetic ceiling of a bundle on this CPU: what its images/s could be at most.

A bundle's members record their multiply-accumulates per image (``macs`` in the manifest,
`ml.evaluate.member_info`); at TTA level L the members see `ml.tta.views` (L) views of each
image. The CPU's rate for the precision the module runs in is measured in the same run as a large
square matrix multiply (``torch.mm`` of 2048 x 2048 in bf16 or fp32, the best case for its matrix
units), so the benchmark can say how close the measured throughput is to what the arithmetic
allows, and what a throughput target would ask of the CPU."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ml.tta import views


def macs_per_image(members: list[dict[str, Any]], level: int) -> tuple[int, list[int]] | None:
    """(multiply-accumulates per image at TTA ``level``, the members' own per view), or None when
    a member's manifest entry does not record them."""
    per_member = [m.get("macs") for m in members]
    if not per_member or any(not isinstance(v, int) or v <= 0 for v in per_member):
        return None
    return sum(per_member) * views(level), per_member


def matmul_gflops(dtype: torch.dtype, n: int = 2048, runs: int = 5) -> float | None:
    """The best of ``runs`` timed ``torch.mm`` of two n x n matrices in ``dtype``, in GFLOP/s
    (2 n^3 floating-point operations each); None for dtypes without a float matmul (int8)."""
    if not dtype.is_floating_point:
        return None
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up: the first call picks and primes the kernel
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


@dataclass
class Ceiling:
    macs: int  # per image, all members and views
    member_macs: list[int]
    views: int
    rate: float  # measured images/s
    matmul: float | None  # GFLOP/s of the matmul in the module's dtype, measured now

    @property
    def achieved(self) -> float:
        """GFLOP/s the measured throughput does (2 FLOP per multiply-accumulate)."""
        return 2 * self.macs * self.rate / 1e9

    def needed(self, images_per_second: float) -> float:
        return 2 * self.macs * images_per_second / 1e9

    def lines(self, dtype_name: str, target: float) -> list[str]:
        members = " + ".join(f"{m / 1e6:.0f}" for m in self.member_macs)
        out = [
            f"arithmetic: {self.macs / 1e9:.3f} GMAC per image (members {members} M MACs per view x {self.views} views)",
            f"measured: {self.rate:.1f} images/s = {self.achieved:.0f} GFLOP/s",
        ]
        if self.matmul:
            out.append(
                f"this CPU's {dtype_name} matmul (2048 x 2048, measured now): {self.matmul:.0f} GFLOP/s;"
                f" the throughput runs at {self.achieved / self.matmul:.2f}x that rate;"
                f" at that rate this bundle's ceiling is {self.matmul * 1e9 / (2 * self.macs):.0f} images/s"
            )
        need = self.needed(target)
        out.append(
            f"{target:.0f} images/s would need {need:.0f} GFLOP/s"
            + (f" = {need / self.matmul:.2f}x the matmul rate" if self.matmul else "")
            + f" ({target / self.rate:.2f}x the measured throughput)"
        )
        return out
