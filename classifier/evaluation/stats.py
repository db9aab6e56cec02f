"""The statistics of live evaluation and drift, on plain numbers (no Django, no database).

* `wilson_interval`: the 95% Wilson score interval of an accuracy (statsmodels' proportion_confint).
* `mcnemar_exact`: McNemar's exact test on paired right/wrong outcomes of two models (statsmodels).
* `chi_square_gof`: goodness of fit of observed class counts to a reference distribution (scipy).
* `psi`: the population stability index between two distributions.
* `classification_metrics`: confusion matrix and per-class precision/recall from (true, predicted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# scipy and statsmodels are imported where a test runs, not with the module (and matplotlib by
# the first figure, classifier.evaluation.plots): the admin imports both modules, so every web
# process loaded all three at start. Setting up the web app (django.setup, its URLs and API) took
# 2.1-2.3 s and 208 MB with them, 0.85-1.0 s and 94 MB without (the AVX2 EPYC dev machine).

# Shares below this are replaced by it before PSI and chi-square, so a class the reference never
# predicted (or a day without some class) gives a large but finite number instead of infinity.
EPSILON = 1e-4


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """(low, high) of the Wilson score interval for successes/n; None when n is 0."""
    if n <= 0:
        return None
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return float(low), float(high)


@dataclass(frozen=True)
class McNemarResult:
    n: int  # pairs
    both_right: int
    only_a_right: int  # a right, b wrong
    only_b_right: int
    both_wrong: int
    p_value: float | None  # None when no pair is discordant (the test says nothing then)


def mcnemar_exact(a_right: Sequence[bool], b_right: Sequence[bool]) -> McNemarResult:
    """McNemar's exact (binomial) test of two models on the same items."""
    a = np.asarray(a_right, dtype=bool)
    b = np.asarray(b_right, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.shape} and {b.shape}")
    both = int(np.sum(a & b))
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    neither = int(np.sum(~a & ~b))
    p_value = None
    if only_a + only_b > 0:
        from statsmodels.stats.contingency_tables import mcnemar

        p_value = float(mcnemar([[both, only_a], [only_b, neither]], exact=True).pvalue)
    return McNemarResult(int(a.size), both, only_a, only_b, neither, p_value)


def _shares(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    total = x.sum()
    if total <= 0:
        raise ValueError("a distribution needs a positive total")
    shares = np.clip(x / total, EPSILON, None)
    return shares / shares.sum()


def psi(observed: Sequence[float], reference: Sequence[float]) -> float:
    """Population stability index sum((o - r) * ln(o / r)) over the shares of each bucket.

    Rule of thumb: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a large one.
    """
    o = _shares(observed)
    r = _shares(reference)
    if o.shape != r.shape:
        raise ValueError("observed and reference need the same buckets")
    return float(np.sum((o - r) * np.log(o / r)))


@dataclass(frozen=True)
class ChiSquareResult:
    statistic: float
    p_value: float
    dof: int


def chi_square_gof(observed_counts: Sequence[int], reference: Sequence[float]) -> ChiSquareResult | None:
    """Pearson's chi-square test of observed counts against the reference shares (scipy.stats.chisquare).

    None when there are no observations.
    """
    observed = np.asarray(observed_counts, dtype=float)
    n = observed.sum()
    if n <= 0:
        return None
    expected = _shares(reference) * n
    from scipy import stats as scipy_stats

    result = scipy_stats.chisquare(observed, f_exp=expected)
    return ChiSquareResult(float(result.statistic), float(result.pvalue), int(observed.size - 1))


@dataclass(frozen=True)
class ClassMetrics:
    classes: list[str]
    confusion: list[list[int]]  # rows true, columns predicted
    per_class: list[dict]  # class, precision, recall, support (true), predicted; None where undefined


def classification_metrics(pairs: Sequence[tuple[str, str]], classes: Sequence[str]) -> ClassMetrics:
    """Confusion matrix and per-class precision/recall of (true, predicted) pairs over ``classes``.

    Pairs naming a class outside ``classes`` are ignored. Precision is None for a class never
    predicted, recall None for a class never true (scikit-learn would warn and say 0).
    """
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    cm = np.zeros((k, k), dtype=int)
    for true, predicted in pairs:
        if true in index and predicted in index:
            cm[index[true], index[predicted]] += 1
    per_class = []
    for i, name in enumerate(classes):
        tp = int(cm[i, i])
        support = int(cm[i].sum())
        predicted = int(cm[:, i].sum())
        per_class.append(
            {
                "class": name,
                "precision": tp / predicted if predicted else None,
                "recall": tp / support if support else None,
                "support": support,
                "predicted": predicted,
            }
        )
    return ClassMetrics(list(classes), cm.tolist(), per_class)


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float | None]:
    """{"p50": ..., "p90": ..., "p99": ...} of the values (None each when there are none)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return {f"p{q:g}": None for q in qs}
    return {f"p{q:g}": float(np.percentile(x, q)) for q in qs}
