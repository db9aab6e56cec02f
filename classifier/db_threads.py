"""Database work from async views on a few threads that keep their connection.

Under ASGI, Django runs a request's sync code (``sync_to_async``, thread-sensitive) on a thread
made for that request and ended with it, so every request opens a PostgreSQL connection (about
4 ms here, a fifth of an upload's time in the web process) and none can be kept: with
CONN_MAX_AGE the connection would outlive its thread. `call` runs a function on one of
``WEB_DB_THREADS`` long-lived threads instead. Each keeps its own connection for
``WEB_CONN_MAX_AGE`` seconds, checked before and after every call the way Django's request cycle
checks it (health, age, autocommit: ``close_old_connections``), so a broken or stale connection
is replaced, never reused.

The health check (``CONN_HEALTH_CHECKS``: a ``SELECT 1`` round trip before a connection's first
query of each call, three per upload with ``?wait``: a tenth of the web process's CPU under
load) is answered from the socket when it can be (`classifier.db_health`).

Only the API's waiting views use it (classifier.waiter: the upload or item view, the status
checks and the final read), and only for ASGI requests. Under WSGI (runserver, the embedded
default, the test client) the request's own thread is long-lived already, and the caller's
connection, with its transaction, must stay the one used: there `call` is ``sync_to_async``.
A call is one unit of work: whatever transaction it opens it also ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections, connections

from classifier.db_health import check_health_by_socket

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()
_wrappers: list = []  # every pool thread's connection wrappers, for `shutdown`


def _own_connections() -> None:
    """In each pool thread, once: connection wrappers of its own, kept WEB_CONN_MAX_AGE seconds
    (a copy of the settings: other threads keep the project's CONN_MAX_AGE)."""
    for alias in connections:
        conn = connections.create_connection(alias)
        conn.settings_dict = {**conn.settings_dict, "CONN_MAX_AGE": settings.WEB_CONN_MAX_AGE}
        connections[alias] = conn
        _wrappers.append(conn)


def executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.WEB_DB_THREADS, thread_name_prefix="web-db", initializer=_own_connections
            )
        return _executor


def shutdown() -> None:
    """Stop the threads and close their connections (the next `call` starts afresh)."""
    global _executor
    with _lock:
        pool, _executor = _executor, None
    if pool is not None:
        pool.shutdown(wait=True)
    while _wrappers:
        raw = _wrappers.pop().connection  # the driver's connection: its thread has ended
        if raw is not None:
            raw.close()


def _forget_after_fork() -> None:
    global _executor, _lock
    _executor, _lock = None, threading.Lock()  # the parent's threads do not exist in a child
    _wrappers.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _checked(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    close_old_connections()
    check_health_by_socket()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


def pooled(request) -> bool:
    """Whether `call` uses the pool for this request (ASGI, and the pool is switched on)."""
    return isinstance(request, ASGIRequest) and settings.WEB_DB_THREADS > 0 and settings.WEB_CONN_MAX_AGE > 0


async def call(request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` from async code, on a pool thread for an ASGI ``request``."""
    if not pooled(request):
        return await sync_to_async(fn)(*args, **kwargs)
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()  # as sync_to_async does: the caller's context variables
    return await loop.run_in_executor(executor(), context.run, functools.partial(_checked, fn, *args, **kwargs))
