"""benchmarks.runtime's arithmetic section: MACs per image from the manifest and the ceiling lines."""

from __future__ import annotations

import pytest
import torch

from benchmarks.runtime.ceiling import Ceiling, macs_per_image, matmul_gflops
from ml.tta import views


def test_views_per_level_match_what_the_tta_module_runs() -> None:
    from ml.tta import TestTimeAugment

    seen = []

    class Count(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            return x.flatten(1)[:, :3]

    x = torch.zeros(4, 3, 8, 8)
    for level in (0, 1, 2):
        seen.clear()
        TestTimeAugment(Count(), level)(x)
        assert sum(seen) == views(level) * len(x)
    with pytest.raises(ValueError, match="TTA level"):
        views(3)


def test_macs_per_image_sums_members_times_views() -> None:
    members = [{"macs": 100}, {"macs": 300}]
    assert macs_per_image(members, 0) == (400, [100, 300])
    assert macs_per_image(members, 1) == (800, [100, 300])
    assert macs_per_image(members, 2) == (2400, [100, 300])
    assert macs_per_image([{"macs": 100}, {"arch": "x"}], 1) is None  # a member without a count
    assert macs_per_image([], 1) is None


def test_ceiling_lines_say_the_rate_the_arithmetic_allows_and_what_a_target_needs() -> None:
    # 1 GMAC per image at 100 images/s = 200 GFLOP/s; a 400 GFLOP/s matmul allows 200 images/s
    ceiling = Ceiling(macs=10**9, member_macs=[5 * 10**8, 5 * 10**8], views=1, rate=100.0, matmul=400.0)
    assert ceiling.achieved == pytest.approx(200.0)
    text = "\n".join(ceiling.lines("bf16", 500))
    assert "1.000 GMAC per image (members 500 + 500 M MACs per view x 1 views)" in text
    assert "100.0 images/s = 200 GFLOP/s" in text
    assert "runs at 0.50x that rate" in text
    assert "ceiling is 200 images/s" in text
    assert "500 images/s would need 1000 GFLOP/s = 2.50x the matmul rate (5.00x the measured throughput)" in text
    no_matmul = "\n".join(Ceiling(10**9, [10**9], 1, 100.0, None).lines("int8", 500))
    assert "matmul" not in no_matmul and "would need 1000 GFLOP/s (5.00x" in no_matmul


def test_matmul_rate_is_measured_for_float_types_only() -> None:
    rate = matmul_gflops(torch.float32, n=128, runs=2)
    assert rate is not None and rate > 0
    assert matmul_gflops(torch.qint8) is None
