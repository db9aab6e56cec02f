"""The domain's one door to the task queue: ``send(task, *args)`` enqueues a worker task by name.

The worker's tasks (``worker/tasks.py``) call the services, so the services must not import the
tasks back: they send by name through the Celery app (``worker.celery``, which imports nothing of
the domain), and the arrows point one way, tasks -> services. Routing needs no task object either:
``CELERY_TASK_ROUTES`` matches names (``CLASSIFY_QUEUE``, ``FRAME_QUEUE``), and the tasks' own
options (acks_late, time limits, retries) are the worker's side. Nothing is returned: the results
are in the database and the push channel, never in a result backend (``CELERY_TASK_IGNORE_RESULT``).

In-process mode (no broker: ``CELERY_TASK_ALWAYS_EAGER``, e.g. ``make run``), this process is the
worker, and Celery's ``send_task`` would ignore eagerness; the task is then taken from the app's
registry, where Celery's own discovery of the task modules puts it (the import a worker does at
start), and applied here. A broker that is down raises (kombu's OperationalError and friends): the
callers decide what a lost message costs, and each says in a comment.
"""

from __future__ import annotations

from typing import Any

CLASSIFY = "worker.tasks.classify"
EXPLAIN = "worker.tasks.explain"
CLASSIFY_FRAME = "worker.tasks.classify_frame"
CHALLENGE = "worker.tasks.challenge"


def send(task: str, *args: str, **options: Any) -> None:
    """Enqueue ``task`` (one of the names above) with ``args``; ``options`` as Celery's
    ``apply_async`` takes them (``queue``, ``expires``)."""
    from worker.celery import app  # Celery itself: imported on the first send, or at start by worker.preload

    if app.conf.task_always_eager:
        if task not in app.tasks:
            app.loader.import_default_modules()  # the worker's task modules (app.autodiscover_tasks)
        app.tasks[task].apply_async(args=list(args), **options)
    else:
        app.send_task(task, args=list(args), **options)
