import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ml import ensemble, evaluate
from tests.ml.fakemodels import VAL_PER_CLASS


def test_mean_probs_averages_members():
    p1 = np.array([[0.6, 0.4], [0.2, 0.8]])
    p2 = np.array([[0.2, 0.8], [0.4, 0.6]])
    np.testing.assert_allclose(ensemble.mean_probs([p1, p2]), [[0.4, 0.6], [0.3, 0.7]])
    with pytest.raises(ValueError, match="shape"):
        ensemble.mean_probs([p1, p1[:1]])


def test_majority_vote_breaks_ties_by_mean_probability():
    # image 0: votes 2 x class 0, 1 x class 1 -> class 0 although class 1 has the higher mean probability
    # image 1: votes 1/1/1 for classes 0, 1, 2 -> tie; class 2 has the highest mean probability
    # image 2: votes 2 x class 1 against 2 x class 2 (four members) -> the tied class with more mean probability
    members = [
        np.array([[0.50, 0.45, 0.05], [0.40, 0.30, 0.30], [0.1, 0.5, 0.4]]),
        np.array([[0.50, 0.45, 0.05], [0.30, 0.40, 0.30], [0.1, 0.5, 0.4]]),
        np.array([[0.01, 0.98, 0.01], [0.25, 0.25, 0.50], [0.0, 0.1, 0.9]]),
        np.array([[0.40, 0.30, 0.30], [0.40, 0.30, 0.30], [0.0, 0.3, 0.7]]),
    ]
    three = ensemble.majority_vote(members[:3])
    assert three[0] == 0 and three[1] == 2
    assert ensemble.mean_probs(members[:3])[0].argmax() == 1  # the vote really differs from the mean here
    four = ensemble.majority_vote(members)
    assert four[2] == 2  # votes 1,1,2,2; mean probability of class 2 (0.6) beats class 1 (0.35)


def test_ensemble_cli_reports_mean_vote_and_members(tiny, tmp_path):
    a, b = (str(p) for p in tiny["ckpts"])
    ensemble.main([a, b, "--out", str(tmp_path / "ens")])
    report = json.loads((tmp_path / "ens" / "report.json").read_text())
    members = [evaluate.load_predictor(p) for p in (a, b)]
    data, _ = evaluate.load_eval_data(members[0].data_spec, "val")
    probs = [m.predict(data.images) for m in members]
    mean = (probs[0] + probs[1]) / 2
    assert report["n"] == 4 * VAL_PER_CLASS
    assert report["accuracy"] == pytest.approx(float((mean.argmax(1) == data.labels).mean()))
    np.testing.assert_allclose(np.load(tmp_path / "ens" / "predictions.npz")["probs"], mean, atol=1e-6)
    ens = report["ensemble"]
    assert [m["accuracy"] for m in ens["members"]] == pytest.approx(
        [float((p.argmax(1) == data.labels).mean()) for p in probs]
    )
    vote = ensemble.majority_vote(probs)
    assert ens["majority_vote"]["accuracy"] == pytest.approx(float((vote == data.labels).mean()))
    assert ens["warnings"] == []  # both members trained on the same split
    assert (tmp_path / "ens" / "confusion_matrix.png").is_file() and "## Ensemble members" in (
        tmp_path / "ens" / "report.md"
    ).read_text()


def test_ensemble_needs_two_models(tiny, capsys):
    with pytest.raises(SystemExit):
        ensemble.main([str(tiny["ckpts"][0])])
    assert "at least two" in capsys.readouterr().err


def test_members_are_named_by_their_run_folder_or_their_own_file_name(tiny, tmp_path):
    run_checkpoint = Path(tiny["ckpts"][0])
    assert run_checkpoint.name in ("best.pt", "checkpoint.pt")
    assert evaluate.load_predictor(run_checkpoint).name == run_checkpoint.parent.name
    named = tmp_path / "members" / "01-fastnet-seed2.pt"  # as in a bundle's members/ folder
    named.parent.mkdir()
    shutil.copy(run_checkpoint, named)
    assert evaluate.load_predictor(named).name == "01-fastnet-seed2"
