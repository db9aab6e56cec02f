"""classifier.dispatch: the domain sends the worker's tasks by name, in-process or through the broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from classifier import dispatch
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory
from worker.celery import app

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_in_process_mode_runs_the_task_here(tiny_bundle, media_root):
    job = ClassificationFactory()
    assert app.conf.task_always_eager  # the test settings' mode, as `make run`'s
    dispatch.send(dispatch.CLASSIFY, str(job.id))
    job.refresh_from_db()
    assert job.status == Classification.Status.DONE and len(job.predictions) == 5


def test_services_mode_publishes_the_name_and_arguments_to_the_queue_asked_for(monkeypatch):
    from kombu.exceptions import OperationalError

    monkeypatch.setitem(app.conf, "task_always_eager", False)
    queue = f"dispatch-test-{uuid.uuid4().hex}"
    try:
        dispatch.send(dispatch.CLASSIFY_FRAME, "frame-1", "aGVsbG8=", queue=queue, expires=30)
    except OperationalError as exc:  # the CI broker is Redis; without CELERY_BROKER_URL it is kombu's memory transport
        pytest.skip(f"no broker at {app.conf.broker_url}: {exc!r}")
    with app.connection_for_read() as connection:
        with connection.SimpleQueue(queue) as q:
            message = q.get(timeout=5)
            message.ack()
    assert message.headers["task"] == "worker.tasks.classify_frame"
    assert message.headers["expires"]  # the frame's deadline travels with it
    args, kwargs, _ = message.decode()
    assert (args, kwargs) == (["frame-1", "aGVsbG8="], {})


def test_the_web_side_never_imports_the_task_module():
    # In a fresh interpreter, in services mode: the pages, the API, the uploads and the server's
    # start-up (worker.preload) reach the queue by name only, so worker.tasks (which imports the
    # services) is never imported by them.
    code = (
        "import sys, django; django.setup()\n"
        "import classifier.urls, classifier.api_urls, classifier.services, classifier.frames\n"
        "import classifier.explanations, classifier.evaluation.challenger\n"
        "from worker.preload import preload_upload_path; preload_upload_path()\n"
        "print('worker.tasks' in sys.modules, 'worker.celery' in sys.modules)\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings.local",
        "DATABASE_URL": "sqlite:///:memory:",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",  # services mode; nothing is sent
    }
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_in_process_mode_finds_the_task_in_a_process_that_never_imported_it():
    # A fresh interpreter in in-process mode (no broker): the first send loads the worker's task
    # modules the way a worker does at start (Celery's discovery) and runs the task here.
    code = (
        "import sys, uuid, django; django.setup()\n"
        "from django.core.management import call_command; call_command('migrate', verbosity=0)\n"
        "from classifier import dispatch\n"
        "before = 'worker.tasks' in sys.modules\n"
        "dispatch.send(dispatch.EXPLAIN, str(uuid.uuid4()))  # no such job: the task finds nothing to do\n"
        "print(before, 'worker.tasks' in sys.modules)\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"},
        "DJANGO_SETTINGS_MODULE": "webapp.settings.local",
        "DATABASE_URL": "sqlite:///:memory:",
    }
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
