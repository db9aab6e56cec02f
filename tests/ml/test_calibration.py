"""Temperature fitting, the uncertain and OOD thresholds, and the generated non-CIFAR images."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ml import calibration, metrics, ood


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.0, size=(20000, 10))
    p = metrics.softmax(true_logits)
    labels = np.array([rng.choice(10, p=row) for row in p])
    for t in (0.5, 2.0):
        overconfident = true_logits[None] / t  # a model whose logits are T times too small/large
        fitted = calibration.fit_temperature(overconfident, labels)
        assert fitted == pytest.approx(1 / t, rel=0.05)
        assert metrics.nll(calibration.ensemble_probs(overconfident, fitted), labels) < metrics.nll(
            calibration.ensemble_probs(overconfident, 1.0), labels
        )


def test_ensemble_probs_and_energy_match_their_definitions():
    z = np.random.default_rng(1).normal(size=(3, 5, 4))
    expected = np.mean([metrics.softmax(zm / 1.5) for zm in z], axis=0)
    np.testing.assert_allclose(calibration.ensemble_probs(z, 1.5), expected, atol=1e-12)
    np.testing.assert_allclose(calibration.energy(z), -np.log(np.exp(z).sum(2)).mean(0), atol=1e-12)


def test_uncertain_threshold_is_the_smallest_that_keeps_the_target_accuracy():
    # ten answers, most confident first: six right, then wrong, right, wrong, wrong
    conf = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25])
    correct = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 0], dtype=bool)
    probs = np.column_stack([conf, np.repeat(((1 - conf) / 9)[:, None], 9, axis=1)])  # top class: column 0
    labels = np.where(correct, 0, 1)
    t = calibration.uncertain_threshold(probs, labels, target=1.0)
    assert t == pytest.approx(0.6)  # the six kept answers are all right; keeping the seventh is not
    stats = calibration.selective(probs, labels, t)
    assert stats["accuracy_above"] == 1.0 and stats["share_flagged"] == pytest.approx(0.4)
    assert stats["accuracy_below"] == pytest.approx(1 / 4)
    t80 = calibration.uncertain_threshold(probs, labels, target=0.8)
    assert t80 == pytest.approx(0.4)  # 7 of 8 right (87.5%); keeping the ninth gives 7/9 < 80%
    assert calibration.uncertain_threshold(probs, labels, target=0.5) == pytest.approx(0.25)  # keep all: 70%


def test_ood_threshold_flags_the_requested_share():
    scores = np.arange(1000, dtype=np.float64)
    t = calibration.ood_threshold(scores, 0.05)
    assert (scores > t).mean() == pytest.approx(0.05, abs=0.002)


def test_half_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), 5)
    fit, rep = calibration.half_split(labels, seed=0)
    assert not set(fit) & set(rep) and len(fit) + len(rep) == 20
    assert np.bincount(labels[rep]).tolist() == [2, 2, 2, 2]
    again = calibration.half_split(labels, seed=0)
    assert np.array_equal(again[1], rep) and not np.array_equal(calibration.half_split(labels, seed=1)[1], rep)


def test_generated_images_are_the_five_kinds_and_deterministic():
    images, kinds = ood.generate(6, seed=3)
    assert images.shape == (30, 3, 32, 32) and images.dtype == np.uint8
    assert sorted(set(kinds)) == sorted(ood.KINDS) and kinds.count("text") == 6
    again, _ = ood.generate(6, seed=3)
    assert np.array_equal(images, again) and not np.array_equal(images, ood.generate(6, seed=4)[0])
    by_kind = {k: images[[i for i, x in enumerate(kinds) if x == k]] for k in ood.KINDS}
    assert all(np.unique(im.reshape(3, -1), axis=1).shape[1] == 1 for im in by_kind["flat"])  # one colour each
    assert all(np.unique(im.reshape(3, -1), axis=1).shape[1] == 2 for im in by_kind["checkerboard"])
    assert all(np.unique(im.reshape(3, -1), axis=1).shape[1] == 2 for im in by_kind["stripes"])
    assert all(im.std() > 50 for im in by_kind["noise"])
    assert all(np.unique(im.reshape(3, -1), axis=1).shape[1] > 2 for im in by_kind["text"])  # ink, paper, anti-aliasing


def test_auroc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 10, 300).astype(float)
    b = rng.integers(3, 14, 200).astype(float)
    expected = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[a, b])
    assert ood.auroc(a, b) == pytest.approx(expected, abs=1e-12)
    assert ood.auroc(np.zeros(5), np.ones(5)) == 1.0 and ood.auroc(np.ones(5), np.zeros(5)) == 0.0
