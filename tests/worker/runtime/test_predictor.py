"""worker.runtime.predictor with the real tiny TorchScript bundle (tests/conftest.py: tiny_bundle)."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from worker.runtime import predictor as predictor_module
from worker.runtime import threads as threads_module
from worker.runtime.bundle import BundleError, load_bundle
from worker.runtime.predictor import Predictor, get_predictor
from worker.runtime.threads import configure_threads

REPO = Path(__file__).resolve().parents[3]


def random_images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (3, 32, 32), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle, for tests that damage it."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    predictor_module.clear_cache()


# ----------------------------------------------------------------------------- predictions
def test_predict_returns_sorted_top_k_equal_to_the_bundles_probabilities(tiny_bundle: Path) -> None:
    images = random_images(7)
    results = Predictor(tiny_bundle, device="cpu").predict(images, top_k=5)
    full = load_bundle(tiny_bundle).predict(torch.from_numpy(np.stack(images)))  # N x C
    classes = load_bundle(tiny_bundle).classes
    assert len(results) == 7
    for result, probs in zip(results, full, strict=True):
        assert len(result) == 5
        labels = [label for label, _ in result]
        values = [p for _, p in result]
        assert values == sorted(values, reverse=True)
        assert len(set(labels)) == 5 and set(labels) <= set(classes)
        assert 0 < sum(values) <= 1 + 1e-6
        expected = sorted(zip(probs.tolist(), classes, strict=True), reverse=True)[:5]
        assert labels == [label for _, label in expected]
        assert np.allclose(values, [p for p, _ in expected], atol=1e-6)


def test_the_loaded_weights_are_in_the_inputs_layout_and_answer_the_same(tiny_bundle: Path) -> None:
    """The module feeds its convolutions channels_last input; the loaded weights match it (no
    reorder on every call) and the probabilities are those of the module as TorchScript loads it."""
    bundle = load_bundle(tiny_bundle, precision="fp32")
    convs = [p for p in bundle.module.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    as_saved = torch.jit.load(str(tiny_bundle / bundle.manifest.module_file)).eval()
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in as_saved.parameters() if p.ndim == 4)
    batch = torch.from_numpy(np.stack(random_images(5, seed=2)))
    with torch.inference_mode():
        torch.testing.assert_close(bundle.predict(batch), as_saved(batch), atol=1e-5, rtol=0)


def test_top_k_larger_than_the_classes_gives_every_class(tiny_bundle: Path) -> None:
    (result,) = Predictor(tiny_bundle, device="cpu").predict(random_images(1), top_k=50)
    assert len(result) == 10
    assert abs(sum(p for _, p in result) - 1) < 1e-5


def test_batches_of_max_batch_give_the_same_probabilities(tiny_bundle: Path) -> None:
    batch = torch.from_numpy(np.stack(random_images(10, seed=1)))
    whole = Predictor(tiny_bundle, device="cpu").predict_probs(batch)
    chunked = Predictor(tiny_bundle, device="cpu", max_batch=3).predict_probs(batch)
    assert whole.shape == (10, 10)
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_forward_passes_are_chunked_by_device_unless_told(tiny_bundle: Path, monkeypatch) -> None:
    assert Predictor(tiny_bundle, device="cpu").max_batch == predictor_module.DEFAULT_MAX_BATCH["cpu"] == 64
    assert Predictor(tiny_bundle, device="cuda").max_batch == 1024  # reads no CUDA state: only the device's type
    assert Predictor(tiny_bundle, device="cpu", max_batch=7).max_batch == 7
    with pytest.raises(ValueError, match="max_batch must be positive"):
        Predictor(tiny_bundle, device="cpu", max_batch=0)
    predictor = Predictor(tiny_bundle, device="cpu")
    bundle = predictor.load()
    sizes: list[int] = []
    real = type(bundle).predict
    monkeypatch.setattr(type(bundle), "predict", lambda self, images: sizes.append(len(images)) or real(self, images))
    predictor.predict(random_images(150, seed=2))
    assert sizes == [64, 64, 22]


def test_predict_refuses_wrong_inputs(tiny_bundle: Path) -> None:
    predictor = Predictor(tiny_bundle)
    assert predictor.predict([]) == []
    with pytest.raises(ValueError, match=r"\(64, 64\).*\(32, 32\)"):
        predictor.predict([np.zeros((3, 64, 64), np.uint8)])
    with pytest.raises(ValueError, match="image 1: expected a uint8 array"):
        predictor.predict([np.zeros((3, 32, 32), np.uint8), np.zeros((3, 32, 32), np.float32)])
    with pytest.raises(ValueError, match="top_k"):
        predictor.predict(random_images(1), top_k=0)


# ----------------------------------------------------------------------------- laziness and errors
def test_nothing_is_loaded_until_the_first_prediction(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda_checks = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_checks.append(1) or False)
    predictor = Predictor(tiny_bundle)
    assert predictor.version == "tiny-test-0"
    assert len(predictor.classes) == 10
    assert not predictor.loaded
    assert cuda_checks == []  # the device is not decided at construction either
    predictor.predict(random_images(1))
    assert predictor.loaded
    assert cuda_checks == [1]
    assert predictor.device == torch.device("cpu")


def test_a_missing_bundle_fails_on_use_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-bundle"
    predictor = Predictor(missing)  # constructing is free
    with pytest.raises(BundleError, match=str(missing)):
        _ = predictor.version
    with pytest.raises(BundleError, match=str(missing)):
        predictor.predict(random_images(1))


def test_a_changed_module_fails_the_checksum_with_its_path(bundle_copy: Path) -> None:
    with open(bundle_copy / "model.pt", "ab") as f:
        f.write(b"tampered")
    predictor = Predictor(bundle_copy)
    assert predictor.version == "tiny-test-0"  # the manifest alone is still readable
    with pytest.raises(BundleError, match=r"checksum mismatch for .*model\.pt") as excinfo:
        predictor.predict(random_images(1))
    assert str(bundle_copy) in str(excinfo.value)
    assert not predictor.loaded


@pytest.mark.parametrize(
    ("manifest_text", "complaint"),
    [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"name": "x"}', "missing required keys")],
)
def test_a_broken_manifest_names_its_file(bundle_copy: Path, manifest_text: str, complaint: str) -> None:
    (bundle_copy / "manifest.json").write_text(manifest_text)
    with pytest.raises(BundleError, match=complaint) as excinfo:
        _ = Predictor(bundle_copy).version
    assert str(bundle_copy / "manifest.json") in str(excinfo.value)


def test_a_module_that_is_not_torchscript_is_a_bundle_error(bundle_copy: Path) -> None:
    from worker.runtime.bundle import sha256_file

    (bundle_copy / "model.pt").write_bytes(b"this is not a TorchScript archive")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["sha256"] = sha256_file(bundle_copy / "model.pt")  # checksum right, content wrong
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="cannot load the TorchScript module .*model.pt"):
        Predictor(bundle_copy).predict(random_images(1))


# ----------------------------------------------------------------------------- one per process
def test_get_predictor_caches_by_resolved_path_and_device(tiny_bundle: Path) -> None:
    first = get_predictor(tiny_bundle)
    assert get_predictor(str(tiny_bundle) + "/.") is first
    assert get_predictor(tiny_bundle.parent / ".." / tiny_bundle.parent.name / tiny_bundle.name) is first
    assert get_predictor(tiny_bundle, device="cpu") is not first
    assert get_predictor(tiny_bundle, device="cpu") is get_predictor(tiny_bundle, device="cpu")
    first.predict(random_images(1))
    assert get_predictor(tiny_bundle).loaded  # the loaded module is reused, not reloaded


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_reuse_the_parents_predictor(tiny_bundle: Path) -> None:
    # The situation under test: the parent ran the model on torch's thread pool. Other tests (or a
    # session fixture) may have left torch at one thread, so set it here rather than rely on order.
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _check_forked_child(tiny_bundle)
    finally:
        torch.set_num_threads(original)


def _check_forked_child(tiny_bundle: Path) -> None:
    parent = get_predictor(tiny_bundle, device="cpu")  # CPU: a forked child may not use a parent's CUDA
    expected = parent.predict(random_images(2))
    assert parent.loaded
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        status = 0
        try:
            child = get_predictor(tiny_bundle, device="cpu")
            report = {
                "same_object": child is parent,
                "parent_object_still_loaded": parent.loaded,
                "child_loaded_before_predict": child.loaded,
            }
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                report["result"] = child.predict(random_images(2))
            report["child_loaded_after_predict"] = child.loaded
            report["threads"] = torch.get_num_threads()
            report["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
            os.write(write_end, json.dumps(report).encode())
        except BaseException as exc:  # noqa: BLE001 - anything goes back to the parent
            os.write(write_end, json.dumps({"error": repr(exc)}).encode())
            status = 1
        finally:
            os.close(write_end)
            os._exit(status)
    os.close(write_end)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], 120)
            assert ready, "the forked child did not answer within 120 s"
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        if not chunks:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks))
    assert "error" not in report, report
    assert report["same_object"] is False
    assert report["parent_object_still_loaded"] is False  # forgotten in the child
    assert report["child_loaded_before_predict"] is False
    assert report["child_loaded_after_predict"] is True
    # The parent ran the model on torch's thread pool, which a forked child cannot use (GNU
    # OpenMP would hang): the child runs single-threaded and says why.
    assert report["threads"] == 1
    assert any("single-threaded" in w for w in report["warnings"]), report["warnings"]
    got = [[(label, p) for label, p in row] for row in report["result"]]
    assert [[label for label, _ in row] for row in got] == [[label for label, _ in row] for row in expected]
    assert np.allclose([[p for _, p in row] for row in got], [[p for _, p in row] for row in expected], atol=1e-6)
    assert parent.loaded  # the parent keeps its own


FORK_LIKE_CELERY = """
import os, sys, warnings
import numpy as np, torch
from worker.runtime.predictor import get_predictor

torch.set_num_threads(2)
parent = get_predictor(sys.argv[1])
print("parent", parent.version, parent.loaded, flush=True)  # reads the manifest only
pid = os.fork()
if pid == 0:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no single-thread fallback expected here
        child = get_predictor(sys.argv[1])
        top = child.predict([np.zeros((3, 32, 32), np.uint8)])[0][0]
    print("child", child is parent, torch.get_num_threads(), top[0], flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_of_a_parent_that_only_read_the_manifest_keeps_its_threads(tiny_bundle: Path) -> None:
    # What a Celery prefork worker does: the parent may look at the bundle, the children predict.
    env = {k: v for k, v in os.environ.items() if k not in ("WORKER_TORCH_THREADS", "DJANGO_SETTINGS_MODULE")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", FORK_LIKE_CELERY, str(tiny_bundle)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "parent tiny-test-0 False"
    assert lines[1].startswith("child False 2 ")


def test_worker_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    original = torch.get_num_threads()
    try:
        monkeypatch.setenv("WORKER_TORCH_THREADS", "1")
        assert configure_threads() == 1
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("WORKER_TORCH_THREADS", "zero")
        with pytest.raises(ValueError, match="WORKER_TORCH_THREADS must be a positive integer"):
            configure_threads()
        monkeypatch.delenv("WORKER_TORCH_THREADS")
        assert configure_threads() == torch.get_num_threads()  # unset: left alone
    finally:
        torch.set_num_threads(original)


def test_one_image_runs_on_the_lone_image_threads_and_a_batch_on_the_process_threads(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = torch.get_num_threads()
    seen: list[int] = []
    try:
        monkeypatch.setenv("WORKER_TORCH_THREADS", "1")
        monkeypatch.setenv("WORKER_LONE_IMAGE_THREADS", "2")
        predictor = Predictor(tiny_bundle, device="cpu")
        bundle = predictor.load()
        assert predictor.lone_threads == 2 and torch.get_num_threads() == 1
        real_predict = bundle.predict
        monkeypatch.setattr(bundle, "predict", lambda x: seen.append(torch.get_num_threads()) or real_predict(x))
        one = predictor.predict(random_images(1, seed=3))
        assert seen == [2] and torch.get_num_threads() == 1  # switched for the pass, then back
        batch = predictor.predict(random_images(3, seed=3))
        assert seen == [2, 1]
        assert [label for label, _ in one[0]] == [label for label, _ in batch[0]]  # the same answer either way
        assert np.allclose([p for _, p in one[0]], [p for _, p in batch[0]], atol=1e-5)
        monkeypatch.setattr(threads_module, "_single_thread_after_fork", True)  # a child of a multi-threaded parent
        predictor.predict(random_images(1))
        assert seen == [2, 1, 1]
    finally:
        torch.set_num_threads(original)


def test_lone_image_threads_are_checked_when_the_model_loads(tiny_bundle: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORKER_LONE_IMAGE_THREADS", "-1")
    with pytest.raises(ValueError, match="WORKER_LONE_IMAGE_THREADS must be a positive integer, got '-1'"):
        Predictor(tiny_bundle, device="cpu").load()
    monkeypatch.delenv("WORKER_LONE_IMAGE_THREADS")
    assert Predictor(tiny_bundle, device="cpu").load() is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_default_device_is_cuda_and_agrees_with_the_cpu(tiny_bundle: Path) -> None:
    batch = torch.from_numpy(np.stack(random_images(16, seed=2)))
    gpu = Predictor(tiny_bundle)
    assert gpu.device.type == "cuda"
    probs_gpu = gpu.predict_probs(batch)
    probs_cpu = Predictor(tiny_bundle, device="cpu").predict_probs(batch)
    assert probs_gpu.device.type == "cpu"  # results always come back to the CPU
    assert torch.allclose(probs_gpu, probs_cpu, atol=1e-4)


# ----------------------------------------------------------------------------- no Django
def test_the_runtime_imports_no_django() -> None:
    code = (
        "import sys\n"
        "import worker.runtime, worker.runtime.bundle, worker.runtime.images\n"
        "import worker.runtime.predictor, worker.runtime.threads\n"
        "import ml.export\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith(('django.', 'rest_framework', 'celery')))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
