"""worker/runtime/explain.py: the worker's Grad-CAM equals Captum's on the eager model; members,
agreement, thresholds from the manifest; a bundle without explain still predicts."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from ml import conformal, export, torchscript
from ml.models import build_model
from worker.runtime import pictures
from worker.runtime.bundle import DEFAULT_MODULE_FILE, Manifest, sha256_file, write_manifest
from worker.runtime.explain import predict_explained, supports_explain
from worker.runtime.predictor import Predictor

captum_attr = pytest.importorskip("captum.attr")

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def members(seeds=(0, 1), arch="fastnet", **options):
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = build_model(arch, num_classes=len(CLASSES), **(options or {"width": 0.125})).eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.bias.data.normal_(0, 0.1)
        out.append(model)
    return out


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8) for _ in range(3)]


@pytest.fixture(scope="module")
def ensemble_bundle(tmp_path_factory):
    models = members()
    out = tmp_path_factory.mktemp("explain") / "b"
    export.export_bundle(
        [(m, {"arch": "fastnet", "mean": MEAN, "std": STD}) for m in models],
        out,
        classes=CLASSES,
        name="t",
        version="t-1",
        tta=2,
        temperature=1.3,
        superclasses={
            c: ("vehicle" if c in ("airplane", "automobile", "ship", "truck") else "animal") for c in CLASSES
        },
        manifest_fields={
            "uncertain": {"threshold": 0.5},
            "ood": {"threshold": 0.0},
            "prediction_set": {"threshold": 0.1022, "coverage": 0.9},
        },
    )
    return out, models


def captum(model, images: list[np.ndarray], targets: list[int]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).float()
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1) * 255) / (torch.tensor(STD).view(1, 3, 1, 1) * 255)
    layer = model.get_submodule(model.cam_layer)
    return captum_attr.LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True)[:, 0]


def test_worker_heatmaps_equal_captum_layer_gradcam(ensemble_bundle, images):
    path, models = ensemble_bundle
    predictor = Predictor(path, "cpu")
    assert supports_explain(predictor)
    results = predict_explained(predictor, images, top_k=5)
    assert [r.predictions for r in results] == predictor.predict(images, top_k=5)
    for rank in range(5):
        targets = [CLASSES.index(list(r.heatmaps)[rank]) for r in results]
        expected = sum(captum(m, images, targets) for m in models) / len(models)
        got = torch.from_numpy(np.stack([list(r.heatmaps.values())[rank] for r in results]))
        assert got.shape == (3, 7, 7) and expected.abs().max() > 0
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert list(results[0].heatmaps) == [label for label, _ in results[0].predictions]  # maps of the top-5, best first


def test_members_agreement_thresholds_and_superclass(ensemble_bundle, images):
    path, _ = ensemble_bundle
    predictor = Predictor(path, "cpu")
    results = predict_explained(predictor, images, top_k=3)
    scores = predictor.load().module.scores(torch.from_numpy(np.stack(images)))
    for i, r in enumerate(results):
        member_top = scores["member_probs"][:, i].max(dim=1)
        assert [m["label"] for m in r.members] == [CLASSES[j] for j in member_top.indices.tolist()]
        assert [m["probability"] for m in r.members] == pytest.approx(member_top.values.tolist())
        assert r.agree == sum(m["label"] == r.predictions[0][0] for m in r.members)
        assert r.ood_score == pytest.approx(float(scores["ood_score"][i]), abs=1e-5)
        assert r.uncertain is (r.predictions[0][1] < 0.5) and r.ood is (r.ood_score > 0.0)
        assert r.superclass == (
            "vehicle" if r.predictions[0][0] in ("airplane", "automobile", "ship", "truck") else "animal"
        )
        assert r.layer == "blocks.1" and r.num_classes == 10
        np.testing.assert_array_equal(r.model_input, images[i])
        # the prediction set is ml.conformal's rule on the module's calibrated probabilities
        assert r.prediction_set == conformal.labels_in_set(scores["probs"][i].double().numpy(), 0.1022, CLASSES)
        assert r.prediction_set[0] == r.predictions[0][0] and r.set_coverage == 0.9
    sizes = [len(r.prediction_set) for r in results]  # near-uniform untrained members: a set of several, too
    assert max(sizes) > 1 and min(sizes) < len(CLASSES)


def test_prediction_sets_take_one_threshold_per_class_or_one_for_all():
    from worker.runtime.explain import _prediction_set
    from worker.runtime.manifest import set_thresholds as _set_thresholds

    classes = ["cat", "dog", "frog"]
    assert _set_thresholds({"thresholds": [0.5, 0.1, 0.2]}, 3) == [0.5, 0.1, 0.2]
    assert (
        _set_thresholds({"threshold": 0.25, "thresholds": [0.25]}, 3) == [0.25] * 3
    )  # wrong length: the one threshold
    assert _set_thresholds({"threshold": 0.25}, 3) == [0.25] * 3
    assert _set_thresholds(None, 3) is None and _set_thresholds({"thresholds": ["x", 1, 2]}, 3) is None
    probs = torch.tensor([0.45, 0.35, 0.2])
    order = torch.argsort(probs, descending=True)
    assert _prediction_set(probs, order, [0.5, 0.1, 0.2], classes, 0) == ["cat", "dog", "frog"]  # cat: the top class
    assert _prediction_set(probs, order, [0.5, 0.4, 0.3], classes, 0) == ["cat"]
    tied = torch.tensor([0.4, 0.4, 0.2])  # a tie: the answer's top class comes first, whichever it is
    assert _prediction_set(tied, torch.argsort(tied, descending=True), [0.3, 0.5, 0.5], classes, 1) == ["dog", "cat"]
    for thresholds in ([0.3, 0.3, 0.3], [0.9, 0.3, 0.05]):
        assert _prediction_set(probs, order, thresholds, classes, 0) == conformal.labels_in_set(
            probs.double().numpy(), thresholds, classes
        )


def test_bundle_without_explain_still_predicts(tmp_path, images):
    """An old bundle (forward only): the same predictions, and every explanation field None."""

    class OldStyle(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.model((images.float() - 127.5) / 64.0), dim=1)

    out = tmp_path / "old"
    out.mkdir()
    torchscript.script(OldStyle(build_model("resnet20", num_classes=10, width=0.25).eval())).save(
        str(out / DEFAULT_MODULE_FILE)
    )
    write_manifest(
        out,
        Manifest(
            name="old",
            version="old-1",
            classes=CLASSES,
            input_size=[32, 32],
            mean=MEAN,
            std=STD,
            members=[{"arch": "resnet20"}],
            metrics={},
            sha256=sha256_file(out / DEFAULT_MODULE_FILE),
            created_at="2026-01-01T00:00:00+00:00",
            command="test",
        ),
    )
    predictor = Predictor(out, "cpu")
    assert not supports_explain(predictor)
    results = predict_explained(predictor, images, top_k=5)
    assert [r.predictions for r in results] == predictor.predict(images, top_k=5)
    assert all(
        r.heatmaps is None
        and r.members is None
        and r.ood_score is None
        and r.uncertain is None
        and r.prediction_set is None
        for r in results
    )


def test_pictures_are_pngs_of_the_right_size_and_colours():
    heat = np.zeros((7, 7))
    heat[2:5, 2:5] = 2.0  # a plateau, so bilinear enlarging keeps its colour at the centre
    im = Image.open(io.BytesIO(pictures.heatmap_png(heat, size=64)))
    assert im.format == "PNG" and im.size == (64, 64)
    arr = np.asarray(im.convert("RGB"))
    assert tuple(arr[32, 32]) == tuple(pictures.colourise(np.array(1.0)))  # the peak gets the top colour
    assert tuple(arr[0, 0]) == tuple(pictures.colourise(np.array(0.0)))
    src = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(pictures.model_input_png(src))).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(back, src)  # lossless: exactly what the model saw


def test_repeated_calls_give_the_same_maps(tmp_path, images):
    """The JIT optimises a method after its first calls; explain must keep working (and agree)."""
    [model] = members(seeds=(0,), arch="resnet20", width=0.25)
    export.export_bundle(
        [(model, {"mean": MEAN, "std": STD})], tmp_path / "b", classes=CLASSES, name="t", version="t-1"
    )
    predictor = Predictor(tmp_path / "b", "cpu")
    runs = [predict_explained(predictor, images[:1])[0].heatmaps for _ in range(4)]
    assert all(r is not None for r in runs)
    for r in runs[1:]:
        for label, values in r.items():
            np.testing.assert_allclose(values, runs[0][label], atol=1e-6)
