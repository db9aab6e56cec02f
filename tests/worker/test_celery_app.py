"""The Celery app's process hooks: a pool process keeps its database connection across tasks.

Celery's own Django fixup runs around every task in a real worker; these tests drive the same
fixup hooks and ours in the order a pool process runs them, on the test database's connection.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection, connections

from tests.conftest import terminate_backend
from worker.celery import app, keep_database_connections, recycle_database_connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pool_process(settings):
    """A pool process as worker_process_init leaves it; yields a function that runs one task's hooks."""
    before = {alias: connections[alias].settings_dict["CONN_MAX_AGE"] for alias in connections}
    keep_database_connections()
    fixup = DjangoWorkerFixup(app)  # reads CELERY_DB_REUSE_MAX as a worker's does
    task = SimpleNamespace(request=SimpleNamespace(is_eager=False))

    def run_task():
        for hook in (fixup.on_task_prerun, recycle_database_connections):
            hook(sender=task)
        with connection.cursor() as cursor:  # the task's queries
            cursor.execute("SELECT 1")
        for hook in (fixup.on_task_postrun, recycle_database_connections):
            hook(sender=task)
        return connection.connection

    try:
        yield run_task
    finally:
        for alias, age in before.items():
            connections[alias].settings_dict["CONN_MAX_AGE"] = age


def test_worker_processes_reuse_their_connection_for_WORKER_CONN_MAX_AGE(settings):
    assert settings.WORKER_CONN_MAX_AGE > 0
    assert settings.CELERY_DB_REUSE_MAX, "without it Celery's fixup closes the connection around every task"
    keep = {alias: connections[alias].settings_dict["CONN_MAX_AGE"] for alias in connections}
    try:
        keep_database_connections()
        assert {connections[alias].settings_dict["CONN_MAX_AGE"] for alias in connections} == {
            settings.WORKER_CONN_MAX_AGE
        }
    finally:
        for alias, age in keep.items():
            connections[alias].settings_dict["CONN_MAX_AGE"] = age


@pytest.fixture
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip(
            "connection reuse is what a worker does with PostgreSQL (CI runs these there); the tests read "
            "psycopg2 connection state (closed), which sqlite3 connections do not have"
        )


def test_consecutive_tasks_run_on_the_same_connection(pool_process, postgres_only):
    first = pool_process()
    assert pool_process() is first
    assert pool_process() is first
    assert not first.closed


def test_a_connection_past_its_max_age_is_replaced_before_the_next_task(pool_process, postgres_only):
    first = pool_process()
    connection.close_at = time.monotonic() - 1  # as if WORKER_CONN_MAX_AGE had passed
    second = pool_process()
    assert second is not first and first.closed
    assert pool_process() is second


def test_a_broken_connection_is_replaced_before_the_next_task(pool_process, postgres_only):
    first = pool_process()
    first.close()  # the server went away under it
    connection.errors_occurred = True  # what Django records when a query on it fails
    second = pool_process()
    assert second is not first and not second.closed


def test_a_quiet_connection_is_not_pinged_before_each_task(pool_process, postgres_only, monkeypatch):
    # CONN_HEALTH_CHECKS would send a SELECT 1 before each task's first query; an idle socket
    # with nothing to read answers the check without a round trip.
    first = pool_process()
    pings = []
    wrapper = type(connections["default"])  # the backend's DatabaseWrapper class
    original = wrapper.is_usable
    monkeypatch.setattr(wrapper, "is_usable", lambda self: pings.append(1) or original(self))
    assert {pool_process() for _ in range(3)} == {first}
    assert pings == []


def test_a_connection_the_server_ended_is_replaced_before_the_next_task(pool_process, postgres_only):
    # A PostgreSQL restart or pg_terminate_backend: the server says goodbye and closes the socket,
    # which the socket check sees; the next task gets a new connection instead of an error.
    first = pool_process()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            terminate_backend(cursor, pid)
    finally:
        other.close()
    second = pool_process()  # no error: the check replaced it
    assert second is not first and not second.closed


def test_eager_tasks_leave_the_callers_connection_alone(postgres_only):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    mine = connection.connection
    connection.close_at = time.monotonic() - 1
    recycle_database_connections(sender=SimpleNamespace(request=SimpleNamespace(is_eager=True)))
    assert connection.connection is mine
