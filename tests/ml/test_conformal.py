"""ml/conformal/: split conformal prediction sets (LAC), checked against MAPIE and by simulation."""

import json

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from ml import conformal
from ml.conformal import command as conformal_command
from worker.runtime.manifest import Manifest, read_manifest, write_manifest


def dirichlet_probs(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them: a calibrated model of ``classes`` classes."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(classes, 0.3), size=n)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return probs, labels


class GivenProbabilities(ClassifierMixin, BaseEstimator):
    """A prefit classifier whose input is its own predict_proba (MAPIE wants an estimator)."""

    def fit(self, X, y):
        self.classes_ = np.arange(np.asarray(X).shape[1])
        return self

    def predict_proba(self, X):
        return np.asarray(X)

    def predict(self, X):
        return np.asarray(X).argmax(axis=1)


@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_sets_are_mapies_lac_sets_except_that_none_is_empty(coverage):
    from mapie.classification import SplitConformalClassifier

    probs, labels = dirichlet_probs(1200, 10, seed=1)
    fit, test = slice(0, 600), slice(600, None)
    mapie = SplitConformalClassifier(
        GivenProbabilities().fit(probs[fit], labels[fit]),
        confidence_level=coverage,
        conformity_score="lac",
        prefit=True,
    )
    mapie.conformalize(probs[fit], labels[fit])
    _, theirs = mapie.predict_set(probs[test])
    theirs = theirs[:, :, 0]

    threshold = conformal.fit_threshold(probs[fit], labels[fit], coverage)
    ours = conformal.prediction_sets(probs[test], threshold)
    empty = theirs.sum(axis=1) == 0
    np.testing.assert_array_equal(ours[~empty], theirs[~empty])
    # where LAC's set is empty, ours is the top class alone
    top = probs[test].argmax(axis=1)
    assert (ours[empty].sum(axis=1) == 1).all() and ours[empty, top[empty]].all()


def test_the_threshold_is_the_finite_sample_quantile_of_the_scores():
    # 9 images, scores 1 - p(true) = 0.1 ... 0.9; coverage 0.8 takes the ceil(10 * 0.8) = 8th smallest
    probs = np.zeros((9, 2))
    probs[:, 0] = 1 - np.arange(1, 10) / 10
    probs[:, 1] = 1 - probs[:, 0]
    labels = np.zeros(9, dtype=int)
    assert conformal.fit_threshold(probs, labels, 0.8) == pytest.approx(1 - 0.8)
    # too few images for the coverage (needs ceil(10 * 0.95) = 10 > 9): every class is in every set
    assert conformal.fit_threshold(probs, labels, 0.95) == 0.0
    assert conformal.prediction_sets(probs, 0.0).all()


def test_coverage_holds_on_average_over_random_held_out_sets():
    """The guarantee: over draws of the held-out images, the mean coverage is at least the target
    (and, for distinct scores, at most target + 1 / (n + 1)); the non-empty rule only adds."""
    coverage, n = 0.9, 200
    covered = []
    for seed in range(150):
        probs, labels = dirichlet_probs(2 * n, 10, seed=100 + seed)
        t = conformal.fit_threshold(probs[:n], labels[:n], coverage)
        covered.append(conformal.evaluate(probs[n:], labels[n:], t)["coverage"])
    mean, se = np.mean(covered), np.std(covered) / np.sqrt(len(covered))
    assert mean >= coverage - 3 * se
    assert mean <= coverage + 1 / (n + 1) + 0.02 + 3 * se  # + what the non-empty rule adds


def test_classwise_sets_fit_each_class_on_its_own_images_and_cover_every_class():
    """One threshold per class: each is the marginal fit on that class's held-out images, and the
    coverage holds for the images of every class, where one common threshold lets a hard class
    fall short while easy ones are over-covered."""
    coverage, n = 0.9, 600
    rng = np.random.default_rng(7)

    def draw(size: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 3, size)
        # class 0 is easy (the model is sure and right), class 2 is hard (often confused with 1)
        sharp = np.array([8.0, 3.0, 0.6])[labels]
        logits = rng.normal(0, 1, (size, 3))
        logits[np.arange(size), labels] += sharp
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return probs, labels

    probs, labels = draw(n)
    thresholds = conformal.fit_thresholds(probs, labels, coverage, classwise=True)
    for k in range(3):
        rows = labels == k
        assert thresholds[k] == conformal.fit_threshold(probs[rows], labels[rows], coverage)
    marginal = conformal.fit_thresholds(probs, labels, coverage)
    assert (marginal == conformal.fit_threshold(probs, labels, coverage)).all()

    by_class_classwise, by_class_marginal = [], []
    for _ in range(60):
        fit_p, fit_y = draw(n)
        test_p, test_y = draw(n)
        by_class_classwise.append(
            conformal.evaluate(test_p, test_y, conformal.fit_thresholds(fit_p, fit_y, coverage, True))["by_class"]
        )
        by_class_marginal.append(
            conformal.evaluate(test_p, test_y, conformal.fit_thresholds(fit_p, fit_y, coverage))["by_class"]
        )
    classwise_mean = np.mean(by_class_classwise, axis=0)
    marginal_mean = np.mean(by_class_marginal, axis=0)
    assert (classwise_mean >= coverage - 0.01).all()  # every class covered (within the simulation's noise)
    assert marginal_mean[2] < coverage - 0.02 < marginal_mean[0]  # the common threshold short-changes the hard class


def test_classwise_sets_refuse_a_class_with_too_few_images():
    probs, labels = dirichlet_probs(300, 3, seed=5)
    labels[:] = np.where(labels == 2, 1, labels)
    labels[:5] = 2  # 5 images of class 2: 95% needs 19
    with pytest.raises(ValueError, match="need at least 19 held-out images of every class.*class 2: 5"):
        conformal.fit_thresholds(probs, labels, 0.95, classwise=True)
    assert conformal.fit_thresholds(probs, labels, 0.8, classwise=True).shape == (3,)  # 0.8 needs 4


def test_evaluate_counts_sizes_and_coverage_by_size():
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.45, 0.05], [0.4, 0.3, 0.3], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1, 2, 1])
    result = conformal.evaluate(probs, labels, thresholds=0.3)
    # sets: {0}, {0, 1}, {0, 1, 2}, {0, 1}
    assert result["n"] == 4 and result["coverage"] == 1.0 and result["mean_size"] == pytest.approx(2.0)
    assert result["by_size"]["1"] == {"share": 0.25, "coverage": 1.0}
    assert result["by_size"]["2"] == {"share": 0.5, "coverage": 1.0}
    assert result["by_size"]["3+"] == {"share": 0.25, "coverage": 1.0}
    assert result["by_class"] == [1.0, 1.0, 1.0]
    assert conformal.evaluate(probs, labels, thresholds=0.95)["by_size"]["2"]["coverage"] is None
    # per-class thresholds: class 1 needs 0.5 and class 2 0.2
    per_class = conformal.evaluate(probs, labels, thresholds=np.array([0.5, 0.5, 0.2]))
    assert per_class["by_class"] == [1.0, 0.0, 1.0] and per_class["mean_size"] == pytest.approx(5 / 4)
    assert conformal.labels_in_set([0.3, 0.45, 0.25], 0.28, ["cat", "dog", "frog"]) == ["dog", "cat"]
    assert conformal.labels_in_set([0.3, 0.45, 0.25], 0.9, ["cat", "dog", "frog"]) == ["dog"]
    assert conformal.labels_in_set([0.3, 0.45, 0.25], [0.4, 0.9, 0.2], ["cat", "dog", "frog"]) == ["dog", "frog"]


@pytest.mark.parametrize("coverage", [0, 1, 1.5, -0.1])
def test_a_coverage_outside_zero_to_one_is_refused(coverage):
    with pytest.raises(ValueError, match="coverage must be between 0 and 1"):
        conformal.fit_threshold(np.eye(3), np.arange(3), coverage)


def test_no_images_or_mismatched_labels_are_refused():
    with pytest.raises(ValueError, match="needs labelled images"):
        conformal.fit_threshold(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="expected N x C"):
        conformal.fit_threshold(np.eye(3), np.arange(2))


def fake_bundle(tmp_path, probs, labels, classes):
    """A bundle folder as export leaves it, minus the module: manifest and report."""
    bundle = tmp_path / "bundle"
    (bundle / "report").mkdir(parents=True)
    manifest = Manifest(
        name="fake",
        version="fake-1",
        classes=classes,
        input_size=[32, 32],
        mean=[0.5] * 3,
        std=[0.25] * 3,
        members=[],
        metrics={},
        sha256="0" * 64,
        created_at="2026-12-08T00:00:00+00:00",
        command="python -m ml export ...",
        calibration={"temperature": 1.0, "fit_on": {"seed": 0, "half": "fit"}},
        extra={"tta": 1},
    )
    write_manifest(bundle, manifest)
    np.savez(bundle / "report" / "predictions.npz", probs=probs.astype(np.float32), labels=labels)
    (bundle / "report" / "calibration.json").write_text(json.dumps({"calibration": {"temperature": 1.0}}))
    (bundle / "report" / "calibration.md").write_text(
        "# Calibration\n\n## Temperature\n\nT = 1\n\n## Out of distribution\n\nAUROC\n"
    )
    return bundle


def test_ml_conformal_fits_a_bundles_sets_from_its_report(tmp_path, capsys):
    from ml.calibration import half_split

    probs, labels = dirichlet_probs(400, 4, seed=3)
    bundle = fake_bundle(tmp_path, probs, labels, ["cat", "dog", "frog", "ship"])
    conformal_command.main([str(bundle), "--coverage", "0.9"])
    out = capsys.readouterr().out
    fit, rep = half_split(labels, 0)  # the halves the export's calibration used (seed 0, stratified)
    assert "prediction sets at 90% coverage" in out and f"report half ({len(rep)} images)" in out

    ps = read_manifest(bundle).prediction_set
    assert ps["coverage"] == 0.9 and ps["n_fit"] == len(fit) and ps["classwise"] is False
    assert ps["thresholds"] == [ps["threshold"]] * 4 and set(ps["by_class"]) == {"cat", "dog", "frog", "ship"}
    assert ps["lowest_class"]["coverage"] == min(ps["by_class"].values())
    assert ps["threshold"] == pytest.approx(conformal.fit_threshold(probs[fit].astype(np.float32), labels[fit], 0.9))
    assert ps["measured_coverage"] == pytest.approx(
        conformal.evaluate(probs[rep].astype(np.float32), labels[rep], ps["threshold"])["coverage"]
    )
    assert read_manifest(bundle).version == "fake-1"  # the rest of the manifest is as it was
    assert json.loads((bundle / "report" / "calibration.json").read_text())["prediction_set"] == ps
    md = (bundle / "report" / "calibration.md").read_text()
    assert md.index("## Prediction sets: 90% coverage") < md.index("## Out of distribution") and "AUROC" in md

    conformal_command.main(
        [str(bundle), "--coverage", "0.95", "--classwise"]
    )  # again: the section is replaced, not added
    assert "one threshold per class" in capsys.readouterr().out
    md = (bundle / "report" / "calibration.md").read_text()
    assert md.count("## Prediction sets") == 1 and "## Prediction sets: 95% coverage for every class" in md
    assert md.index("## Prediction sets") < md.index("## Out of distribution") and "| ship |" in md
    ps = read_manifest(bundle).prediction_set
    assert ps["classwise"] is True and ps["threshold"] is None
    expected = conformal.fit_thresholds(probs[fit].astype(np.float32), labels[fit], 0.95, classwise=True)
    assert ps["thresholds"] == pytest.approx(expected.tolist())


def test_ml_conformal_explains_a_bundle_without_a_report_and_a_bad_coverage(tmp_path, capsys):
    probs, labels = dirichlet_probs(40, 4, seed=4)
    bundle = fake_bundle(tmp_path, probs, labels, ["cat", "dog", "frog", "ship"])
    with pytest.raises(SystemExit):
        conformal_command.main([str(bundle), "--coverage", "95"])
    assert "coverage must be between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        conformal_command.main([str(bundle), "--tta-levels", "zero"])
    assert "--tta-levels takes comma-separated whole numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # 40 images, about 5 per class in the fit half: 99% needs 99 of each
        conformal_command.main([str(bundle), "--coverage", "0.99", "--classwise"])
    assert "need at least 99 held-out images of every class" in capsys.readouterr().err
    (bundle / "report" / "predictions.npz").unlink()
    with pytest.raises(SystemExit):
        conformal_command.main([str(bundle)])
    assert "export the bundle with its report" in capsys.readouterr().err
    assert read_manifest(bundle).prediction_set is None  # nothing written
