"""The Celery app: ``celery -A worker worker``. Configured from Django settings (CELERY_* names).

The model is not loaded in the prefork parent, which never touches CUDA: each pool process loads
it when it starts, on a thread of its own, and warms it up (`warm_up_model`; the first calls of a
TorchScript module cost about ten times a normal one), so the first jobs after a start are not the
slow ones. With ``WORKER_WARM_UP=false`` a pool process loads it on its first task instead.
"""

import logging
import os
import threading

# Idle OpenMP threads sleep instead of spinning (libgomp spins by default, about 10 ms of a core
# after every multi-threaded forward pass: WORKER_LONE_IMAGE_THREADS). On a machine shared with
# the web server that spin is stolen from it. But a thread that sleeps at once must be woken for
# each of the forward pass's hundred-odd parallel operators: a lone image on 2 threads took 12-13.6
# ms fully passive, more than on one thread (10.1-12.4), against 7.4-8.7 ms with a short spin of
# 10,000 iterations (GOMP_SPINCOUNT, which libgomp honours under PASSIVE too), for 2-9 ms more CPU
# per lone image (bf16 bundle, Zen 4 EPYC, alternating runs; README, "Configuration"). A lone image
# comes when the machine is quiet; under load the batches run on one thread and never spin. Both
# are read when torch loads its OpenMP runtime, so they are set before anything imports torch;
# values in the environment win.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from celery import Celery  # noqa: E402
from celery.signals import task_postrun, task_prerun, worker_init, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")

logger = logging.getLogger(__name__)

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
    instead of reconnecting for every task (about 4 ms each here).

    Celery's Django fixup closes every connection before and after each task unless
    CELERY_DB_REUSE_MAX is set (celery/fixups/django.py), so the settings set that too (see
    ``CELERY_DB_REUSE_MAX`` there), and `recycle_database_connections` takes over what the fixup
    no longer does: Django's request-cycle check around each task."""
    from django.conf import settings
    from django.db import connections

    for alias in connections:
        connections[alias].settings_dict["CONN_MAX_AGE"] = settings.WORKER_CONN_MAX_AGE


@worker_process_init.connect
def warm_up_model(**kwargs) -> threading.Thread | None:
    """In each pool process: load MODEL_BUNDLE and warm it up (`worker.runtime.warmup`) on a thread,
    since Celery gives this signal only a few seconds (CUDA's start can take longer). A task that
    comes meanwhile waits for the warm-up to end (`Predictor.load`); a bundle that cannot be loaded is
    logged and left to the jobs, which then fail with the reason."""
    from django.conf import settings

    if not settings.WORKER_WARM_UP:
        return None
    thread = threading.Thread(
        target=_load_and_warm_up, args=(settings.MODEL_BUNDLE, settings.MODEL_DEVICE), name="model-warm-up", daemon=True
    )
    thread.start()
    return thread


def _load_and_warm_up(bundle: str, device: str | None) -> None:
    from worker.runtime import warmup
    from worker.runtime.predictor import get_predictor

    try:
        predictor = get_predictor(bundle, device=device)
        predictor.load(warm_up=True)
        warmup.warm_up_decoding(predictor.input_size)
    except Exception:
        logger.exception("could not load the model bundle %s at start-up; jobs will report it", bundle)


@task_prerun.connect
@task_postrun.connect
def recycle_database_connections(sender=None, **kwargs) -> None:
    """Before and after each task, as Django does around each request: close a connection that
    is broken (CONN_HEALTH_CHECKS), older than its CONN_MAX_AGE, or left outside autocommit; a
    healthy one is kept for the next task, and its health check is answered from its socket
    when the socket is quiet (`classifier.db_health`: a round trip fewer per task; the
    ``SELECT 1`` was 3% of the worker's samples at 32 clients). Not for eager tasks: they run
    inside the caller's request or transaction, whose connection is the caller's business."""
    if sender is None or getattr(sender.request, "is_eager", False):
        return
    from django.db import close_old_connections

    from classifier.db_health import check_health_by_socket

    close_old_connections()
    check_health_by_socket()
