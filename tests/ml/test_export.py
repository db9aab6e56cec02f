import json
import shlex

import numpy as np
import pytest
import torch

from ml import export
from ml.checkpoint import load_model
from ml.evaluate import member_info
from tests.ml import fakemodels
from tests.ml.fakemodels import VAL_PER_CLASS
from worker.runtime.bundle import BundleError, load_bundle, read_manifest

CLASSES = ["a", "b", "c", "d", "e"]


def trained_like(seed: int) -> torch.nn.Module:
    """A tiny ResNet with non-trivial batch-norm statistics, so eval mode differs from a fresh init."""
    return fakemodels.trained_like("resnet20", len(CLASSES), seed, scales=True, width=0.25)


MEANS = [([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]), ([0.5, 0.5, 0.5], [0.2, 0.3, 0.25])]


def eager(
    model: torch.nn.Module, images: torch.Tensor, mean, std, flip: bool, temperature: float = 1.0
) -> torch.Tensor:
    x = images.float() / 255.0
    x = (x - torch.tensor(mean)[None, :, None, None]) / torch.tensor(std)[None, :, None, None]
    with torch.no_grad():
        logits = model(x)
        if flip:  # test-time augmentation averages the logits (ml.tta), then the softmax
            logits = 0.5 * (logits + model(x.flip(3)))
    return torch.softmax(logits / temperature, dim=1)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(8, 3, 32, 32), dtype=np.uint8))


@pytest.mark.parametrize("flip_tta", [False, True])
@pytest.mark.parametrize("n_members", [1, 2])
def test_exported_module_equals_eager_softmax(tmp_path, images, flip_tta, n_members):
    models = [trained_like(seed) for seed in range(n_members)]
    members = [(m, {"arch": "resnet20", "mean": MEANS[i][0], "std": MEANS[i][1]}) for i, m in enumerate(models)]
    export.export_bundle(members, tmp_path / "b", classes=CLASSES, name="t", version="t-1", flip_tta=flip_tta)
    bundle = load_bundle(tmp_path / "b", precision="fp32")
    expected = sum(eager(m, images, *MEANS[i], flip=flip_tta) for i, m in enumerate(models)) / n_members
    got = bundle.predict(images)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert torch.allclose(got.sum(1), torch.ones(len(images)), atol=1e-5)
    assert bundle.manifest.extra["flip_tta"] is flip_tta and len(bundle.manifest.members) == n_members
    if flip_tta:  # the flip really changes the answer, so the comparison above tests it
        assert not torch.allclose(
            got, sum(eager(m, images, *MEANS[i], flip=False) for i, m in enumerate(models)) / n_members
        )


def test_tampered_module_is_refused(tmp_path):
    export.export_bundle(
        [(trained_like(0), {"mean": MEANS[0][0], "std": MEANS[0][1]})],
        tmp_path / "b",
        classes=CLASSES,
        name="t",
        version="t-1",
    )
    load_bundle(tmp_path / "b")  # intact: loads
    module = tmp_path / "b" / "model.pt"
    data = bytearray(module.read_bytes())
    data[len(data) // 2] ^= 0xFF
    module.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(tmp_path / "b", precision="fp32")


def test_export_cli_writes_bundle_report_and_manifest_metrics(tiny, tmp_path, capsys):
    a, b = (str(p) for p in tiny["ckpts"])
    out = tmp_path / "bundles" / "tiny-ens"
    argv = [a, b, "--out", str(out), "--version", "tiny-ens-1", "--flip-tta"]
    export.main(argv)
    manifest = read_manifest(out)
    assert manifest.name == "tiny-ens" and manifest.version == "tiny-ens-1"
    assert manifest.command == shlex.join(["python", "-m", "ml", "export", *argv])
    report = json.loads((out / "report" / "report.json").read_text())
    assert manifest.metrics["accuracy"] == report["accuracy"] and manifest.metrics["n"] == 4 * VAL_PER_CLASS
    assert set(manifest.metrics) >= {"accuracy", "top4", "macro_f1", "ece", "nll", "n", "split"}
    assert "validation split (5 per class, seed 0)" in manifest.metrics["split"]
    for member, ckpt in zip(manifest.members, (a, b), strict=True):
        assert member["arch"] == "resnet20" and member["checkpoint"] == ckpt
        assert member["params"] > 0 and member["macs"] > 0 and member["model_options"]["width"] == 0.25
        assert "val_acc" in member["metrics"]
    for f in ("report.md", "confusion_matrix.png", "reliability.png", "misclassified.png", "training_curves.png"):
        assert (out / "report" / f).is_file(), f
    # the report is of the exported module: the eager members, flip-averaged, give the same probabilities
    loaded = [load_model(p) for p in (a, b)]
    for model, _ in loaded:  # as model.pt stores them (--weights float16, the default)
        export.round_to_storage(model, "float16")
    from ml.evaluate import load_eval_data

    data, _ = load_eval_data(member_info(loaded[0][1], a)["data"], "val")
    t = manifest.calibration["temperature"]  # fitted on half the validation split, applied inside the module
    expected = sum(eager(m, torch.from_numpy(data.images), c["mean"], c["std"], True, t) for m, c in loaded) / 2
    np.testing.assert_allclose(np.load(out / "report" / "predictions.npz")["probs"], expected.numpy(), atol=1e-5)
    # a second export to the same folder needs --overwrite
    with pytest.raises(SystemExit):
        export.main([a, "--out", str(out)])
    assert "--overwrite" in capsys.readouterr().err
    export.main([a, "--out", str(out), "--overwrite", "--no-report"])
    assert read_manifest(out).metrics == {} and not (out / "report").exists()


def test_export_calibrates_sets_thresholds_and_reexports_from_its_members(tiny, tmp_path, capsys):
    """--tta 2 --save-members: temperature, uncertain and OOD thresholds fitted on one half of the
    validation split and reported on the other; members/ re-exports to the same probabilities."""
    from ml import calibration, conformal, ood
    from ml.checkpoint import read_checkpoint
    from ml.conformal import command as conformal_command
    from ml.evaluate import load_eval_data

    a, b = (str(p) for p in tiny["ckpts"])
    out = tmp_path / "bundles" / "tiny-cal"
    export.main(
        [a, b, "--out", str(out), "--version", "v1", "--tta", "2", "--save-members", "--ood-per-kind", "8"]
        + ["--set-coverage", "0.8"]  # 12 fit images hold a 0.8 set (0.95 needs 19)
    )
    manifest = read_manifest(out)
    assert manifest.extra["tta"] == 2
    cal, unc, o = manifest.calibration, manifest.uncertain, manifest.ood
    assert cal["fit_on"]["n"] == 12 and cal["reported_on"]["n"] == 8  # 5 per class: 3 fit, 2 report
    assert 0.05 <= cal["temperature"] <= 20 and cal["temperature"] != 1.0
    assert 0 <= unc["threshold"] <= 1 and 0 <= unc["share_flagged"] <= 1 and "below the threshold" in unc["meaning"]
    assert 0 <= o["auroc"] <= 1 and set(o["generated_flagged_by_kind"]) == set(ood.KINDS)
    assert manifest.explain["layers"] == ["layers.8", "layers.8"]  # ResNet-20's last residual block
    for f in (
        "calibration.md",
        "calibration.json",
        "reliability_calibrated.png",
        "reliability_uncalibrated.png",
        "ood_scores.png",
    ):
        assert (out / "report" / f).is_file(), f

    # the numbers are recomputable from the module: temperature minimises NLL on the fit half, and the
    # report-half ECE/NLL and threshold statistics are those of the module's own probabilities
    bundle = load_bundle(out, precision="fp32")
    data, _ = load_eval_data(manifest.members[0]["data"], "val")
    scores = bundle.module.scores(torch.from_numpy(data.images))
    logits = scores["member_logits"].double().numpy()
    fit, rep = calibration.half_split(data.labels, 0)
    nll = lambda t, idx: calibration.metrics.nll(calibration.ensemble_probs(logits[:, idx], t), data.labels[idx])  # noqa: E731
    t = cal["temperature"]
    assert nll(t, fit) <= min(nll(t * 1.05, fit), nll(t / 1.05, fit), nll(1.0, fit)) + 1e-9
    assert cal["after"]["nll"] == pytest.approx(nll(t, rep), abs=1e-6)
    assert cal["before"]["nll"] == pytest.approx(nll(1.0, rep), abs=1e-6)
    probs = bundle.predict(torch.from_numpy(data.images)).double().numpy()
    np.testing.assert_allclose(probs, calibration.ensemble_probs(logits, t), atol=1e-5)
    stats = calibration.selective(probs[rep], data.labels[rep], unc["threshold"])
    assert stats["share_flagged"] == pytest.approx(unc["share_flagged"])
    gen, _ = ood.generate(8, seed=1)
    gen_scores = bundle.module.scores(torch.from_numpy(gen))["ood_score"].double().numpy()
    assert o["generated_flagged"] == pytest.approx(float((gen_scores > o["threshold"]).mean()))
    assert o["auroc"] == pytest.approx(ood.auroc(scores["ood_score"].double().numpy()[rep], gen_scores), abs=1e-6)
    # the prediction sets: fitted on the fit half of the module's probabilities, measured on the report half
    ps = manifest.prediction_set
    assert ps["coverage"] == 0.8 and ps["n_fit"] == 12
    assert ps["threshold"] == pytest.approx(conformal.fit_threshold(probs[fit], data.labels[fit], 0.8), abs=1e-5)
    measured = conformal.evaluate(probs[rep], data.labels[rep], ps["threshold"])
    assert ps["measured_coverage"] == pytest.approx(measured["coverage"]) and ps["mean_size"] == pytest.approx(
        measured["mean_size"]
    )
    assert "## Prediction sets: 80% coverage" in (out / "report" / "calibration.md").read_text()
    assert json.loads((out / "report" / "calibration.json").read_text())["prediction_set"] == ps
    # python -m ml conformal refits them from the report alone, to the same threshold
    conformal_command.main([str(out), "--coverage", "0.8", "--precisions", "fp32", "--tta-levels", "0,1"])
    refit = read_manifest(out).prediction_set
    assert refit["threshold"] == pytest.approx(ps["threshold"], abs=1e-6)
    # --precisions: the bundle predicts its validation split again through the worker's loader
    assert refit["by_precision"]["fp32"]["coverage"] == pytest.approx(ps["measured_coverage"])
    assert set(refit["by_precision"]) == {"fp32", "fp32 at TTA level 0", "fp32 at TTA level 1"}
    level0 = load_bundle(out, precision="fp32", tta=0).predict(torch.from_numpy(data.images)).double().numpy()
    expected = conformal.evaluate(level0[rep], data.labels[rep], np.asarray(refit["thresholds"]))
    assert refit["by_precision"]["fp32 at TTA level 0"]["coverage"] == pytest.approx(expected["coverage"])
    assert "| fp32 |" in (out / "report" / "calibration.md").read_text()
    conformal_command.main([str(out), "--coverage", "0.5", "--classwise"])  # 3 fit images per class hold a 50% set
    classwise = read_manifest(out).prediction_set
    assert classwise["classwise"] and len(classwise["thresholds"]) == len(manifest.classes)
    assert (out / "report" / "calibration.md").read_text().count("## Prediction sets") == 1

    # members/: half precision, no optimiser; export accepts them back, same probabilities to ~1e-3
    files = sorted((out / "members").glob("*.pt"))
    assert [m["member_file"] for m in manifest.members] == [f"members/{f.name}" for f in files] and len(files) == 2
    saved = read_checkpoint(files[0])
    assert "optimizer" not in saved and saved["storage"] == "float16" and "metrics_csv" in saved
    assert all(v.dtype == torch.float16 for v in saved["state_dict"].values() if v.is_floating_point())
    again = tmp_path / "bundles" / "again"
    export.main([*map(str, files), "--out", str(again), "--tta", "2", "--ood-per-kind", "8"])
    re_probs = load_bundle(again, precision="fp32").predict(torch.from_numpy(data.images)).numpy()
    # the module already held the half-precision weights the member files store: the same numbers
    np.testing.assert_allclose(re_probs, probs, atol=1e-5)
    assert read_manifest(again).calibration["temperature"] == pytest.approx(t, rel=1e-4)
    assert (again / "report" / "training_curves.png").is_file()  # the curves travel inside the member files
    # in place: re-exporting a bundle from its own members/ with --overwrite; the study reports
    # written beside its report (python -m ml study) survive, with and without a new report
    study = out / "report" / "studies" / "ablation"
    study.mkdir(parents=True)
    (study / "report.md").write_text("# Study: ablation\n")
    (out / "report" / "TRAINING.md").write_text("# How it was trained\n")
    (out / "report" / "training-log.txt").write_text("epoch 1 ...\n")
    export.main([*map(str, files), "--out", str(out), "--tta", "1", "--save-members", "--overwrite", "--no-report"])
    assert read_manifest(out).extra["tta"] == 1 and len(list((out / "members").glob("*.pt"))) == 2
    assert (study / "report.md").read_text() == "# Study: ablation\n"
    assert (out / "report" / "training-log.txt").read_text() == "epoch 1 ...\n"
    # without a report, the old evaluation (of another module) does not stay behind
    assert not (out / "report" / "report.json").exists() and not list((out / "report").glob("*.png"))
    export.main([*map(str, files), "--out", str(out), "--tta", "1", "--overwrite", "--ood-per-kind", "8"])
    assert (study / "report.md").read_text() == "# Study: ablation\n" and (out / "report" / "report.json").is_file()
    assert (out / "report" / "TRAINING.md").read_text() == "# How it was trained\n"
    assert (out / "report" / "training-log.txt").is_file() and (out / "report" / "precision.json").is_file()
    assert not list(out.parent.glob("report-*"))  # nothing left aside


def test_module_stores_half_precision_weights_that_the_runtime_converts(tiny, tmp_path, images):
    """--weights float16 (the default) halves model.pt; the runtime converts the weights to fp32 or
    bf16 on loading, and fp32 gives what the eager members give once rounded to half precision."""
    a = str(tiny["ckpts"][0])
    half, full = tmp_path / "half", tmp_path / "full"
    export.main([a, "--out", str(half), "--flip-tta", "--no-report"])
    export.main([a, "--out", str(full), "--flip-tta", "--no-report", "--weights", "float32"])
    assert read_manifest(half).weights == "float16" and read_manifest(full).weights is None
    saved = torch.jit.load(str(half / "model.pt"))
    dtypes = {p.dtype for p in saved.parameters()}
    assert dtypes == {torch.float16}
    model, ckpt = load_model(a)
    floats = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    saved_bytes = (full / "model.pt").stat().st_size - (half / "model.pt").stat().st_size
    assert saved_bytes >= 0.9 * 2 * floats  # two bytes fewer per weight (this net is small beside its code)
    export.round_to_storage(model, "float16")
    expected = eager(model, images, ckpt["mean"], ckpt["std"], flip=True)
    bundle = load_bundle(half, precision="fp32")
    assert {p.dtype for p in bundle.module.parameters()} == {torch.float32}
    torch.testing.assert_close(bundle.predict(images), expected, atol=1e-5, rtol=0)
    full_probs = load_bundle(full, precision="fp32").predict(images)
    assert not torch.equal(bundle.predict(images), full_probs)  # the rounding is real ...
    torch.testing.assert_close(bundle.predict(images), full_probs, atol=2e-3, rtol=0)  # ... and small
    bf16 = load_bundle(half, precision="bf16")
    assert bf16.precision == "bf16" and torch.allclose(bf16.predict(images).sum(1), torch.ones(len(images)), atol=1e-3)


def test_weights_that_do_not_fit_half_precision_are_refused() -> None:
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = 1e6
    with pytest.raises(ValueError, match="weight does not fit half precision: export with --weights float32"):
        export.round_to_storage(model, "float16")
    with pytest.raises(ValueError, match="weights must be one of"):
        export.round_to_storage(model, "bfloat16")
    ok = torch.nn.Linear(2, 2)
    before = ok.weight.detach().clone()
    export.round_to_storage(ok, "float16")
    assert torch.equal(ok.weight, before.half().float())


def test_saved_members_name_a_distilled_net(tiny, tmp_path):
    """A member trained with a teacher (``ml speedrun teacher=...``) is saved as ``...-seedN-distilled``,
    so it is not taken for the plain run of the same seed."""
    from ml.checkpoint import read_checkpoint, save_checkpoint

    plain, other = tiny["ckpts"]
    student = read_checkpoint(other)
    student["config"] = {**student["config"], "teacher": "bundles/default/members"}
    save_checkpoint(tmp_path / "student.pt", student)
    out = tmp_path / "bundle"
    export.main([str(plain), str(tmp_path / "student.pt"), "--out", str(out), "--save-members", "--no-report"])
    names = [m["member_file"] for m in read_manifest(out).members]
    assert names == ["members/01-resnet20-seed0.pt", "members/02-resnet20-seed1-distilled.pt"]
    assert sorted(p.name for p in (out / "members").iterdir()) == [n.split("/")[1] for n in names]


def test_flip_tta_is_tta_1_and_conflicts_with_another_level(tiny, tmp_path, capsys):
    a = str(tiny["ckpts"][0])
    export.main([a, "--out", str(tmp_path / "f"), "--flip-tta", "--no-report"])
    assert read_manifest(tmp_path / "f").extra == {**read_manifest(tmp_path / "f").extra, "tta": 1, "flip_tta": True}
    with pytest.raises(SystemExit):
        export.main([a, "--out", str(tmp_path / "g"), "--flip-tta", "--tta", "2", "--no-report"])
    assert "--tta 1" in capsys.readouterr().err


def test_max_tta_exports_a_module_at_one_level_that_switches_up_to_another(tmp_path, images):
    """export_bundle(tta=1, max_tta=2): the module runs at level 1 with level 1's temperature and
    switches to level 2 with level 2's, exactly as bundles exported at those levels."""
    models = [trained_like(seed) for seed in range(2)]
    members = [(m, {"arch": "resnet20", "mean": MEANS[i][0], "std": MEANS[i][1]}) for i, m in enumerate(models)]
    temps = [0.7, 1.3, 2.1]
    common = {"classes": CLASSES, "name": "t", "version": "t-1"}
    export.export_bundle(members, tmp_path / "b", tta=1, max_tta=2, temperatures=temps, **common)
    manifest = read_manifest(tmp_path / "b")
    assert manifest.extra["tta"] == 1 and manifest.extra["tta_levels"] == [0, 1, 2] and manifest.extra["flip_tta"]
    for level in (1, 2):
        export.export_bundle(members, tmp_path / f"l{level}", tta=level, temperature=temps[level], **common)
        expected = load_bundle(tmp_path / f"l{level}", precision="fp32").predict(images)
        loaded = load_bundle(tmp_path / "b", precision="fp32", tta=None if level == 1 else level)
        assert loaded.tta == level
        torch.testing.assert_close(loaded.predict(images), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="max_tta 0 is below the module's TTA level 1"):
        export.export_bundle(members, tmp_path / "c", tta=1, max_tta=0, **common)


def test_max_tta_below_the_module_level_is_a_usage_error(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit):
        export.main(
            [str(tiny["ckpts"][0]), "--out", str(tmp_path / "m"), "--tta", "2", "--max-tta", "1", "--no-report"]
        )
    assert "--max-tta 1 is below the module's TTA level 2" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_classwise_sets_with_too_few_validation_images_stop_the_export_with_a_message(tiny, tmp_path, capsys):
    out = tmp_path / "cw"
    with pytest.raises(SystemExit) as stopped:
        export.main([str(tiny["ckpts"][0]), "--out", str(out), "--set-classwise", "--ood-per-kind", "4"])
    assert "class-wise sets at 95% need at least 19 held-out images of every class" in str(stopped.value)
    assert not out.exists()  # nothing half-written
    # with a coverage the 3 fit images per class can hold, the export writes one threshold per class
    export.main(
        [str(tiny["ckpts"][0]), "--out", str(out), "--set-classwise", "--set-coverage", "0.5", "--ood-per-kind", "4"]
    )
    ps = read_manifest(out).prediction_set
    assert ps["classwise"] and ps["threshold"] is None and len(ps["thresholds"]) == len(read_manifest(out).classes)
    assert "one threshold per class" in capsys.readouterr().out


def test_runtime_switches_to_a_lower_tta_level_with_its_own_temperature(tmp_path, images, monkeypatch):
    """A bundle exported at level 2 with one temperature per level, loaded with tta=0 or 1, gives
    exactly what a bundle exported at that level with that temperature gives."""
    models = [trained_like(seed) for seed in range(2)]
    members = [(m, {"arch": "resnet20", "mean": MEANS[i][0], "std": MEANS[i][1]}) for i, m in enumerate(models)]
    temps = [0.7, 1.3, 2.1]
    export.export_bundle(members, tmp_path / "b", classes=CLASSES, name="t", version="t-1", tta=2, temperatures=temps)
    assert read_manifest(tmp_path / "b").extra["tta_levels"] == [0, 1, 2]
    default = load_bundle(tmp_path / "b", precision="fp32")
    assert default.tta == 2
    for level in (0, 1):
        export.export_bundle(
            members,
            tmp_path / f"l{level}",
            classes=CLASSES,
            name="t",
            version="t-1",
            tta=level,
            temperature=temps[level],
        )
        switched = load_bundle(tmp_path / "b", precision="fp32", tta=level)
        assert switched.tta == level
        expected = load_bundle(tmp_path / f"l{level}", precision="fp32").predict(images)
        torch.testing.assert_close(switched.predict(images), expected, atol=1e-6, rtol=0)
        assert not torch.allclose(switched.predict(images), default.predict(images), atol=1e-4)
    with pytest.raises(BundleError, match="runs at TTA level 2 and can switch to 0, 1, 2, not 3"):
        load_bundle(tmp_path / "b", tta=3)
    with pytest.raises(BundleError, match="can switch to 0, not 1"):
        load_bundle(tmp_path / "l0", tta=1)  # a level-0 bundle has no views to add

    from worker.runtime.predictor import Predictor

    monkeypatch.setenv("WORKER_TTA", "1")
    assert Predictor(tmp_path / "b", device="cpu").load().tta == 1
    monkeypatch.setenv("WORKER_TTA", "one")
    with pytest.raises(ValueError, match="WORKER_TTA must be a TTA level"):
        Predictor(tmp_path / "b", device="cpu").load()
