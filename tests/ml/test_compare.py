import json
from math import comb

import numpy as np
import pytest

from ml import compare, evaluate
from tests.ml.fakemodels import VAL_PER_CLASS


def paired(b: int, c: int, both_right: int = 50, both_wrong: int = 10):
    """Per-image correctness of A and B with b images only A gets right and c only B gets right."""
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    bb = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return np.array(a), np.array(bb)


def exact_two_sided(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (1, 7, 0.0703125),  # by hand: 2 * (1 + 8) / 256
        (0, 5, 0.0625),  # 2 / 32
        (4, 4, 1.0),
        (0, 0, 1.0),  # no discordant images: no evidence either way
        (10, 25, exact_two_sided(10, 25)),
        (30, 12, exact_two_sided(30, 12)),
    ],
)
def test_mcnemar_exact_against_hand_computation(b, c, expected):
    a, bb = paired(b, c)
    result = compare.mcnemar_exact(a, bb)
    assert (result["b"], result["c"], result["discordant"]) == (b, c, b + c)
    assert result["both_right"] == 50 and result["both_wrong"] == 10 and result["n"] == b + c + 60
    assert result["p_value"] == pytest.approx(expected, rel=1e-9)


# p-values printed by statsmodels 0.15.0, mcnemar([[50, b], [c, 10]], exact=True).pvalue
STATSMODELS = {
    (1, 7): 0.0703125,
    (0, 5): 0.0625,
    (4, 4): 1.0,
    (10, 25): 0.016673847800120715,
    (30, 12): 0.007915897334896727,
}


@pytest.mark.parametrize(("b", "c"), sorted(STATSMODELS))
def test_mcnemar_matches_statsmodels_values(b, c):
    assert compare.mcnemar_exact(*paired(b, c))["p_value"] == pytest.approx(STATSMODELS[(b, c)], rel=1e-12)


def test_mcnemar_refuses_unpaired_input():
    with pytest.raises(ValueError, match="paired"):
        compare.mcnemar_exact([True, False], [True])


def test_bootstrap_is_seeded_paired_and_sensible():
    rng = np.random.default_rng(0)
    a = rng.random(2000) < 0.80
    b = a.copy()
    flip = rng.choice(2000, size=60, replace=False)
    b[flip] = True  # B is right everywhere A is, plus some: a strictly positive paired difference
    r1 = compare.bootstrap_ci(a, b, n_boot=2000, seed=3)
    r2 = compare.bootstrap_ci(a, b, n_boot=2000, seed=3)
    assert r1 == r2
    assert r1["accuracy_a"] == pytest.approx(a.mean()) and r1["difference"] == pytest.approx(b.mean() - a.mean())
    lo, hi = r1["ci_a"]
    assert lo < a.mean() < hi
    # the width is close to the normal approximation 2 * 1.96 * sqrt(p (1 - p) / n)
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(a.mean() * (1 - a.mean()) / 2000), rel=0.15)
    # paired: B never loses an image, so no resample can show B - A < 0
    assert r1["ci_difference"][0] > 0.0
    same = compare.bootstrap_ci(a, a, n_boot=500)
    assert same["ci_difference"] == [0.0, 0.0]


def test_mean_std_and_format():
    assert compare.mean_std([0.9, 0.92, 0.94]) == pytest.approx((0.92, 0.02))
    assert compare.mean_std([0.5]) == (0.5, 0.0)
    assert compare.format_mean_std([0.9, 0.92, 0.94]) == "92.00 ± 2.00 (n=3)"
    with pytest.raises(ValueError):
        compare.mean_std([])


def test_verdict_sentence_names_the_better_model_and_reads_the_p_value():
    boot = {"difference": 0.012, "ci_difference": [0.004, 0.020], "level": 0.95, "accuracy_a": 0.9}
    test = {"p_value": 0.003, "discordant": 50}
    sentence = compare.verdict("A", "B", boot, test)
    assert sentence.startswith("B is more accurate than A by 1.20 points (95% CI 0.40 to 2.00)")
    assert "p = 0.003" in sentence and "unlikely to be chance" in sentence
    worse = compare.verdict(
        "A", "B", {**boot, "difference": -0.012, "ci_difference": [-0.02, 0.001]}, {**test, "p_value": 0.2}
    )
    assert worse.startswith("A is more accurate than B by 1.20 points (95% CI -0.10 to 2.00)")
    assert "could well be chance" in worse


def test_compare_two_checkpoints_and_their_saved_predictions(tiny, tmp_path, capsys):
    a, b = (str(p) for p in tiny["ckpts"])
    compare.main([a, b, "--n-boot", "500", "--out", str(tmp_path / "models")])
    result = json.loads((tmp_path / "models" / "compare.json").read_text())
    assert result["mcnemar"]["n"] == 4 * VAL_PER_CLASS
    assert result["data"]["split"] == "val"
    assert result["summary"] in capsys.readouterr().out
    # the same comparison from prediction files written by evaluate
    for name, ckpt in (("a", a), ("b", b)):
        evaluate.main([ckpt, "--no-plots", "--out", str(tmp_path / name)])
    compare.main(
        [
            str(tmp_path / "a" / "predictions.npz"),
            str(tmp_path / "b" / "predictions.npz"),
            "--n-boot",
            "500",
            "--out",
            str(tmp_path / "files"),
        ]
    )
    from_files = json.loads((tmp_path / "files" / "compare.json").read_text())
    assert from_files["mcnemar"] == result["mcnemar"]
    assert (
        from_files["a"]["accuracy"] == result["a"]["accuracy"]
        and from_files["ci_difference"] == result["ci_difference"]
    )


def test_prediction_files_on_different_images_are_refused(tiny, tmp_path, capsys):
    a = str(tiny["ckpts"][0])
    evaluate.main([a, "--no-plots", "--out", str(tmp_path / "val")])
    evaluate.main([a, "--no-plots", "--split", "all", "--out", str(tmp_path / "all")])
    with pytest.raises(SystemExit):
        compare.main([str(tmp_path / "val" / "predictions.npz"), str(tmp_path / "all" / "predictions.npz")])
    assert "not on the same images" in capsys.readouterr().err
