"""Warm-up: a worker runs its model on a blank image before the first job (worker/runtime/warmup.py).

TorchScript's first two calls of each method cost about ten times a normal one; these tests check
what runs, when, on how many threads, and that nothing about the predictions changes. (How much it
saves is measured by `python -m benchmarks.cold_start`, not here.)
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from worker import celery as worker_celery
from worker.runtime import predictor as predictor_module
from worker.runtime import warmup
from worker.runtime.bundle import LoadedBundle, read_manifest
from worker.runtime.predictor import Predictor


@pytest.fixture
def fresh_predictors():
    predictor_module.clear_cache()
    yield
    predictor_module.clear_cache()


class RecordingModule:
    """Stands in for a bundle's TorchScript module: records each call of forward and scores."""

    def __init__(self, predictor: Predictor | None = None, fail: bool = False):
        self.calls: list[tuple] = []
        self.predictor = predictor
        self.fail = fail

    def _record(self, name: str, x: torch.Tensor) -> torch.Tensor:
        loaded = self.predictor.loaded if self.predictor is not None else None
        self.calls.append((name, tuple(x.shape), x.dtype, torch.get_num_threads(), loaded))
        if self.fail:
            raise RuntimeError("this module is broken")
        return torch.full((x.shape[0], 10), 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._record("forward", x)

    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": self._record("scores", x)}

    __call__ = forward


def recording_predictor(monkeypatch, bundle_dir: Path, **module_kwargs) -> tuple[Predictor, RecordingModule]:
    predictor = Predictor(bundle_dir, device="cpu")
    module = RecordingModule(predictor, **module_kwargs)
    manifest = read_manifest(bundle_dir)

    def fake_load_bundle(path, device, *args):
        return LoadedBundle(path=Path(path), manifest=manifest, module=module, device=torch.device(device))

    monkeypatch.setattr(predictor_module, "load_bundle", fake_load_bundle)
    return predictor, module


def test_load_with_warm_up_runs_each_method_twice_on_one_blank_image_before_publishing_the_bundle(
    monkeypatch, tiny_bundle
):
    predictor, module = recording_predictor(monkeypatch, tiny_bundle)
    height, width = predictor.input_size

    bundle = predictor.load(warm_up=True)

    assert bundle.module is module
    assert [call[0] for call in module.calls] == ["forward", "scores"] * warmup.PASSES
    assert {call[1:3] for call in module.calls} == {((1, 3, height, width), torch.uint8)}
    # Not yet published while warming: another thread's predict() waits on the load lock instead.
    assert {call[4] for call in module.calls} == {False}
    assert predictor.loaded


def test_load_without_warm_up_runs_nothing_and_a_loaded_bundle_is_not_warmed_again(monkeypatch, tiny_bundle):
    predictor, module = recording_predictor(monkeypatch, tiny_bundle)
    predictor.load()
    predictor.load(warm_up=True)  # already loaded (and maybe used): nothing to warm
    assert module.calls == []


def test_warm_up_on_one_thread_restores_the_thread_count(monkeypatch, tiny_bundle):
    predictor, module = recording_predictor(monkeypatch, tiny_bundle)
    before = torch.get_num_threads()
    predictor.load(warm_up=True, warm_up_threads=1)
    assert {call[3] for call in module.calls} == {1}
    assert torch.get_num_threads() == before


def test_a_failing_warm_up_is_logged_and_the_bundle_still_loads(monkeypatch, tiny_bundle, caplog):
    predictor, module = recording_predictor(monkeypatch, tiny_bundle, fail=True)
    with caplog.at_level(logging.WARNING, logger="worker.runtime.warmup"):
        bundle = predictor.load(warm_up=True)
    assert bundle.module is module and predictor.loaded
    assert len(module.calls) == 1  # stopped at the first failure
    assert "warming up the model bundle" in caplog.text


def test_a_warmed_up_bundle_predicts_exactly_what_a_cold_one_does(tiny_bundle):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (3, 32, 32), dtype=np.uint8) for _ in range(3)]
    cold = Predictor(tiny_bundle, device="cpu")
    warm = Predictor(tiny_bundle, device="cpu")
    warm.load(warm_up=True)
    batch = torch.from_numpy(np.stack(images))
    assert torch.equal(warm.predict_probs(batch), cold.predict_probs(batch))


def test_a_pool_process_loads_and_warms_the_bundle_up_on_a_thread_at_start(
    settings, monkeypatch, tiny_bundle, fresh_predictors
):
    settings.WORKER_WARM_UP = True
    settings.MODEL_BUNDLE = str(tiny_bundle)
    settings.MODEL_DEVICE = "cpu"
    warmed: list[str] = []
    real = warmup.warm_up

    def spy(bundle, *, threads=None):
        warmed.append(threading.current_thread().name)
        return real(bundle, threads=threads)

    monkeypatch.setattr(warmup, "warm_up", spy)
    thread = worker_celery.warm_up_model()
    assert thread is not None
    thread.join(timeout=60)
    assert warmed == ["model-warm-up"]
    assert predictor_module.get_predictor(str(tiny_bundle), device="cpu").loaded


def test_WORKER_WARM_UP_false_leaves_the_load_to_the_first_task(settings, tiny_bundle, fresh_predictors):
    settings.WORKER_WARM_UP = False
    settings.MODEL_BUNDLE = str(tiny_bundle)
    settings.MODEL_DEVICE = "cpu"
    assert worker_celery.warm_up_model() is None
    assert not predictor_module.get_predictor(str(tiny_bundle), device="cpu").loaded


def test_a_bundle_that_does_not_load_at_start_is_logged(settings, tmp_path, fresh_predictors, caplog):
    settings.WORKER_WARM_UP = True
    settings.MODEL_BUNDLE = str(tmp_path / "no-such-bundle")
    settings.MODEL_DEVICE = "cpu"
    thread = worker_celery.warm_up_model()
    thread.join(timeout=60)
    assert "could not load the model bundle" in caplog.text


def test_the_pool_process_warm_up_decodes_an_image_of_the_bundles_input_size(
    settings, monkeypatch, tiny_bundle, fresh_predictors
):
    settings.WORKER_WARM_UP = True
    settings.MODEL_BUNDLE = str(tiny_bundle)
    settings.MODEL_DEVICE = "cpu"
    decoded: list[tuple[int, int]] = []
    from worker.runtime import images

    real = images.decode_for_model

    def spy(data, size=(32, 32), **kwargs):
        out = real(data, size, **kwargs)
        decoded.append(out.shape)
        return out

    monkeypatch.setattr(images, "decode_for_model", spy)
    worker_celery.warm_up_model().join(timeout=60)
    assert decoded == [(3, 32, 32)]
