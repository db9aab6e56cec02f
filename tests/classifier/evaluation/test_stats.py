"""The statistics against independent computations: the Wilson formula, scipy's binomial test,
the chi-square sum, and PSI on generated data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from classifier.evaluation import stats


def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (7, 10), (87, 100), (4363, 5000), (0, 50), (50, 50)])
def test_wilson_interval_matches_the_formula(k, n):
    low, high = stats.wilson_interval(k, n)
    expected = wilson_by_hand(k, n)
    assert low == pytest.approx(expected[0], abs=1e-12)
    assert high == pytest.approx(expected[1], abs=1e-12)
    assert 0 <= low <= k / n <= high <= 1


def test_wilson_interval_at_the_edges_and_without_data():
    assert stats.wilson_interval(0, 0) is None
    # Unlike the normal approximation, it never leaves [0, 1] and is not empty at 0 or n.
    assert stats.wilson_interval(0, 10)[1] > 0
    assert stats.wilson_interval(10, 10)[0] < 1


@pytest.mark.parametrize("seed", range(5))
def test_mcnemar_exact_matches_scipys_binomial_test(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    a = rng.random(n) < 0.8
    b = np.where(rng.random(n) < 0.3, ~a, a)  # b disagrees with a on about 30%
    result = stats.mcnemar_exact(a.tolist(), b.tolist())
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    assert (result.only_a_right, result.only_b_right) == (only_a, only_b)
    assert result.both_right + result.only_a_right + result.only_b_right + result.both_wrong == n
    expected = scipy_stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-9)


def test_mcnemar_exact_known_values():
    # 10 discordant pairs, 9 against 1: two-sided exact p = 2 * (1 + 10) / 2**10.
    result = stats.mcnemar_exact([True] * 9 + [False] + [True] * 5, [False] * 9 + [True] + [True] * 5)
    assert result.p_value == pytest.approx(22 / 1024)
    assert stats.mcnemar_exact([True, False], [True, False]).p_value is None  # no discordant pair
    with pytest.raises(ValueError):
        stats.mcnemar_exact([True], [True, False])


def test_chi_square_matches_the_sum_and_the_chi2_tail():
    observed = [30, 10, 25, 35]
    reference = [0.25, 0.25, 0.25, 0.25]
    result = stats.chi_square_gof(observed, reference)
    expected = [25.0] * 4
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    assert result.statistic == pytest.approx(statistic)
    assert result.p_value == pytest.approx(scipy_stats.chi2.sf(statistic, 3))
    assert result.dof == 3
    assert stats.chi_square_gof([0, 0], [0.5, 0.5]) is None


def test_psi_is_zero_for_the_same_mix_and_grows_with_the_shift():
    reference = [0.1] * 10
    assert stats.psi([100] * 10, reference) == pytest.approx(0.0, abs=1e-12)
    mild = [0.12, 0.08] + [0.1] * 8
    strong = [0.55] + [0.05] * 9
    assert 0 < stats.psi(mild, reference) < 0.1 < 0.25 < stats.psi(strong, reference)
    by_hand = sum((o - r) * math.log(o / r) for o, r in zip(strong, reference, strict=True))
    assert stats.psi(strong, reference) == pytest.approx(by_hand)
    # A class the reference never predicted: large, but finite.
    assert math.isfinite(stats.psi([5, 5], [1.0, 0.0]))


def test_psi_on_generated_samples_separates_same_and_shifted_sources():
    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(10) * 5)
    same = np.bincount(rng.choice(10, size=2000, p=reference), minlength=10)
    shifted_p = reference.copy()
    shifted_p[3] += 0.3
    shifted_p /= shifted_p.sum()
    shifted = np.bincount(rng.choice(10, size=2000, p=shifted_p), minlength=10)
    assert stats.psi(same, reference) < 0.02
    assert stats.psi(shifted, reference) > 0.2
    assert stats.chi_square_gof(same, reference).p_value > 0.01
    assert stats.chi_square_gof(shifted, reference).p_value < 1e-6


def test_classification_metrics_match_scikit_learn():
    from sklearn.metrics import confusion_matrix, precision_score, recall_score

    classes = ["a", "b", "c"]
    rng = np.random.default_rng(1)
    true = rng.choice(classes, size=200).tolist()
    predicted = [t if rng.random() < 0.7 else rng.choice(classes) for t in true]
    result = stats.classification_metrics(list(zip(true, predicted, strict=True)), classes)
    assert result.confusion == confusion_matrix(true, predicted, labels=classes).tolist()
    precision = precision_score(true, predicted, labels=classes, average=None)
    recall = recall_score(true, predicted, labels=classes, average=None)
    for row, p, r in zip(result.per_class, precision, recall, strict=True):
        assert row["precision"] == pytest.approx(p)
        assert row["recall"] == pytest.approx(r)


def test_classification_metrics_leave_undefined_cells_empty():
    result = stats.classification_metrics([("a", "a"), ("a", "b"), ("zebra", "a")], ["a", "b", "c"])
    by_class = {row["class"]: row for row in result.per_class}
    assert by_class["a"]["precision"] == 1.0 and by_class["a"]["recall"] == 0.5
    assert by_class["c"]["precision"] is None and by_class["c"]["recall"] is None  # never predicted nor true
    assert sum(map(sum, result.confusion)) == 2  # the unknown class is ignored


def test_percentiles():
    assert stats.percentiles([1, 2, 3, 4, 100]) == {
        "p50": 3.0,
        "p90": pytest.approx(np.percentile([1, 2, 3, 4, 100], 90)),
        "p99": pytest.approx(np.percentile([1, 2, 3, 4, 100], 99)),
    }
    assert stats.percentiles([]) == {"p50": None, "p90": None, "p99": None}
