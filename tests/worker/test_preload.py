"""worker.preload: in-process mode loads the model when the web process starts, not in the first job."""

from __future__ import annotations

import importlib
import sys
from unittest import mock

import pytest

from classifier import services
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory
from worker.preload import preload_model_if_in_process
from worker.runtime import predictor as predictor_module


@pytest.fixture
def fresh_predictors():
    predictor_module.clear_cache()
    yield
    predictor_module.clear_cache()


@pytest.fixture
def bundle_loads(monkeypatch) -> list[str]:
    """The bundles loaded from now on (the real load_bundle still runs)."""
    loads: list[str] = []
    real = predictor_module.load_bundle

    def counting(bundle_dir, device, *args):
        loads.append(str(bundle_dir))
        return real(bundle_dir, device, *args)

    monkeypatch.setattr(predictor_module, "load_bundle", counting)
    return loads


@pytest.mark.django_db
def test_in_process_mode_loads_the_model_at_start_and_the_first_job_loads_nothing(
    settings, tiny_bundle, media_root, fresh_predictors, bundle_loads
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert preload_model_if_in_process() is True
    assert predictor_module.get_predictor(settings.MODEL_BUNDLE, device=settings.MODEL_DEVICE).loaded
    assert bundle_loads == [str(tiny_bundle)]

    job = ClassificationFactory()
    services.classification_process(classification_id=job.id)
    job.refresh_from_db()
    assert job.status == Classification.Status.DONE
    assert bundle_loads == [str(tiny_bundle)]  # the job's run time holds no model loading


def test_with_a_separate_worker_the_web_process_loads_nothing(settings, tiny_bundle, fresh_predictors, bundle_loads):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    assert preload_model_if_in_process() is False
    assert bundle_loads == []


def test_a_bundle_that_does_not_load_is_logged_and_does_not_stop_the_server(
    settings, tmp_path, fresh_predictors, caplog
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.MODEL_BUNDLE = str(tmp_path / "no-such-bundle")
    assert preload_model_if_in_process() is False
    assert "could not load the model bundle" in caplog.text


@pytest.mark.parametrize("module", ["webapp.wsgi", "webapp.asgi"])
def test_the_server_entry_points_preload(module):
    # runserver (make run) and gunicorn import WSGI_APPLICATION = webapp.wsgi.application at start.
    with (
        mock.patch("worker.preload.preload_model_if_in_process") as preload,
        mock.patch("django.core.wsgi.get_wsgi_application"),
        mock.patch("django.core.asgi.get_asgi_application"),
    ):
        sys.modules.pop(module, None)
        importlib.import_module(module)
    sys.modules.pop(module, None)
    preload.assert_called_once_with()
