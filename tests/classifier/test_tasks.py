"""Celery tasks, run in-process (task.apply): idempotency, failure hook, transient retries, time limits."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.db import OperationalError
from django.utils import timezone

from classifier import batches, dispatch
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory
from worker.celery import app
from worker.tasks import classify, requeue_stuck

pytestmark = pytest.mark.django_db

Status = Classification.Status


@pytest.fixture(autouse=True)
def like_a_worker(monkeypatch):
    # A worker does not propagate task errors (the test settings do, for eager unit tests);
    # retries in eager mode re-apply in-process and would otherwise raise out of the test.
    monkeypatch.setitem(app.conf, "task_eager_propagates", False)


def run(task, *args):
    # throw=False: we look at what the task left in the database, as a worker would
    return task.apply(args=args, throw=False)


def test_task_settings():
    assert classify.acks_late is True
    assert classify.reject_on_worker_lost is True
    assert 0 < classify.soft_time_limit < classify.time_limit
    assert app.conf.worker_prefetch_multiplier == 1
    assert "requeue-stuck-classifications" in app.conf.beat_schedule


def test_classify_completes_a_job_with_the_real_bundle(tiny_bundle, media_root):
    c = ClassificationFactory()
    assert run(classify, str(c.id)).result == "done"
    c.refresh_from_db()
    assert c.status == Status.DONE and len(c.predictions) == 5 and c.attempts == 1


def test_classify_twice_changes_nothing(tiny_bundle, media_root):
    c = ClassificationFactory()
    run(classify, str(c.id))
    before = Classification.objects.filter(id=c.id).values().get()
    assert run(classify, str(c.id)).result is None
    assert Classification.objects.filter(id=c.id).values().get() == before


def test_classify_corrupt_image_fails_once_with_a_message(tiny_bundle, media_root):
    c = ClassificationFactory()
    (media_root / c.image.name).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = run(classify, str(c.id))
    assert result.successful()  # a handled failure, not a crash: no retry, no redelivery
    c.refresh_from_db()
    assert c.status == Status.FAILED and c.attempts == 1
    assert "could not be read" in c.error


def test_unexpected_error_is_recorded_by_the_failure_hook(media_root):
    c = ClassificationFactory()
    with mock.patch.object(batches, "classification_process_batch", side_effect=RuntimeError("bug")):
        result = run(classify, str(c.id))
    assert result.failed()
    c.refresh_from_db()
    assert c.status == Status.FAILED
    assert "internal error" in c.error


def test_soft_time_limit_is_recorded_as_too_long(media_root):
    from celery.exceptions import SoftTimeLimitExceeded

    c = ClassificationFactory()
    with mock.patch.object(batches, "classification_process_batch", side_effect=SoftTimeLimitExceeded()):
        run(classify, str(c.id))
    c.refresh_from_db()
    assert c.status == Status.FAILED and "too long" in c.error


def test_transient_database_errors_are_retried(tiny_bundle, media_root):
    c = ClassificationFactory()
    real = batches.classification_process_batch
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs)
        if len(calls) <= 2:
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    with mock.patch.object(batches, "classification_process_batch", side_effect=flaky):
        run(classify, str(c.id))
    assert len(calls) == 3
    c.refresh_from_db()
    assert c.status == Status.DONE


def test_retries_are_bounded_then_the_job_fails(media_root):
    c = ClassificationFactory()
    with mock.patch.object(batches, "classification_process_batch", side_effect=OperationalError("down")) as process:
        run(classify, str(c.id))
    assert process.call_count == classify.max_retries + 1
    c.refresh_from_db()
    assert c.status == Status.FAILED and "database" in c.error


def test_requeue_stuck_task(media_root, django_capture_on_commit_callbacks, settings):
    settings.CLASSIFICATION_STUCK_AFTER_SECONDS = 60
    c = ClassificationFactory(last_enqueued_at=timezone.now() - timedelta(minutes=5))
    with mock.patch("classifier.dispatch.send") as send:
        with django_capture_on_commit_callbacks(execute=True):
            assert run(requeue_stuck).result == {"requeued": 1, "failed": 0, "heatmaps": 0}
    send.assert_called_once_with(dispatch.CLASSIFY, str(c.id))


def _python(code: str, env: dict[str, str] | None = None) -> list[str]:
    """The lines a fresh interpreter prints running ``code`` from the repository root."""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return run.stdout.splitlines()


def test_web_process_starts_without_the_plotting_and_statistics_libraries():
    """The admin's figures and tests load matplotlib, scipy and statsmodels when first used, not
    in every web process at start (they cost it most of its start-up time and memory)."""
    code = (
        "import os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'webapp.settings.test'\n"
        "import django; django.setup()\n"
        "import webapp.urls, classifier.api, classifier.evaluation.admin\n"
        "print(sorted(m for m in ('matplotlib', 'scipy', 'statsmodels', 'sklearn', 'torch') if m in sys.modules))\n"
        "from classifier.evaluation import plots, stats\n"
        "assert stats.wilson_interval(5, 10) is not None and plots.operations_png\n"
        "print(sorted(m for m in ('scipy', 'statsmodels') if m in sys.modules))\n"
    )
    assert _python(code)[:2] == ["[]", "['scipy', 'statsmodels']"]


def test_worker_sets_passive_openmp_waiting_with_a_short_spin_unless_told_otherwise():
    code = "import os, worker.celery; print(os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    assert _python(code, env) == ["PASSIVE 10000"]
    assert _python(code, {**env, "OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "0"}) == ["ACTIVE 0"]


def test_web_side_never_imports_torch_and_worker_parent_never_initialises_cuda():
    code = (
        "import os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'webapp.settings.test'\n"
        "import django; django.setup()\n"
        "import classifier.services, classifier.api, worker.tasks\n"
        "print('web', 'torch' in sys.modules)\n"
        "from worker.celery import import_torch_before_forking\n"
        "import_torch_before_forking()\n"
        "import torch\n"
        "print('parent', 'torch' in sys.modules, torch.cuda.is_initialized())\n"
    )
    assert _python(code)[:2] == ["web False", "parent True False"]
