"""The Celery app: ``celery -A worker worker``. Configured from Django settings (CELERY_* names).

The model is not loaded here: each pool process loads it lazily on its first task
(worker.runtime.predictor.get_predictor), so the prefork parent never touches CUDA.
"""

import os

from celery import Celery
from celery.signals import worker_init, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")

app = Celery("worker")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["worker"])  # worker.tasks; classifier has no tasks of its own


@worker_init.connect
def import_torch_before_forking(**kwargs) -> None:
    """In the worker's main process only: import torch (this initialises no CUDA) so each pool
    process starts without paying for the import. The web app never imports torch."""
    import worker.runtime.predictor  # noqa: F401


@worker_process_init.connect
def keep_database_connections(**kwargs) -> None:
    """In each pool process: keep the database connection across tasks (WORKER_CONN_MAX_AGE)
    instead of reconnecting for every task. Health checks still replace a broken one."""
    from django.conf import settings
    from django.db import connections

    for alias in connections:
        connections[alias].settings_dict["CONN_MAX_AGE"] = settings.WORKER_CONN_MAX_AGE
