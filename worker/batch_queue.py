"""Taking more queued classify messages from the broker, for one micro-batch.

A classify task is one job (one message, acked late, as before). When it starts, the pool
process takes up to ``WORKER_BATCH_SIZE - 1`` more classify messages straight from the same
queue (a non-blocking ``basic_get`` on its own broker connection; a lone job runs at once, and
once a second one was queued the batch waits at most ``WORKER_BATCH_WAIT_MS`` for more), runs the whole batch under this task's time limits, and acks those
messages only after the batch's results are committed. If the batch raises, they are put back
on the queue (rejected with requeue) to run again; if the process dies, the broker still holds
them as unacked (restored after the visibility timeout) and their rows are ``running`` or
``queued``, so the sweeper sends them again after ``CLASSIFICATION_STUCK_AFTER_SECONDS``: a
killed batch loses no job, and a finished job is never changed again.

Only the worker's pool processes open this connection (lazily); a fork forgets it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from django.conf import settings

from worker.runtime.batching import collect

logger = logging.getLogger(__name__)

_connection = None


def _channel(app):
    global _connection
    if _connection is None:
        _connection = app.connection_for_read()
    return _connection.default_channel


def _reset() -> None:
    global _connection
    _connection = None  # the parent's socket is not ours


os.register_at_fork(after_in_child=_reset)


@dataclass
class Batch:
    ids: list[str]
    messages: list = field(default_factory=list)  # kombu messages taken for ids[1:]

    def ack(self) -> None:
        for message in self.messages:
            try:
                message.ack()
            except Exception:  # the job is finished in the database; a redelivery changes nothing
                logger.warning("could not ack a batched message", exc_info=True)
        self.messages = []

    def requeue(self) -> None:
        for message in self.messages:
            try:
                message.reject(requeue=True)
            except Exception:  # left unacked: restored after the visibility timeout, or the sweeper
                logger.warning("could not requeue a batched message", exc_info=True)
        self.messages = []


def _classification_id(message, task_name: str) -> str | None:
    """The job id of a message of the task ``task_name`` (Celery protocol 2), else None."""
    if (message.headers or {}).get("task") != task_name:
        return None
    try:
        args, kwargs, _embed = message.decode()
        return str(kwargs.get("classification_id") or args[0])
    except Exception:
        return None


def take_batch(task, classification_id: str) -> Batch:
    """``Batch([classification_id, ...more])`` for the running ``task`` (a bound Celery task)."""
    size = int(getattr(settings, "WORKER_BATCH_SIZE", 1))
    batch = Batch([str(classification_id)])
    if size <= 1 or task.request.is_eager:
        return batch
    queue = (task.request.delivery_info or {}).get("routing_key") or task.app.conf.task_default_queue
    stopped = False

    def take() -> str | None:
        nonlocal stopped
        if stopped:
            return None
        try:
            message = _channel(task.app).basic_get(queue=queue, no_ack=False)
        except Exception:
            logger.warning("could not take more messages from %s; running a smaller batch", queue, exc_info=True)
            stopped = True
            return None
        if message is None:
            return None
        job_id = _classification_id(message, task.name)
        if job_id is None or job_id in batch.ids:
            # Not ours to batch (another task on the queue) or a duplicate: back it goes, and stop here.
            message.reject(requeue=True) if job_id is None else message.ack()
            stopped = job_id is None
            return None
        batch.messages.append(message)
        return job_id

    batch.ids = collect(batch.ids[0], take, max_size=size, max_wait_s=settings.WORKER_BATCH_WAIT_MS / 1000)
    return batch
