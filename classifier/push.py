"""Push: "job X changed" notifications, from whoever changes a job to whoever waits for it.

The services call `publish` (on commit) when a job starts, finishes or fails. Waiters (the API's
``wait``, the server-sent-event streams of the result and history pages, see
`classifier.waiter`) hold a `Subscription` for the ids they care about and wake when one of them
is published, instead of polling the row.

Two transports, chosen by the setting ``PUSH_REDIS_URL``:

* a Redis URL (by default the broker's, when the broker is Redis): `publish` is a Redis
  ``PUBLISH`` on ``classifier.push.<key>`` (the key is a job id, or ``frame-<uuid>`` for the
  answer to a live camera frame, see `classifier.frames`). Each web process runs one listener
  thread (``PSUBSCRIBE classifier.push.*``; `start_listener` when the server starts the process,
  else on the first subscription) that hands messages to the subscriptions of that process. The
  Celery worker only publishes.
* empty (no broker: tasks run in-process, the one-command development mode): `publish` hands
  the message to this process's subscriptions directly.

A notification is a hint, not the truth: waiters always re-read the row before they answer,
and re-check it on a slow timer (``API_WAIT_POLL_SECONDS``) too, so a message lost while Redis
is down only costs latency. Publishing never raises.

Subscribing after the fact: a waiter that has just read or written the row (the upload view
answered "queued") would have to read it again once subscribed, in case the job changed in
between. Instead it takes a `mark` before the view runs and passes it to `subscribe`: each
process remembers the latest status of the last ``RECENT_MESSAGES`` jobs it was told about, and
when the push stream has been live without a break since the mark (the listener stayed
subscribed, and no more messages came than it remembers), the subscription is ``covered``: it
holds every update since the mark (those already seen are replayed), so the waiter can trust the
status the view saw. Otherwise (the listener was starting or reconnecting) it reads the row.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "classifier.push."
# How long the first subscriber waits for a fresh listener thread to be subscribed.
LISTENER_READY_SECONDS = 3.0
# How many jobs' latest status each process remembers, for subscriptions that start after a mark.
RECENT_MESSAGES = 4096


def push_url() -> str:
    return getattr(settings, "PUSH_REDIS_URL", "") or ""


# ----------------------------------------------------------------------------- subscriptions
class Subscription:
    """The ids one waiter listens to, and a queue of (job_id, status) messages for it.

    Created in an event loop; messages may be delivered from any thread.
    """

    def __init__(self, ids: Iterable[str], loop: asyncio.AbstractEventLoop) -> None:
        self.ids = {str(i) for i in ids}
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        # True when subscribed with a `mark` and every update since the mark is (or will be) in the queue.
        self.covered = False

    def deliver(self, job_id: str, status: str) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (job_id, status))
        except RuntimeError:  # the loop is closed: its waiter is gone
            pass

    async def next(self, timeout: float) -> tuple[str, str] | None:
        """The next message, or None after ``timeout`` seconds without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout=max(timeout, 0.0))
        except TimeoutError:
            return None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        unsubscribe(self)


_subs: dict[str, set[Subscription]] = {}
_subs_lock = threading.Lock()  # guards _subs, _recent, _received and _generation
_recent: OrderedDict[str, str] = OrderedDict()  # job id -> the latest status this process was told
_received = 0  # messages dispatched in this process
_generation = 0  # changes of the listener's state (subscribed, lost), in this process


@dataclass(frozen=True)
class Mark:
    """Where this process's push stream was at one moment (see `mark`)."""

    live: bool
    generation: int
    received: int


def _live() -> bool:
    """Whether every message published now reaches this process: no Redis (publishing is in-process),
    or a listener subscribed to Redis."""
    url = push_url()
    if not url:
        return True
    listener = _listeners.get(url)
    return listener is not None and listener.is_alive() and listener.ready.is_set()


def mark() -> Mark:
    """Take before reading or writing a job, then pass to `subscribe` (see the module docstring)."""
    with _subs_lock:
        return Mark(_live(), _generation, _received)


async def subscribe(ids: Iterable[str], since: Mark | None = None) -> Subscription:
    """Listen to ``ids``; use as ``async with await subscribe(ids) as sub``.

    Subscribe before reading the rows, so nothing published in between is missed; or, with
    ``since`` (a `mark` taken before they were read), check ``sub.covered``: when True, the
    updates published since the mark are in the subscription already and the rows need not be
    read again.
    """
    loop = asyncio.get_running_loop()
    sub = Subscription(ids, loop)
    url = push_url()
    if url:
        listener = _listener_for(url)
        if not listener.ready.is_set():
            # Only the first waiters of a process (or during an outage) get here.
            await asyncio.to_thread(listener.ready.wait, LISTENER_READY_SECONDS)
    with _subs_lock:
        for job_id in sub.ids:
            _subs.setdefault(job_id, set()).add(sub)
        if since is not None:
            sub.covered = (
                since.live
                and _live()
                and since.generation == _generation
                and _received - since.received <= RECENT_MESSAGES
            )
            for job_id in sub.ids:
                if job_id in _recent:
                    sub.queue.put_nowait((job_id, _recent[job_id]))
    return sub


def unsubscribe(sub: Subscription) -> None:
    with _subs_lock:
        for job_id in sub.ids:
            subs = _subs.get(job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del _subs[job_id]


def dispatch(job_id: str, status: str) -> int:
    """Hand a message to this process's subscriptions for ``job_id``; returns how many got it."""
    global _received
    job_id = str(job_id)
    with _subs_lock:
        _received += 1
        _recent[job_id] = status
        _recent.move_to_end(job_id)
        if len(_recent) > RECENT_MESSAGES:
            _recent.popitem(last=False)
        subs = list(_subs.get(job_id, ()))
    for sub in subs:
        sub.deliver(job_id, status)
    return len(subs)


# ----------------------------------------------------------------------------- publishing
_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def _client(url: str) -> redis.Redis:
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    return client


def publish(job_id: uuid.UUID | str, status: str) -> None:
    """Tell every waiter of ``job_id`` that its status is now ``status``. Never raises."""
    job_id = str(job_id)
    url = push_url()
    if url:
        try:
            _client(url).publish(CHANNEL_PREFIX + job_id, status)
            return
        except Exception:  # Redis down: the waiters' slow re-check finds the change anyway
            logger.warning("could not publish the update of job %s to %s", job_id, url, exc_info=True)
    dispatch(job_id, status)


def publish_many(updates: Iterable[tuple[uuid.UUID | str, str]]) -> None:
    """`publish` for several jobs in one round trip (one Redis pipeline)."""
    updates = [(str(i), s) for i, s in updates]
    url = push_url()
    if url and updates:
        try:
            pipe = _client(url).pipeline(transaction=False)
            for job_id, status in updates:
                pipe.publish(CHANNEL_PREFIX + job_id, status)
            pipe.execute()
            return
        except Exception:
            logger.warning("could not publish %d job updates to %s", len(updates), url, exc_info=True)
    for job_id, status in updates:
        dispatch(job_id, status)


# ----------------------------------------------------------------------------- the listener thread
class _Listener(threading.Thread):
    """One per process and URL: PSUBSCRIBE classifier.push.* and dispatch to local subscriptions."""

    def __init__(self, url: str) -> None:
        super().__init__(name=f"push-listener {url}", daemon=True)
        self.url = url
        self.ready = threading.Event()

    def run(self) -> None:
        backoff = 0.2
        while True:
            pubsub = None
            try:
                client = redis.Redis.from_url(self.url, socket_connect_timeout=2, health_check_interval=15)
                pubsub = client.pubsub()
                pubsub.psubscribe(CHANNEL_PREFIX + "*")
                while True:
                    message = pubsub.get_message(timeout=10)
                    if message is None:
                        continue
                    if message["type"] == "psubscribe":
                        _listener_state(self.ready.set)
                        backoff = 0.2
                    elif message["type"] == "pmessage":
                        channel = message["channel"].decode()
                        dispatch(channel[len(CHANNEL_PREFIX) :], message["data"].decode())
            except Exception:
                _listener_state(self.ready.clear)
                logger.warning("push listener lost %s; retrying in %.1f s", self.url, backoff, exc_info=True)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass


def _listener_state(change) -> None:
    """Set or clear a listener's ``ready``: a new generation (marks taken before no longer cover)."""
    global _generation
    with _subs_lock:
        _generation += 1
        change()


_listeners: dict[str, _Listener] = {}
_listeners_lock = threading.Lock()


def _listener_for(url: str) -> _Listener:
    with _listeners_lock:
        listener = _listeners.get(url)
        if listener is None or not listener.is_alive():
            listener = _listeners[url] = _Listener(url)
            listener.start()
    return listener


def start_listener() -> bool:
    """Start this process's listener now rather than on its first subscription (a web process at
    start-up: `worker.preload`), so that the first waiter neither waits for it nor reads the row
    again (`mark`). False without Redis (in-process publishing needs no listener)."""
    url = push_url()
    if not url:
        return False
    _listener_for(url)
    return True


def _after_fork_in_child() -> None:
    # Threads do not survive a fork and sockets must not be shared: start afresh.
    global _subs_lock, _clients_lock, _listeners_lock
    _subs_lock, _clients_lock, _listeners_lock = threading.Lock(), threading.Lock(), threading.Lock()
    _subs.clear()
    _recent.clear()
    _clients.clear()
    _listeners.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
