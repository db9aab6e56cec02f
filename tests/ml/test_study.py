"""python -m ml study: tiny studies on the generated 4-class image folder (a few seconds of CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from ml import study as st
from tests.ml.fakedata import write_image_folder

FAST = {"epochs": 2, "lr": 50.0, "width": 0.25, "batch_size": 16, "tta": 2}  # reaches 100% on the folder


def write_config(path: Path, data: Path, runs: Path, report: Path, **extra) -> Path:
    cfg = {
        "name": "tiny",
        "seeds": [0, 1],
        "runs_dir": str(runs),
        "report_dir": str(report),
        "defaults": {"data": str(data), "val_per_class": 5, "precision": "fp32"},
        "conditions": [
            {"name": "full", "trainer": "speedrun", "overrides": FAST},
            {"name": "no_bn", "trainer": "speedrun", "overrides": {**FAST, "norm": False}},
            {"name": "no_tta", "trainer": "eval", "from": "full", "tta": 0},
            {"name": "ens", "trainer": "ensemble", "of": "full"},
        ],
        "hypotheses": [
            {"name": "batch_norm", "h0": "Batch norm does not matter.", "baseline": "full", "condition": "no_bn"},
            {"name": "tta_gain", "h0": "TTA does not matter.", "baseline": "full", "condition": "no_tta"},
            {"name": "ensembling", "h0": "Ensembling does not matter.", "baseline": "full", "condition": "ens"},
        ],
        "knockout": {"condition": "full", "block": "blocks.1", "fractions": [0.25, 1.0], "images": 40},
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory):
    """One study of 2 trained conditions x 2 seeds (+ eval-only, ensemble, knock-out), run once;
    the train_one calls are counted."""
    import ml.data.folders
    import ml.speedrun

    root = tmp_path_factory.mktemp("study")
    data = write_image_folder(root / "folder", per_class=25)
    config = write_config(root / "tiny.yaml", data, root / "runs", root / "report")
    calls: list[int] = []
    real = ml.speedrun.train_one

    def counting(cfg, seed, *args, **kwargs):
        calls.append(seed)
        return real(cfg, seed, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ml.data.folders, "DEFAULT_CACHE_DIR", root / "cache")
        mp.setattr(ml.speedrun, "train_one", counting)
        st._DATA_CACHE.clear()
        study = st.load_study(config)
        report = st.run_study(study)
        first = list(calls)
        yield {"root": root, "config": config, "study": study, "report": report, "calls": calls, "first": first}


def test_every_condition_and_seed_runs_once_into_its_own_folder(tiny_study):
    assert sorted(tiny_study["first"]) == [0, 0, 1, 1]  # 2 trained conditions x 2 seeds
    runs = st.plan(tiny_study["study"])
    folders = [r.folder for rs in runs.values() for r in rs]
    assert len(set(folders)) == len(folders) == 2 * 2 + 2 + 1
    for rs in runs.values():
        for r in rs:
            res = r.result()
            with np.load(r.folder / "predictions.npz") as z:
                assert z["probs"].shape == (20, 4) and len(z["labels"]) == res["n_val"] == 20
                assert res["accuracy"] == pytest.approx(float((z["probs"].argmax(1) == z["labels"]).mean()))
    # the eval-only condition re-evaluated the very same checkpoints, with TTA 0
    for full, no_tta in zip(runs["full"], runs["no_tta"], strict=True):
        assert no_tta.result()["checkpoint"] == full.result()["checkpoint"] and no_tta.result()["tta"] == 0
        assert full.result()["tta"] == 2 and full.result()["train_s"] > 0 and full.result()["params"] > 0


def test_a_second_run_resumes_without_training(tiny_study):
    before = len(tiny_study["calls"])
    st.run_study(st.load_study(tiny_study["config"]))
    assert len(tiny_study["calls"]) == before  # every result.json was found: nothing retrained
    # a removed result is the one run that is redone
    victim = st.plan(tiny_study["study"])["no_bn"][1]
    (victim.folder / "result.json").unlink()
    st.run_study(st.load_study(tiny_study["config"]), only=["no_bn"])
    assert tiny_study["calls"][before:] == [1] and victim.done


def test_hypothesis_numbers_are_scipys_and_statsmodels(tiny_study):
    study = tiny_study["study"]
    runs = st.plan(study)
    rows = {r["name"]: r for r in st.test_hypotheses(study, runs)}
    assert set(rows) == {"batch_norm", "tta_gain", "ensembling"}
    for row in rows.values():
        base, cond = runs[row["baseline"]], runs[row["condition"]]
        probs = []
        for rs in (base, cond):
            loaded = [np.load(r.folder / "predictions.npz") for r in rs]
            probs.append(np.mean([z["probs"] for z in loaded], axis=0).argmax(1) == loaded[0]["labels"])
        a, b = probs
        if row["name"] == "ensembling":  # one model against a seeded condition: McNemar against its best seed
            best = max(base, key=lambda r: r.result()["accuracy"])
            z = np.load(best.folder / "predictions.npz")
            a = z["probs"].argmax(1) == z["labels"]
        table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
        expected = 1.0 if table[0][1] + table[1][0] == 0 else mcnemar(table, exact=True).pvalue
        assert row["mcnemar_p"] == pytest.approx(expected)
        assert row["baseline_mean"] == pytest.approx(np.mean([r.result()["accuracy"] for r in base]))
    # the ensemble has no seeds to pair: a one-sample t-test of the seeds' accuracies against it
    ens = rows["ensembling"]
    seed_accs = [r.result()["accuracy"] for r in runs[ens["baseline"]]]
    one = runs[ens["condition"]][0].result()["accuracy"]
    if np.std(seed_accs) > 0:
        assert ens["t_p"] == pytest.approx(stats.ttest_1samp(seed_accs, one).pvalue) and ens["n_seeds"] == 2
    assert ens["mcnemar_against"].startswith("the best seed")
    family = [rows[n]["mcnemar_p"] for n in ("batch_norm", "tta_gain", "ensembling")]
    holm = multipletests(family, method="holm")[1]
    assert [rows[n]["mcnemar_holm"] for n in ("batch_norm", "tta_gain", "ensembling")] == pytest.approx(list(holm))


def test_paired_tests_and_holm_against_scipy_and_statsmodels():
    base, cond = [0.90, 0.91, 0.92, 0.905, 0.915], [0.88, 0.885, 0.90, 0.89, 0.90]
    rng = np.random.default_rng(0)
    ca = rng.random(500) < 0.9
    cb = ca.copy()
    cb[rng.choice(500, 40, replace=False)] = False
    out = st.hypothesis_test(base, cond, ca, cb)
    assert out["t_p"] == pytest.approx(stats.ttest_rel(cond, base).pvalue)
    assert out["wilcoxon_p"] == pytest.approx(stats.wilcoxon(cond, base).pvalue)
    b, c = int((ca & ~cb).sum()), int((~ca & cb).sum())
    table = [[int((ca & cb).sum()), b], [c, int((~ca & ~cb).sum())]]
    assert out["mcnemar"]["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue) and out["mcnemar"]["b"] == b
    assert out["mcnemar"]["p_value"] < 1e-6  # B lost 40 images A had right, won none
    p = [0.01, None, 0.04, 0.03, 0.5]
    adjusted = st.holm(p)
    assert adjusted[1] is None
    expected = multipletests([0.01, 0.04, 0.03, 0.5], method="holm")[1]
    assert [adjusted[i] for i in (0, 2, 3, 4)] == pytest.approx(list(expected))
    assert st.hypothesis_test([0.9], [0.8], ca, cb)["t_p"] is None  # one seed: no paired test


def test_knockout_zeroes_exactly_k_channels():
    from ml.models import build_model

    model = build_model("fastnet", num_classes=4, width=0.25).eval()
    x = torch.randn(6, 3, 32, 32)
    seen = {}
    handle = st.zero_channels_hook("blocks.1", torch.tensor([0, 3, 5]))(model)
    model.blocks[2].register_forward_pre_hook(lambda _m, inp: seen.update(x=inp[0]))
    with torch.no_grad():
        knocked = model(x)
    zero = (seen["x"].abs().amax(dim=(0, 2, 3)) == 0).nonzero().flatten().tolist()
    assert zero == [0, 3, 5]  # those three channels and no other
    handle.remove()
    with torch.no_grad():
        intact = model(x)
    assert (seen["x"].abs().amax(dim=(0, 2, 3)) > 0).all() and not torch.allclose(knocked, intact)


def test_knockout_of_the_trained_model_changes_accuracy(tiny_study):
    knock = json.loads(next((tiny_study["root"] / "runs").glob("knockout-*.json")).read_text())
    assert knock["channels"] == 64 and knock["images"] == 40
    rows = {(r["fraction"], r["side"]): r for r in knock["rows"]}
    assert rows[(0.25, "lowest")]["k"] == 16 and rows[(1.0, "highest")]["k"] == 64
    # with every channel zeroed the net sees a constant: one class for all 20 images (5 per class)
    for side in ("lowest", "highest"):
        assert rows[(1.0, side)]["accuracy"] == pytest.approx(0.25)
        assert rows[(1.0, side)]["drop"] == pytest.approx(knock["intact_accuracy"] - 0.25)
    assert knock["intact_accuracy"] > 0.25
    means = np.array(knock["channel_means"])
    assert len(means) == 64 and np.all(np.isfinite(means))


def test_report_files_mention_every_hypothesis(tiny_study):
    out = tiny_study["root"] / "report"
    assert tiny_study["report"] == out / "report.md"
    for name in ("report.md", "results.csv", "runs.csv", "hypotheses.csv", "accuracy.png", "knockout.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    for name, h0 in (("batch_norm", "Batch norm"), ("tta_gain", "TTA does not"), ("ensembling", "Ensembling")):
        assert f"**{name}**" in md and h0 in md
    assert "| full |" in md and "Feature-map knock-out" in md and "python -m ml study" in md
    csv_text = (out / "hypotheses.csv").read_text()
    assert all(n in csv_text for n in ("batch_norm", "tta_gain", "ensembling"))


def test_references_transfer_checkpoints_and_dry_run(tmp_path, ml_cache, capsys):
    """A fine-tune condition starts from the same seed's checkpoint of the condition it names."""
    data = write_image_folder(tmp_path / "folder", per_class=12)
    train = {"model": "resnet20", "width": 0.25, "epochs": 1, "batch_size": 16, "lr": 0.05}
    cfg = {
        "name": "transfer",
        "seeds": [0],
        "runs_dir": str(tmp_path / "runs"),
        "report_dir": str(tmp_path / "report"),
        "defaults": {"data": str(data), "val_per_class": 3, "precision": "fp32"},
        "conditions": [
            {"name": "pre", "trainer": "train", "overrides": {**train, "classes": "cat,dog"}},
            {"name": "scratch", "trainer": "train", "overrides": {**train, "classes": "frog,ship", "train_limit": 10}},
            {
                "name": "ft",
                "trainer": "train",
                "overrides": {
                    **train,
                    "classes": "frog,ship",
                    "train_limit": 10,
                    "init_from": "{pre}",
                    "freeze": "backbone",
                },
            },
        ],
        "hypotheses": [
            {"name": "transfer", "h0": "Pretraining does not help.", "baseline": "scratch", "condition": "ft"}
        ],
        "transfer": {"conditions": ["scratch", "ft"]},
    }
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(cfg))
    st._DATA_CACHE.clear()
    st.main([str(path), "--dry-run"])
    assert "3 runs to do" in capsys.readouterr().out and not (tmp_path / "runs").exists()
    st.main([str(path)])
    runs = st.plan(st.load_study(path))
    ft = runs["ft"][0].result()
    cfg_ft = yaml.safe_load((Path(ft["run_dir"]) / "config.yaml").read_text())
    assert cfg_ft["init_from"] == runs["pre"][0].result()["checkpoint"]
    assert ft["n_val"] == runs["scratch"][0].result()["n_val"] == 6  # the vehicles' own split
    assert (tmp_path / "report" / "transfer.png").is_file()
    assert "**transfer**" in (tmp_path / "report" / "report.md").read_text()


def test_bad_configs_are_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "conditions": [{"name": "a", "trainer": "eval", "from": "b"}]}))
    with pytest.raises(ValueError, match="earlier condition"):
        st.load_study(path)
    path.write_text(yaml.safe_dump({"name": "x", "conditions": [{"name": "a", "trainer": "gpu"}]}))
    with pytest.raises(ValueError, match="trainer"):
        st.load_study(path)


def test_shipped_study_configs_parse_and_share_runs():
    abl = st.load_study("ml/configs/studies/ablation.yaml")
    cmp_ = st.load_study("ml/configs/studies/comparison.yaml")
    a, c = st.plan(abl), st.plan(cmp_)
    assert [r.folder for r in a["full"]] == [r.folder for r in c["fastnet"]]
    assert [r.folder for r in a["resnet20"]] == [r.folder for r in c["resnet20"]]
    assert len(abl.seeds) >= 3 and abl.knockout["fractions"] == [0.1, 0.25, 0.5]
    assert str(abl.report_dir).startswith("bundles/default/report/studies")
