"""What a server process does when it starts (``webapp/wsgi.py``, ``webapp/asgi.py``: `preload`), so
that its first requests are not the slow ones.

* `preload_upload_path`, in every mode: import what the first upload would import (the Celery app
  that `classifier.dispatch` sends by, kombu's Redis transport, Pillow's decoders; no torch, and
  in services mode not the task module either: the web sends tasks by name) and start this process's
  push listener (`classifier.push.start_listener`). Measured in one process against the local
  PostgreSQL and Redis (Django's test client, production settings, after one listing request):
  the first upload took 299-309 ms before, 73-76 ms after, the following ones 15-26 ms; most of
  the difference was importing Celery and kombu. Nothing here opens a connection that a fork could share: the listener is a
  thread, and `classifier.push` starts afresh in a forked child.
* `preload_model_if_in_process`, in in-process mode (no CELERY_BROKER_URL, e.g. ``make run``),
  where tasks run eagerly inside the web process, so the web process is the worker: load the
  model and warm it up.

  Loaded lazily instead, the first upload paid for importing torch and the Celery task module
  before its job was marked running, and the page showed that as "time in queue" (2.61 s for the
  first of six uploads). Here that cost is paid once at start-up and logged as the model's load
  time; a job's queue and inference times then measure only the job. The bundle is then warmed
  up (`worker.runtime.warmup`: its first two calls cost about ten times a normal one) on one
  thread, so a server that forks after this (gunicorn --preload) keeps working: torch's OpenMP
  pool hangs in a child forked after a parallel region, and worker.runtime.predictor makes each
  child load its own copy anyway.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

logger = logging.getLogger(__name__)


def preload() -> None:
    """Everything a server process does at start-up (see the module docstring)."""
    preload_upload_path()
    preload_model_if_in_process()


def preload_upload_path() -> None:
    """Import the upload's lazy imports and start the push listener (see the module docstring)."""
    from PIL import Image

    from classifier import push
    from worker.celery import app  # the Celery app; it imports no torch

    Image.init()  # every decoder plugin, registered on the first open otherwise
    app.amqp  # noqa: B018  (the task-message machinery: kombu; no connection yet)
    app.backend  # noqa: B018  (the result backend, which send_task reads)
    with app.connection_for_write() as connection:
        connection.transport  # noqa: B018  (the broker's kombu transport module; connects to nothing)
    push.start_listener()


def preload_model_if_in_process() -> bool:
    """Load the bundle of MODEL_BUNDLE now when tasks run in this process; True when loaded.

    A bundle that cannot be loaded is logged and left to the jobs, which then fail with a reason.
    """
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        return False  # a separate worker process runs the tasks and loads the model itself
    start = time.perf_counter()
    import worker.tasks  # noqa: F401  (the tasks this process runs, imported by the first send otherwise)
    from worker.runtime.predictor import get_predictor

    try:
        get_predictor(settings.MODEL_BUNDLE, device=settings.MODEL_DEVICE).load(warm_up=True, warm_up_threads=1)
    except Exception:
        logger.exception("could not load the model bundle %s at start-up; jobs will report it", settings.MODEL_BUNDLE)
        return False
    logger.info(
        "in-process mode: model bundle %s loaded and warmed up at start-up in %.2f s (torch import included)",
        settings.MODEL_BUNDLE,
        time.perf_counter() - start,
    )
    return True
