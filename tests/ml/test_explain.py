"""The bundle's exported explain method: Grad-CAM proper (equal to Captum's LayerGradCam on the eager
model), TTA levels and temperature inside the module, cam layers of every model family."""

import numpy as np
import pytest
import torch

from ml import export
from ml import tta as ml_tta
from tests.ml import fakemodels
from worker.runtime.bundle import load_bundle

captum_attr = pytest.importorskip("captum.attr")

CLASSES = ["a", "b", "c", "d", "e"]
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
ARCHS = [
    ("resnet20", {"width": 0.25}),
    ("fastnet", {"width": 0.125}),
    ("plain_cnn", {"width": 8}),
    ("preact_resnet18", {"width": 0.125}),
    ("wrn16_4", {"width": 0.25}),
]


def trained_like(arch: str, options: dict, seed: int) -> torch.nn.Module:
    return fakemodels.trained_like(arch, len(CLASSES), seed, **options)


def normalise(images: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std).view(1, 3, 1, 1) * 255.0
    return (images.float() - m) / s


def captum_cam(model: torch.nn.Module, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
    layer = model.get_submodule(model.cam_layer)
    return captum_attr.LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True)[:, 0]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(4, 3, 32, 32), dtype=np.uint8))


@pytest.mark.parametrize(("arch", "options"), ARCHS, ids=[a for a, _ in ARCHS])
def test_cam_forward_returns_the_named_layer_and_the_logits(arch, options):
    model = trained_like(arch, options, 0)
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    handle = model.get_submodule(model.cam_layer).register_forward_hook(lambda m, i, o: seen.setdefault("act", o))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    act, cam_logits = model.cam_forward(x)
    torch.testing.assert_close(cam_logits, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(act, seen["act"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("arch", "options"), ARCHS[:3], ids=[a for a, _ in ARCHS[:3]])
@pytest.mark.parametrize("tta", [0, 2])
def test_explain_equals_captum_layer_gradcam(tmp_path, images, arch, options, tta):
    """The worker's map (the scripted module's explain) is Captum's LayerGradCam on the eager model,
    same layer and class, to 1e-4: TTA and temperature change the probabilities, never the map."""
    model = trained_like(arch, options, 0)
    export.export_bundle(
        [(model, {"mean": MEAN, "std": STD})],
        tmp_path / "b",
        classes=CLASSES,
        name="t",
        version="t-1",
        tta=tta,
        temperature=1.7,
    )
    bundle = load_bundle(tmp_path / "b", precision="fp32")
    assert bundle.manifest.explain["layers"] == [model.cam_layer]
    classes = torch.tensor([[0, 3], [1, 2], [4, 4], [2, 0]])
    with torch.enable_grad():
        out = bundle.module.explain(images, classes, 5)
    x = normalise(images)
    for j in range(classes.shape[1]):
        expected = captum_cam(model, x, classes[:, j].tolist())
        assert expected.abs().max() > 1e-6  # a map that is not all zero, so the comparison means something
        torch.testing.assert_close(out["cam"][:, j], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(out["probs"], bundle.predict(images), atol=1e-6, rtol=0)


def test_ensemble_map_is_the_mean_of_member_maps_and_top_k_by_default(tmp_path, images):
    models = [trained_like("resnet20", {"width": 0.25}, seed) for seed in (0, 1)]
    export.export_bundle(
        [(m, {"mean": MEAN, "std": STD}) for m in models],
        tmp_path / "b",
        classes=CLASSES,
        name="t",
        version="t-1",
        tta=1,
    )
    bundle = load_bundle(tmp_path / "b", precision="fp32")
    with torch.enable_grad():
        out = bundle.module.explain(images, None, 3)
    probs = bundle.predict(images)
    assert torch.equal(out["class_index"], torch.topk(probs, 3, dim=1).indices)
    x = normalise(images)
    for j in range(3):
        targets = out["class_index"][:, j].tolist()
        expected = sum(captum_cam(m, x, targets) for m in models) / 2
        torch.testing.assert_close(out["cam"][:, j], expected, atol=1e-4, rtol=0)
    assert out["member_probs"].shape == (2, len(images), len(CLASSES))
    torch.testing.assert_close(out["member_probs"].mean(0), probs, atol=1e-6, rtol=0)


def test_members_with_different_map_sizes_are_resized_to_the_input(tmp_path, images):
    a, b = trained_like("resnet20", {"width": 0.25}, 0), trained_like("fastnet", {"width": 0.125}, 1)  # 8x8 and 7x7
    manifest = export.export_bundle(
        [(a, {"mean": MEAN, "std": STD}), (b, {"mean": MEAN, "std": STD})],
        tmp_path / "b",
        classes=CLASSES,
        name="t",
        version="t-1",
    )
    assert manifest.explain["map_size"] == [32, 32]
    with torch.enable_grad():
        out = load_bundle(tmp_path / "b", precision="fp32").module.explain(images, None, 2)
    assert out["cam"].shape == (len(images), 2, 32, 32)
    x, targets = normalise(images), out["class_index"][:, 0].tolist()
    up = [
        torch.nn.functional.interpolate(captum_cam(m, x, targets)[:, None], size=(32, 32), mode="bilinear")
        for m in (a, b)
    ]
    torch.testing.assert_close(out["cam"][:, 0], ((up[0] + up[1]) / 2)[:, 0], atol=1e-4, rtol=0)


def test_explain_refuses_to_run_without_gradients(tmp_path, images):
    export.export_bundle(
        [(trained_like("resnet20", {"width": 0.25}, 0), {"mean": MEAN, "std": STD})],
        tmp_path / "b",
        classes=CLASSES,
        name="t",
        version="t-1",
    )
    module = load_bundle(tmp_path / "b", precision="fp32").module
    with torch.no_grad(), pytest.raises(torch.jit.Error, match="needs gradients"):
        module.explain(images, None, 5)


@pytest.mark.parametrize("tta", [0, 1, 2])
def test_module_is_tta_averaged_logits_over_temperature(tmp_path, images, tta):
    models = [trained_like("fastnet", {"width": 0.125}, seed) for seed in (0, 1)]
    export.export_bundle(
        [(m, {"mean": MEAN, "std": STD}) for m in models],
        tmp_path / "b",
        classes=CLASSES,
        name="t",
        version="t-1",
        tta=tta,
        temperature=2.5,
    )
    bundle = load_bundle(tmp_path / "b", precision="fp32")
    x = normalise(images)
    with torch.no_grad():
        expected = sum(torch.softmax(ml_tta.TestTimeAugment(m, tta)(x) / 2.5, dim=1) for m in models) / 2
        energy = -torch.stack([torch.logsumexp(ml_tta.TestTimeAugment(m, tta)(x), dim=1) for m in models]).mean(0)
    torch.testing.assert_close(bundle.predict(images), expected, atol=1e-5, rtol=0)
    scores = bundle.module.scores(images)
    torch.testing.assert_close(scores["ood_score"], energy, atol=1e-4, rtol=0)
    assert bundle.manifest.extra["tta"] == tta and bundle.manifest.extra["flip_tta"] is (tta >= 1)
