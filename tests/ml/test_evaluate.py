import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics as skm

from ml import evaluate
from ml.checkpoint import load_model
from ml.data import load_source, stratified_split
from ml.export import export_bundle
from ml.train import infer
from tests.ml.fakedata import IMAGE_FOLDER_CLASSES, write_image_folder
from tests.ml.fakemodels import VAL_PER_CLASS


def held_out(data_root: Path):
    dataset = load_source(data_root)
    _, val_idx = stratified_split(dataset.labels, VAL_PER_CLASS, 0)
    return dataset.subset(val_idx)


def eager_probs(ckpt_path: Path, images: np.ndarray) -> np.ndarray:
    model, ckpt = load_model(ckpt_path)
    logits = infer(model, torch.from_numpy(images), torch.tensor(ckpt["mean"]), torch.tensor(ckpt["std"]))
    return torch.softmax(logits, dim=1).double().numpy()


def test_evaluate_probs_matches_sklearn_and_is_json_ready():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, size=300)
    logits = rng.normal(size=(300, 6))
    logits[np.arange(300), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    classes = [f"c{i}" for i in range(6)]
    result = evaluate.evaluate_probs(probs, labels, classes)
    preds = probs.argmax(1)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert result["top5"] == pytest.approx(skm.top_k_accuracy_score(labels, probs, k=5))
    assert result["macro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    assert result["confusion_matrix"] == skm.confusion_matrix(labels, preds).tolist()
    _, recall, _, support = skm.precision_recall_fscore_support(labels, preds, zero_division=0)
    assert [r["recall"] for r in result["per_class"]] == pytest.approx(recall.tolist())
    assert [r["support"] for r in result["per_class"]] == support.tolist()
    assert result["nll"] == pytest.approx(skm.log_loss(labels, probs))
    json.dumps(result)  # plain Python types only


def test_evaluate_checkpoint_on_its_own_validation_split(tiny, tmp_path):
    out = tmp_path / "report"
    evaluate.main([str(tiny["ckpt"]), "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    val = held_out(tiny["data"])
    expected = eager_probs(tiny["ckpt"], val.images)
    assert report["n"] == len(IMAGE_FOLDER_CLASSES) * VAL_PER_CLASS == len(val)
    assert report["data"]["split"] == "val" and report["data"]["val_per_class"] == VAL_PER_CLASS
    assert report["accuracy"] == pytest.approx(float((expected.argmax(1) == val.labels).mean()))
    assert report["classes"] == IMAGE_FOLDER_CLASSES
    assert report["model"]["arch"] == "resnet20" and report["model"]["params"] > 0
    saved = np.load(out / "predictions.npz")
    np.testing.assert_allclose(saved["probs"], expected, atol=1e-5)
    np.testing.assert_array_equal(saved["labels"], val.labels)
    for png in ("confusion_matrix.png", "reliability.png", "misclassified.png", "training_curves.png"):
        with Image.open(out / png) as im:
            assert im.width > 300 and im.height > 300, png
    markdown = (out / "report.md").read_text()
    assert "| accuracy |" in markdown and "| cat |" in markdown


def test_splits_train_and_all_cover_the_rest(tiny, tmp_path):
    total = len(IMAGE_FOLDER_CLASSES) * 20
    evaluate.main([str(tiny["ckpt"]), "--split", "train", "--no-plots", "--out", str(tmp_path / "train")])
    evaluate.main([str(tiny["ckpt"]), "--split", "all", "--no-plots", "--out", str(tmp_path / "all")])
    train_report = json.loads((tmp_path / "train" / "report.json").read_text())
    all_report = json.loads((tmp_path / "all" / "report.json").read_text())
    assert train_report["n"] == total - len(IMAGE_FOLDER_CLASSES) * VAL_PER_CLASS
    assert all_report["n"] == total
    assert not (tmp_path / "all" / "confusion_matrix.png").exists() and all_report["figures"] == []


def test_flip_tta_averages_with_mirrored_images(tiny):
    predictor = evaluate.load_predictor(tiny["ckpt"])
    val = held_out(tiny["data"])
    plain = predictor.predict(val.images)
    mirrored = predictor.predict(val.images[:, :, :, ::-1].copy())
    np.testing.assert_allclose(predictor.predict(val.images, tta=True), 0.5 * (plain + mirrored), atol=1e-6)
    assert not np.allclose(plain, mirrored)  # the check above is not trivially true


def test_bundle_evaluates_like_its_checkpoint_on_the_recorded_split(tiny, tmp_path):
    model, ckpt = load_model(tiny["ckpt"])
    info = evaluate.member_info(ckpt, tiny["ckpt"])
    bundle = tmp_path / "bundle"
    export_bundle(
        [(model, info)], bundle, classes=ckpt["classes"], name="t", version="t-0", extra={"data": info["data"]}
    )
    evaluate.main([str(bundle), "--out", str(tmp_path / "b")])
    evaluate.main([str(tiny["ckpt"]), "--no-plots", "--out", str(tmp_path / "c")])
    from_bundle = np.load(tmp_path / "b" / "predictions.npz")
    from_ckpt = np.load(tmp_path / "c" / "predictions.npz")
    np.testing.assert_array_equal(from_bundle["labels"], from_ckpt["labels"])
    np.testing.assert_allclose(from_bundle["probs"], from_ckpt["probs"], atol=1e-5)
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["model"]["kind"] == "bundle" and report["model"]["name"] == "t"
    assert (tmp_path / "b" / "training_curves.png").is_file()  # found through the member's checkpoint path
    assert "prediction_set" not in report  # this bundle has no answer sets

    # with answer sets, the report says how often they held the true class on the evaluated images
    from ml import conformal
    from worker.runtime.manifest import read_manifest, write_manifest

    manifest = read_manifest(bundle)
    thresholds = [0.05 * (k % 4) for k in range(len(manifest.classes))]
    manifest.prediction_set = {"coverage": 0.9, "classwise": True, "threshold": None, "thresholds": thresholds}
    write_manifest(bundle, manifest)
    evaluate.main([str(bundle), "--no-plots", "--out", str(tmp_path / "d")])
    sets = json.loads((tmp_path / "d" / "report.json").read_text())["prediction_set"]
    expected = conformal.evaluate(from_bundle["probs"], from_bundle["labels"], np.asarray(thresholds))
    assert sets["fitted_coverage"] == 0.9 and sets["coverage"] == pytest.approx(expected["coverage"])
    assert sets["mean_size"] == pytest.approx(expected["mean_size"])
    assert "## Answer sets" in (tmp_path / "d" / "report.md").read_text()


def test_other_data_with_different_classes_is_refused(tiny, tmp_path, cifar10_dir, capsys):
    with pytest.raises(SystemExit):
        evaluate.main([str(tiny["ckpt"]), "--data", str(cifar10_dir), "--split", "test", "--out", str(tmp_path)])
    assert "same classes" in capsys.readouterr().err


def test_test_split_of_a_source_with_train_and_test(tiny, tmp_path):
    root = tmp_path / "tt"
    write_image_folder(root / "train")
    write_image_folder(root / "test", per_class=3, seed=5)
    evaluate.main(
        [str(tiny["ckpt"]), "--data", str(root), "--split", "test", "--no-plots", "--out", str(tmp_path / "r")]
    )
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["n"] == 3 * len(IMAGE_FOLDER_CLASSES) and report["data"]["split"] == "test"


def test_missing_model_and_missing_split_give_clear_errors(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main([str(tmp_path / "nope.pt")])
    assert "neither a checkpoint file nor a model bundle" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main([str(tiny["ckpt"]), "--val-per-class", "0"])
    assert "needs a validation split" in capsys.readouterr().err


def test_write_report_for_100_classes_without_a_model(tmp_path):
    rng = np.random.default_rng(0)
    classes = [f"class_{i}" for i in range(100)]
    labels = rng.integers(0, 100, size=600)
    logits = rng.normal(size=(600, 100))
    logits[np.arange(600), labels] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    images = rng.integers(0, 256, size=(600, 3, 32, 32), dtype=np.uint8)
    result = evaluate.evaluate_probs(probs, labels, classes)
    report = evaluate.write_report(
        tmp_path,
        result,
        probs=probs,
        labels=labels,
        images=images,
        data={"source": "synthetic", "split": "all", "n": 600},
        title="synthetic",
        command="test",
    )
    assert report["top5"] == pytest.approx(skm.top_k_accuracy_score(labels, probs, k=5, labels=np.arange(100)))
    assert report["figures"] == ["confusion_matrix.png", "reliability.png", "misclassified.png"]
    assert report["data"]["description"] == "all images of synthetic: 600 images"
    assert len(report["most_confused"]) == 10 and report["command"] == "test"
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["accuracy"] == result["accuracy"] and len(saved["per_class"]) == 100
    assert "| class_99 |" in (tmp_path / "report.md").read_text()


def test_relative_data_path_from_another_directory_falls_back_to_the_recorded_source(tiny, tmp_path):
    from ml.checkpoint import read_checkpoint, save_checkpoint

    ckpt = read_checkpoint(tiny["ckpt"])
    assert Path(ckpt["data"]["source"]).resolve() == Path(tiny["data"]).resolve()
    ckpt["config"]["data"] = "relative/path/that/does/not/resolve/here"
    moved = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(moved, {k: v for k, v in ckpt.items() if k != "format"})
    predictor = evaluate.load_predictor(moved)
    assert Path(predictor.data_spec["data"]).resolve() == Path(tiny["data"]).resolve()
    assert evaluate.member_info(ckpt, moved)["data"]["data"] == predictor.data_spec["data"]
