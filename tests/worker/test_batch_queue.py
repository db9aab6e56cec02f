"""worker/batch_queue.py against a real Redis broker: taking queued classify messages for a batch.

Messages are published with the real Celery app onto a private queue of the local Redis
(database 13); `take_batch` is called as the running task would call it. Skipped when that
Redis does not answer.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from kombu import Connection

from tests.e2e.procs import redis_ping
from worker import batch_queue
from worker.celery import app
from worker.tasks import classify

URL = "redis://127.0.0.1:6379/13"

# The unit-test settings make tasks eager; send_task publishes for real anyway, as wanted here.
pytestmark = pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")


@pytest.fixture
def broker(monkeypatch, settings):
    if not redis_ping(URL):
        pytest.skip(f"Redis at {URL} does not answer")
    conn = Connection(URL)
    monkeypatch.setattr(batch_queue, "_connection", conn)
    settings.WORKER_BATCH_SIZE = 16
    settings.WORKER_BATCH_WAIT_MS = 1
    queue = f"batch-test-{uuid.uuid4().hex[:8]}"
    yield SimpleNamespace(conn=conn, queue=queue)
    conn.default_channel.client.delete(queue)
    conn.release()


def send(broker, task: str = classify.name, *args) -> str:
    job_id = str(uuid.uuid4())
    app.send_task(task, args=list(args) or [job_id], queue=broker.queue, connection=broker.conn)
    return job_id


def running_task(broker, eager: bool = False):
    request = SimpleNamespace(is_eager=eager, delivery_info={"routing_key": broker.queue})
    return SimpleNamespace(request=request, app=app, name=classify.name)  # batches its own task's messages


def queued(broker) -> int:
    return broker.conn.default_channel.client.llen(broker.queue)


def test_takes_the_queued_jobs_oldest_first_up_to_the_size(broker, settings):
    settings.WORKER_BATCH_SIZE = 3
    ids = [send(broker) for _ in range(5)]
    batch = batch_queue.take_batch(running_task(broker), "first")
    assert batch.ids == ["first", ids[0], ids[1]]
    batch.ack()
    assert queued(broker) == 3
    rest = batch_queue.take_batch(running_task(broker), "second")
    assert rest.ids == ["second", ids[2], ids[3]]
    rest.ack()
    assert queued(broker) == 1


def test_stops_at_another_task_and_puts_it_back(broker):
    ids = [send(broker) for _ in range(2)]
    send(broker, "worker.tasks.requeue_stuck", "x")
    later = send(broker)
    batch = batch_queue.take_batch(running_task(broker), "first")
    assert batch.ids == ["first", *ids]  # not past the sweeper's message
    batch.ack()
    assert queued(broker) == 2  # the sweeper's message is back, and the job after it is still there
    again = batch_queue.take_batch(running_task(broker), "next")
    taken = again.ids[1:]
    assert set(taken) <= {later}  # only classify messages are ever taken
    assert queued(broker) == 2 - len(taken)  # nothing lost, whichever of the two is first now
    again.ack()


def test_a_failed_batch_puts_its_messages_back(broker):
    ids = [send(broker) for _ in range(3)]
    batch = batch_queue.take_batch(running_task(broker), "first")
    assert batch.ids == ["first", *ids]
    assert queued(broker) == 0
    batch.requeue()
    assert queued(broker) == 3  # they run again
    retry = batch_queue.take_batch(running_task(broker), "again")
    assert sorted(retry.ids[1:]) == sorted(ids)
    retry.ack()


def test_an_unacked_batch_stays_with_the_broker(broker):
    # What a killed worker leaves: the taken messages are neither queued nor gone; the broker keeps
    # them as unacked (restored after the visibility timeout) and the sweeper covers their jobs.
    send(broker)
    batch = batch_queue.take_batch(running_task(broker), "first")
    assert len(batch.ids) == 2 and queued(broker) == 0
    client = broker.conn.default_channel.client
    tags = [m.delivery_tag for m in batch.messages]
    assert all(client.hexists("unacked", tag) for tag in tags)
    batch.ack()
    assert not any(client.hexists("unacked", tag) for tag in tags)


def test_no_batching_when_eager_or_size_one(broker, settings):
    send(broker)
    assert batch_queue.take_batch(running_task(broker, eager=True), "only").ids == ["only"]
    settings.WORKER_BATCH_SIZE = 1
    assert batch_queue.take_batch(running_task(broker), "only").ids == ["only"]
    assert queued(broker) == 1
