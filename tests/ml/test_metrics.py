import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from ml import metrics


def random_predictions(n: int = 400, c: int = 7, seed: int = 0, never_predicted: int = 3):
    """Random logits where class ``never_predicted`` never wins the argmax but still has true samples."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), labels] += 1.0  # better than chance, so the metrics are not all ~1/c
    logits[:, never_predicted] = logits.min() - 1.0 + rng.uniform(0, 0.5, size=n)
    return logits, labels


def test_accuracy_and_top_k_match_sklearn():
    logits, labels = random_predictions()
    probs = metrics.softmax(logits)
    assert metrics.accuracy(logits, labels) == pytest.approx(skm.accuracy_score(labels, logits.argmax(1)))
    for k in (1, 2, 3, 5):
        expected = skm.top_k_accuracy_score(labels, probs, k=k, labels=np.arange(7))
        assert metrics.top_k_accuracy(logits, labels, k=k) == pytest.approx(expected)
        assert metrics.top_k_accuracy(probs, labels, k=k) == pytest.approx(expected)
    assert metrics.top_k_accuracy(logits, labels, k=7) == 1.0


def test_top_k_breaks_exact_ties_like_sklearn():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 3, size=(300, 6)).astype(float)  # many exact ties
    labels = rng.integers(0, 6, size=300)
    for k in (1, 2, 3, 4):
        expected = skm.top_k_accuracy_score(labels, scores, k=k, labels=np.arange(6))
        assert metrics.top_k_accuracy(scores, labels, k=k) == pytest.approx(expected)


def test_accepts_torch_tensors():
    logits, labels = random_predictions()
    assert metrics.accuracy(torch.from_numpy(logits).float(), torch.from_numpy(labels)) == pytest.approx(
        skm.accuracy_score(labels, logits.argmax(1))
    )


def test_confusion_matrix_and_per_class_match_sklearn_with_a_class_never_predicted():
    logits, labels = random_predictions()
    preds = logits.argmax(1)
    assert 3 not in preds and 3 in labels
    cm = metrics.confusion_matrix(preds, labels, num_classes=7)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(labels, preds, labels=np.arange(7)))
    report = metrics.per_class_report(cm)
    p, r, f, s = skm.precision_recall_fscore_support(labels, preds, labels=np.arange(7), zero_division=0)
    np.testing.assert_allclose(report["precision"], p)
    np.testing.assert_allclose(report["recall"], r)
    np.testing.assert_allclose(report["f1"], f)
    np.testing.assert_array_equal(report["support"], s)
    assert report["precision"][3] == 0.0 and report["f1"][3] == 0.0
    assert report["macro_f1"] == pytest.approx(
        skm.f1_score(labels, preds, average="macro", labels=np.arange(7), zero_division=0)
    )
    assert report["macro_precision"] == pytest.approx(
        skm.precision_score(labels, preds, average="macro", labels=np.arange(7), zero_division=0)
    )
    assert report["macro_recall"] == pytest.approx(
        skm.recall_score(labels, preds, average="macro", labels=np.arange(7), zero_division=0)
    )


def test_class_without_samples_counts_zero_in_macro_average():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 2, 1, 1])  # class 2 predicted once, never true
    cm = metrics.confusion_matrix(preds, labels, num_classes=3)
    report = metrics.per_class_report(cm)
    assert report["macro_f1"] == pytest.approx(
        skm.f1_score(labels, preds, average="macro", labels=[0, 1, 2], zero_division=0)
    )
    assert report["recall"][2] == 0.0 and report["support"][2] == 0


def test_most_confused_orders_off_diagonal_cells():
    cm = np.array([[5, 3, 0], [1, 6, 4], [0, 0, 9]])
    rows = metrics.most_confused(cm, ["a", "b", "c"], top=5)
    assert [(r["true"], r["predicted"], r["count"]) for r in rows] == [("b", "c", 4), ("a", "b", 3), ("b", "a", 1)]
    assert rows[0]["rate"] == pytest.approx(4 / 11)


def test_ece_on_a_hand_checked_example():
    # four samples, top-1 confidences 0.95, 0.95, 0.55, 0.40 with 15 bins:
    # 0.95 -> bin (14/15, 1]: 2 samples, 1 correct: |0.5 - 0.95| = 0.45, weight 2/4
    # 0.55 -> bin (8/15, 9/15]: 1 sample, correct: |1 - 0.55| = 0.45, weight 1/4
    # 0.40 -> bin (5/15, 6/15]: 1 sample, wrong: |0 - 0.40| = 0.40, weight 1/4
    probs = np.array(
        [
            [0.95, 0.05, 0.00],
            [0.95, 0.05, 0.00],
            [0.55, 0.45, 0.00],
            [0.40, 0.35, 0.25],
        ]
    )
    labels = np.array([0, 1, 0, 2])
    cal = metrics.calibration(probs, labels)
    assert cal["ece"] == pytest.approx(0.5 * 0.45 + 0.25 * 0.45 + 0.25 * 0.40)
    assert cal["mce"] == pytest.approx(0.45)
    counts = [b["count"] for b in cal["bins"]]
    assert len(counts) == 15 and sum(counts) == 4
    assert counts[14] == 2 and counts[8] == 1 and counts[5] == 1
    assert cal["bins"][14]["accuracy"] == 0.5 and cal["bins"][14]["confidence"] == pytest.approx(0.95)
    assert cal["bins"][0]["accuracy"] is None


def test_perfectly_calibrated_has_zero_ece():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert metrics.calibration(probs, np.array([0, 1]))["ece"] == 0.0


def test_nll_matches_sklearn_log_loss():
    logits, labels = random_predictions()
    probs = metrics.softmax(logits)
    assert metrics.nll(probs, labels) == pytest.approx(skm.log_loss(labels, probs, labels=np.arange(7)))


def test_bad_shapes_are_refused_with_a_message():
    with pytest.raises(ValueError, match="labels must"):
        metrics.accuracy(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        metrics.accuracy(np.zeros((2, 2)), np.array([0, 2]))
