"""Live evaluation, champion against challenger, drift on generated data, operations figures."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.proportion import proportion_confint

from classifier.evaluation import selectors
from classifier.evaluation.models import Feedback, ModelVersion, ShadowPrediction
from classifier.models import Classification, Explanation
from tests.classifier.evaluation.factories import ModelVersionFactory, bulk_done, done_job, now
from tests.classifier.factories import ClassificationFactory, UserFactory
from tests.conftest import CIFAR10_CLASSES

pytestmark = pytest.mark.django_db


def give(job, *, label: str = "", correct: bool | None = None) -> Feedback:
    if correct is None:
        correct = label == job.top_label
    return Feedback.objects.create(classification=job, user=job.owner, correct=correct, label=label)


# ----------------------------------------------------------------------------- live evaluation
def test_live_evaluation_numbers():
    offline_per_class = [
        {"class": c, "precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 500} for c in CIFAR10_CLASSES
    ]
    version = ModelVersionFactory(offline={"accuracy": 0.87, "n": 5000, "per_class": offline_per_class})
    # 7 right (5 cats, 2 dogs), 3 wrong: predicted cat but dog (x2), predicted dog, no label given.
    for _ in range(5):
        give(done_job(version, top="cat"), label="cat")
    for _ in range(2):
        give(done_job(version, top="dog"), label="dog")
    for _ in range(2):
        give(done_job(version, top="cat"), label="dog")
    give(done_job(version, top="dog"), correct=False)
    done_job(version, top="cat")  # no feedback: not counted
    give(done_job(ModelVersionFactory(), top="cat"), label="dog")  # another version: not counted

    live = selectors.live_evaluation(version=version)
    assert (live["n"], live["correct"], live["labelled"]) == (10, 7, 9)
    assert live["accuracy"] == pytest.approx(0.7)
    assert live["interval"] == pytest.approx(proportion_confint(7, 10, method="wilson"))
    cat, dog = CIFAR10_CLASSES.index("cat"), CIFAR10_CLASSES.index("dog")
    assert live["confusion"][cat][cat] == 5 and live["confusion"][dog][cat] == 2 and live["confusion"][dog][dog] == 2
    rows = {r["class"]: r for r in live["per_class"]}
    assert rows["cat"]["precision"] == pytest.approx(5 / 7) and rows["cat"]["recall"] == 1.0
    assert rows["dog"]["precision"] == 1.0 and rows["dog"]["recall"] == pytest.approx(2 / 4)
    assert rows["cat"]["offline_precision"] == 0.9
    assert live["most_corrected"][0] == {"class": "cat", "corrected": 2, "feedback": 7, "rate": pytest.approx(2 / 7)}
    assert live["most_corrected"][1]["class"] == "dog" and live["most_corrected"][1]["corrected"] == 1
    assert live["offline_accuracy"] == 0.87


def test_live_evaluation_without_feedback():
    live = selectors.live_evaluation(version=ModelVersionFactory())
    assert (live["n"], live["accuracy"], live["interval"], live["most_corrected"]) == (0, None, None, [])
    assert live["answer_sets"] is None


def with_set(job, labels: list[str], coverage: float = 0.95):
    Explanation.objects.create(
        classification=job, model_input=b"", prediction_set=labels, prediction_set_coverage=coverage
    )
    return job


def test_live_answer_sets_count_the_feedback_whose_true_class_is_known():
    version = ModelVersionFactory()
    give(with_set(done_job(version, top="cat"), ["cat"]), label="cat")  # right: covered
    give(with_set(done_job(version, top="cat"), ["cat", "dog"]), label="dog")  # wrong, but the set held it
    give(with_set(done_job(version, top="cat"), ["cat", "dog"]), label="frog")  # wrong and not in the set
    give(with_set(done_job(version, top="cat"), ["cat"]), correct=False)  # wrong, true class unknown: left out
    give(done_job(version, top="dog"), label="dog")  # a job without a set (an older bundle): left out
    sets = selectors.live_evaluation(version=version)["answer_sets"]
    assert (sets["n"], sets["covered"], sets["target"]) == (3, 2, 0.95)
    assert sets["coverage"] == pytest.approx(2 / 3) and sets["mean_size"] == pytest.approx(5 / 3)
    assert sets["interval"] == pytest.approx(proportion_confint(2, 3, method="wilson"))


def test_champion_against_challenger_on_the_same_feedback():
    champion = ModelVersionFactory(alias=ModelVersion.Alias.CHAMPION)
    challenger = ModelVersionFactory(alias=ModelVersion.Alias.CHALLENGER)
    rng = np.random.default_rng(3)
    truth = rng.choice(CIFAR10_CLASSES, size=60)
    a_right, b_right = [], []
    for i, label in enumerate(truth):
        a_ok, b_ok = rng.random() < 0.6, rng.random() < 0.85
        wrong = CIFAR10_CLASSES[(CIFAR10_CLASSES.index(label) + 1) % 10]
        job = done_job(champion, top=label if a_ok else wrong)
        ShadowPrediction.objects.create(
            classification=job, model_version=challenger, top_label=label if b_ok else wrong, top_probability=0.5
        )
        if i < 50:  # ten shadowed jobs without feedback are not compared
            give(job, label=str(label))
            a_right.append(a_ok)
            b_right.append(b_ok)
    unlabelled = done_job(champion, top="cat")
    ShadowPrediction.objects.create(
        classification=unlabelled, model_version=challenger, top_label="cat", top_probability=1
    )
    give(unlabelled, correct=False)  # "wrong" without a true class: not comparable

    result = selectors.champion_vs_challenger(champion=champion, challenger=challenger)
    assert result["n"] == 50 and result["shadowed"] == 61
    assert result["champion_accuracy"] == pytest.approx(np.mean(a_right))
    assert result["challenger_accuracy"] == pytest.approx(np.mean(b_right))
    only_a = sum(a and not b for a, b in zip(a_right, b_right, strict=True))
    only_b = sum(b and not a for a, b in zip(a_right, b_right, strict=True))
    assert (result["test"].only_a_right, result["test"].only_b_right) == (only_a, only_b)
    assert result["test"].p_value == pytest.approx(scipy_stats.binomtest(min(only_a, only_b), only_a + only_b).pvalue)


# ----------------------------------------------------------------------------- drift
@pytest.fixture
def reference_version():
    rng = np.random.default_rng(0)
    distribution = rng.dirichlet(np.ones(10) * 20).tolist()
    bins = [
        {"lower": i / 10, "upper": (i + 1) / 10, "count": c}
        for i, c in enumerate([0, 0, 0, 5, 10, 15, 20, 25, 60, 365])
    ]
    mean_confidence = sum(b["count"] * (b["lower"] + 0.05) for b in bins) / 500
    return ModelVersionFactory(
        offline={"predicted_distribution": distribution, "mean_confidence": mean_confidence, "confidence_bins": bins}
    )


def _confidences(rng, version, n: int) -> list[float]:
    bins = version.offline["confidence_bins"]
    counts = np.array([b["count"] for b in bins], dtype=float)
    which = rng.choice(len(bins), size=n, p=counts / counts.sum())
    return [float(bins[i]["lower"] + rng.random() * 0.1 * 0.999) for i in which]


def test_drift_flags_shifted_days_and_not_stable_ones(reference_version, settings):
    settings.DRIFT_MIN_PREDICTIONS = 30
    version = reference_version
    owner = UserFactory()
    rng = np.random.default_rng(1)
    p = np.array(version.offline["predicted_distribution"])
    today = now()
    # Four days ago: drawn from the reference itself. Three days ago: 60% cats. Two days ago: the
    # reference mix but unsure answers. Yesterday: cats, but only 10 predictions (never flagged).
    stable = rng.choice(CIFAR10_CLASSES, size=400, p=p).tolist()
    bulk_done(version, owner, stable, _confidences(rng, version, 400), today - timedelta(days=4))
    shifted_p = 0.4 * p
    shifted_p[CIFAR10_CLASSES.index("cat")] += 0.6
    cats = rng.choice(CIFAR10_CLASSES, size=400, p=shifted_p).tolist()
    bulk_done(version, owner, cats, _confidences(rng, version, 400), today - timedelta(days=3))
    unsure = rng.choice(CIFAR10_CLASSES, size=400, p=p).tolist()
    bulk_done(version, owner, unsure, list(rng.uniform(0.3, 0.5, size=400)), today - timedelta(days=2))
    bulk_done(version, owner, ["cat"] * 10, [0.9] * 10, today - timedelta(days=1))
    bulk_done(ModelVersionFactory(), owner, ["cat"] * 100, [0.1] * 100, today - timedelta(days=3))  # other version

    result = selectors.drift(version=version, days=30)
    days = {(today.date() - row["day"]).days: row for row in result["days"]}
    assert sorted(days) == [1, 2, 3, 4]
    assert [days[k]["n"] for k in (4, 3, 2, 1)] == [400, 400, 400, 10]

    assert not days[4]["drift"], days[4]["reasons"]
    assert days[4]["psi"] < 0.1 and days[4]["chi2"].p_value > 0.001
    assert days[3]["drift"] and days[3]["psi"] >= 0.2 and days[3]["chi2"].p_value < 1e-6
    assert any("class mix PSI" in r for r in days[3]["reasons"])
    assert days[2]["drift"] and days[2]["psi"] < 0.1
    assert any("mean confidence" in r for r in days[2]["reasons"])
    assert any("confidence PSI" in r for r in days[2]["reasons"])
    assert days[1]["psi"] > 1 and not days[1]["drift"]  # too few predictions to flag
    assert [row["day"] for row in result["warnings"]] == [days[3]["day"], days[2]["day"]]
    # The numbers are the library's on the same counts.
    counts = [stable.count(c) for c in CIFAR10_CLASSES]
    assert days[4]["counts"] == counts
    expected = scipy_stats.chisquare(counts, f_exp=np.clip(p, 1e-4, None) / np.clip(p, 1e-4, None).sum() * 400)
    assert days[4]["chi2"].statistic == pytest.approx(expected.statistic)


def test_drift_window_and_no_reference():
    version = ModelVersionFactory()  # no offline report
    owner = UserFactory()
    bulk_done(version, owner, ["cat"] * 50, [0.2] * 50, now())
    bulk_done(version, owner, ["dog"] * 50, [0.2] * 50, now() - timedelta(days=40))
    result = selectors.drift(version=version, days=30)
    assert not result["has_reference"]
    assert [row["n"] for row in result["days"]] == [50]
    assert result["days"][0]["psi"] is None and not result["days"][0]["drift"]
    assert result["days"][0]["mean_confidence"] == pytest.approx(0.2)


# ----------------------------------------------------------------------------- operations
def test_operations_figures():
    owner = UserFactory()
    t = now() - timedelta(hours=1)
    for queue_s, run_s in ((1, 0.1), (2, 0.2), (3, 0.3), (10, 1.0)):
        ClassificationFactory(
            owner=owner,
            done=True,
            created_at=t,
            started_at=t + timedelta(seconds=queue_s),
            finished_at=t + timedelta(seconds=queue_s + run_s),
        )
    for error in ("The image could not be read: truncated", "The image could not be read: truncated", "Took too long"):
        ClassificationFactory(owner=owner, failed=True, error=error, created_at=t, started_at=t, finished_at=t)
    ClassificationFactory(owner=owner, created_at=t)  # queued
    ClassificationFactory(owner=owner, done=True, created_at=now() - timedelta(days=30))  # outside the window

    ops = selectors.operations(days=14)
    assert ops["totals"]["uploads"] == 8 and ops["totals"]["done"] == 4 and ops["totals"]["failed"] == 3
    assert ops["totals"]["failure_rate"] == pytest.approx(3 / 7)
    queue = [1, 2, 3, 10, 0, 0, 0]
    assert ops["queue"]["p50"] == pytest.approx(np.percentile(queue, 50))
    assert ops["queue"]["p90"] == pytest.approx(np.percentile(queue, 90))
    assert ops["inference"]["p50"] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 1.0, 0, 0, 0], 50))
    assert ops["reasons"][0] == {"error": "The image could not be read: truncated", "n": 2}
    assert ops["classes"] == [{"top_label": "cat", "n": 4}]
    [day] = ops["days"]
    assert (day["uploads"], day["done"], day["failed"]) == (8, 4, 3)
    assert Classification.objects.count() == 9
