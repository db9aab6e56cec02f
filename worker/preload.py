"""In-process mode (no CELERY_BROKER_URL, e.g. ``make run``): tasks run eagerly inside the web
process, so the web process is the worker and loads the model when it starts.

Loaded lazily instead, the first upload paid for importing torch and the Celery task module
before its job was marked running, and the page showed that as "time in queue" (2.61 s for the
first of six uploads). Here that cost is paid once at start-up and logged as the model's load
time; a job's queue and inference times then measure only the job. Only the bundle is loaded,
nothing is predicted, so a server that forks after this (gunicorn --preload) keeps working:
worker.runtime.predictor makes each child load its own copy.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

logger = logging.getLogger(__name__)


def preload_model_if_in_process() -> bool:
    """Load the bundle of MODEL_BUNDLE now when tasks run in this process; True when loaded.

    A bundle that cannot be loaded is logged and left to the jobs, which then fail with a reason.
    """
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        return False  # a separate worker process runs the tasks and loads the model itself
    start = time.perf_counter()
    import worker.tasks  # noqa: F401  (the Celery app and task, imported by the first enqueue otherwise)
    from worker.runtime.predictor import get_predictor

    try:
        get_predictor(settings.MODEL_BUNDLE, device=settings.MODEL_DEVICE).load()
    except Exception:
        logger.exception("could not load the model bundle %s at start-up; jobs will report it", settings.MODEL_BUNDLE)
        return False
    logger.info(
        "in-process mode: model bundle %s loaded at start-up in %.2f s (torch import included)",
        settings.MODEL_BUNDLE,
        time.perf_counter() - start,
    )
    return True
