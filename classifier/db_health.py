"""Django's connection health check without the round trip, where the socket can answer it.

With ``CONN_HEALTH_CHECKS`` Django sends a ``SELECT 1`` before a kept connection's first query
after each ``close_old_connections`` (each request, each worker task). That check is answered
here without a round trip when it can be: a healthy idle connection's socket has nothing to read,
while a server that ended the connection (a restart, ``pg_terminate_backend``, an idle timeout)
has sent its goodbye and closed it, which makes the socket readable. A quiet socket counts as
checked; a readable one, or a connection that is not a socket, gets Django's ``SELECT 1``. (A
connection that dies silently, with no packet, is not seen this way; neither is it by a
``SELECT 1`` until its timeout. Its first query fails, Django marks it, and the next
``close_old_connections`` replaces it.)

Used by the web's database threads (`classifier.db_threads`) before each call and by the Celery
worker before each task (`worker.celery.recycle_database_connections`).
"""

from __future__ import annotations

import select
from typing import Any

from django.db import connections


def socket_quiet(raw: Any) -> bool:
    """Whether the driver connection ``raw`` is a socket with nothing to read: an idle PostgreSQL
    connection that the server has not ended."""
    try:
        fd = raw.fileno()
    except Exception:  # not a socket (SQLite), or already closed
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


def check_health_by_socket() -> None:
    """Mark each of this thread's open connections whose socket is quiet as health-checked."""
    for conn in connections.all(initialized_only=True):
        if conn.health_check_enabled and not conn.health_check_done and conn.connection is not None:
            if socket_quiet(conn.connection):
                conn.health_check_done = True
