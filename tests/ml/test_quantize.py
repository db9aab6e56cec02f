"""Int8 export and serving (ml.quantize, ``ml export --int8``, precision int8 in the runtime)."""

import json

import numpy as np
import pytest
import torch

from ml import export, torchscript
from ml import precision as ml_precision
from ml.quantize import calibration_images, gelu_on_int8, quantize_member
from tests.ml.fakemodels import trained_like
from worker.runtime import precision as runtime_precision
from worker.runtime.bundle import BundleError, load_bundle, read_manifest


def fastnet_like(seed: int = 0) -> torch.nn.Module:
    """A narrow fast net with non-trivial batch-norm statistics and whitening from random images."""
    model = trained_like("fastnet", 10, seed, width=0.25)
    model.init_from_data(torch.randn(64, 3, 32, 32))
    return model


def test_quantized_fastnet_follows_the_float_net_with_every_gelu_but_the_first_on_int8():
    torch.manual_seed(0)
    model = fastnet_like()
    calibration = torch.randn(256, 3, 32, 32)
    quantized = quantize_member(model, calibration)
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        expected, got = model(x), quantized(x)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    # int8 rounding moves the logits a little, not the ranking of the large ones
    assert torch.corrcoef(torch.stack([got.flatten(), expected.flatten()]))[0, 1] > 0.98
    nodes = list(quantized.graph.nodes)
    gelus = [n for n in nodes if n.op == "call_function" and "gelu" in str(n.target)]
    assert len(gelus) == 7  # after the whitening conv, and two per conv group
    # the whitening conv stays in float (int8_float_layers), so the first GELU is float; the
    # other six take int8 input, with no dequantize/quantize round trip around them
    assert all(n.args[0].op == "call_module" for n in gelus[1:])
    assert [n.op for n in nodes].count("call_method") == 1  # the one dequantize: the logits
    assert gelu_on_int8(quantized) == 0  # nothing left to rewrite
    scripted = torchscript.script(quantized)  # as ml export scripts it (ml/torchscript.py says why)
    torch.testing.assert_close(scripted(x), got)


def test_calibration_images_are_a_seeded_normalised_draw():
    class Data:
        images = np.random.default_rng(0).integers(0, 256, size=(50, 3, 8, 8), dtype=np.uint8)

    a = calibration_images(Data, [0.5] * 3, [0.25] * 3, n=20, seed=1)
    b = calibration_images(Data, [0.5] * 3, [0.25] * 3, n=20, seed=1)
    c = calibration_images(Data, [0.5] * 3, [0.25] * 3, n=20, seed=2)
    assert a.shape == (20, 3, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -2.0 - 1e-6 and a.max() <= 2.0 + 1e-6  # (0..1 - 0.5) / 0.25
    assert calibration_images(Data, [0.5] * 3, [0.25] * 3, n=500).shape[0] == 50  # at most all of them


def test_int8_is_a_serving_precision_on_the_cpu_only():
    assert runtime_precision.resolve("int8", torch.device("cpu")) == torch.qint8
    assert runtime_precision.name(torch.qint8) == "int8"
    with pytest.raises(ValueError, match="CPU only"):
        runtime_precision.resolve("int8", torch.device("cuda"))
    with pytest.raises(ValueError, match="serving"):
        ml_precision.resolve("int8", torch.device("cpu"))


@pytest.fixture(scope="module")
def int8_bundle(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "bundle"
    export.main([*(str(p) for p in tiny["ckpts"]), "--out", str(out), "--flip-tta", "--max-tta", "2", "--int8"])
    return out


def test_export_int8_writes_the_twin_module_and_reports_its_accuracy(int8_bundle):
    manifest = read_manifest(int8_bundle)
    assert manifest.precisions[-1] == "int8" and "fp32" in manifest.precisions
    entry = manifest.int8
    assert entry["module_file"] == "model-int8.pt" and (int8_bundle / "model-int8.pt").is_file()
    assert entry["engine"] == "x86" and entry["calibration"]["split"] == "train"
    assert entry["calibration"]["images"] > 0
    rows = json.loads((int8_bundle / "report" / "precision.json").read_text())
    assert set(rows) >= {"fp32", "int8"}
    assert rows["int8"]["same_top1"] >= 0.8  # the tiny nets' int8 answers mostly match fp32's
    assert manifest.metrics["precisions"]["int8"] == rows["int8"]


def test_int8_bundle_predicts_like_fp32_and_explains_with_the_float_module(int8_bundle):
    from worker.runtime.explain import predict_explained
    from worker.runtime.predictor import Predictor

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(16, 3, 32, 32), dtype=np.uint8))
    fp32 = load_bundle(int8_bundle, precision="fp32")
    int8 = load_bundle(int8_bundle, precision="int8")
    assert int8.precision == "int8" and int8.tta == 1 and not hasattr(int8.module, "explain")
    assert hasattr(int8.explainer, "explain") and fp32.explainer is fp32.module
    p32, p8 = fp32.predict(images), int8.predict(images)
    torch.testing.assert_close(p8.sum(1), torch.ones(16), atol=1e-4, rtol=0)
    assert (p8 - p32).abs().max() < 0.2
    # lower TTA levels switch on the int8 module as on the float one, and so does --max-tta's higher one
    assert load_bundle(int8_bundle, precision="int8", tta=0).tta == 0
    assert load_bundle(int8_bundle, precision="int8", tta=2).tta == 2
    predictor = Predictor(int8_bundle, precision="int8")
    explained = predict_explained(predictor, list(images[:2].numpy()), top_k=2)
    assert all(e.heatmaps is not None and e.explainable for e in explained)
    scored = predict_explained(predictor, list(images[:2].numpy()), top_k=2, heatmaps=False)
    assert all(e.heatmaps is None for e in scored)


def test_max_tta_carries_a_higher_level_with_its_own_fitted_temperature(int8_bundle):
    """--flip-tta --max-tta 2: the module runs at level 1; level 2 has its own temperature, fitted
    on the fit half like the others, and the runtime switched to it computes exactly that."""
    from ml import calibration
    from ml.evaluate import load_eval_data

    manifest = read_manifest(int8_bundle)
    assert manifest.extra["tta"] == 1 and manifest.extra["tta_levels"] == [0, 1, 2]
    levels = manifest.calibration["by_tta_level"]
    assert set(levels) == {"0", "1", "2"}
    assert levels["1"]["temperature"] == manifest.calibration["temperature"]
    data, _ = load_eval_data(manifest.members[0]["data"], "val")
    images = torch.from_numpy(data.images)
    fit, rep = calibration.half_split(data.labels, 0)
    two = load_bundle(int8_bundle, precision="fp32", tta=2)
    logits = two.module.scores(images)["member_logits"].double().numpy()
    t2 = levels["2"]["temperature"]
    nll = lambda t: calibration.metrics.nll(calibration.ensemble_probs(logits[:, fit], t), data.labels[fit])  # noqa: E731
    assert nll(t2) <= min(nll(t2 * 1.05), nll(t2 / 1.05)) + 1e-9  # fitted at level 2, not copied from level 1
    np.testing.assert_allclose(two.predict(images).double().numpy(), calibration.ensemble_probs(logits, t2), atol=1e-5)
    probs = calibration.ensemble_probs(logits, t2)
    assert levels["2"]["accuracy"] == pytest.approx(float((probs[rep].argmax(1) == data.labels[rep]).mean()))
    assert "| 2 | 6 |" in (int8_bundle / "report" / "calibration.md").read_text()  # six views per member


def test_int8_is_refused_with_a_message_that_says_what_to_do(int8_bundle, tiny, tmp_path):
    with pytest.raises(BundleError, match="CPU only"):
        load_bundle(int8_bundle, device="cuda", precision="int8")
    plain = tmp_path / "plain"
    export.main([str(tiny["ckpts"][0]), "--out", str(plain), "--no-report"])
    with pytest.raises(BundleError, match=r"no int8 module: re-export it with `python -m ml export \.\.\. --int8`"):
        load_bundle(plain, precision="int8")
    module = int8_bundle / "model-int8.pt"
    original = module.read_bytes()
    try:
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF
        module.write_bytes(bytes(data))
        with pytest.raises(BundleError, match="checksum mismatch"):
            load_bundle(int8_bundle, precision="int8")
    finally:
        module.write_bytes(original)
