"""worker.preload: a server process imports what the first upload needs and subscribes to the push
stream when it starts; in in-process mode it also loads the model, not in the first job."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from unittest import mock

import pytest

from classifier import services
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory
from tests.e2e.procs import redis_ping
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


def test_in_process_mode_warms_the_model_up_on_one_thread_at_start(
    settings, monkeypatch, tiny_bundle, fresh_predictors
):
    # One thread: a server that forks after the preload (gunicorn --preload) must not have run an
    # OpenMP parallel region (worker.runtime.threads).
    from worker.runtime import warmup

    settings.CELERY_TASK_ALWAYS_EAGER = True
    warmed: list[int | None] = []
    monkeypatch.setattr(warmup, "warm_up", lambda bundle, *, threads=None: warmed.append(threads))
    assert preload_model_if_in_process() is True
    assert warmed == [1]


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
        mock.patch("worker.preload.preload") as preload,
        mock.patch("django.core.wsgi.get_wsgi_application"),
        mock.patch("django.core.asgi.get_asgi_application"),
    ):
        sys.modules.pop(module, None)
        importlib.import_module(module)
    sys.modules.pop(module, None)
    preload.assert_called_once_with()


def test_a_web_process_imports_the_upload_path_and_subscribes_at_start_without_torch():
    # In its own interpreter: this test process has imported everything already.
    redis_url = "redis://127.0.0.1:6379/0"
    if not redis_ping(redis_url):
        pytest.skip(f"Redis at {redis_url} does not answer")
    code = (
        "import sys, django; django.setup()\n"
        "from worker.preload import preload; preload()\n"
        "from classifier import push\n"
        "ready = push._listeners[push.push_url()].ready.wait(10)\n"
        "print(ready, push.mark().live, 'worker.celery' in sys.modules, 'kombu.transport.redis' in sys.modules,"
        " 'torch' in sys.modules)\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if k != "PUSH_REDIS_URL"},  # the broker's Redis, by default
        "DJANGO_SETTINGS_MODULE": "webapp.settings.local",
        "DATABASE_URL": "sqlite:///:memory:",
        "CELERY_BROKER_URL": redis_url,  # services mode: a separate worker runs the model
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ready, live, celery_app, transport, torch_imported = out.stdout.split()
    assert (ready, live, celery_app, transport) == ("True", "True", "True", "True")
    assert torch_imported == "False"  # the web app never imports torch
