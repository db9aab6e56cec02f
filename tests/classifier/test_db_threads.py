"""classifier.db_threads: under ASGI the waiting views' database work runs on threads that keep
their connection (checked like a request's before and after each call, the health check at most
once per WEB_DB_HEALTH_CHECK_INTERVAL); under WSGI it stays on the caller's thread and connection."""

from __future__ import annotations

import threading
import time

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import InterfaceError, connection, connections
from django.test import AsyncClient, AsyncRequestFactory, RequestFactory
from rest_framework.authtoken.models import Token

from classifier import db_threads
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory, UserFactory
from tests.conftest import make_image_bytes


@pytest.fixture
def pool(settings):
    settings.WEB_DB_THREADS = 1  # one thread: consecutive calls meet the same connection
    settings.WEB_CONN_MAX_AGE = 60
    db_threads.shutdown()
    yield
    db_threads.shutdown()  # closes the threads' connections before the test database goes


def _where() -> tuple[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()" if connection.vendor == "postgresql" else "SELECT 1")
        return threading.current_thread().name, cursor.fetchone()[0]


def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's backend pid to tell connections apart")


@pytest.mark.django_db(transaction=True)
def test_asgi_calls_run_on_a_pool_thread_that_keeps_its_connection(pool):
    _postgres_only()
    request = AsyncRequestFactory().get("/api/v1/classifications/")
    assert db_threads.pooled(request)
    (thread, first), (_, second) = (async_to_sync(db_threads.call)(request, _where) for _ in range(2))
    assert thread.startswith("web-db") and thread != threading.current_thread().name
    assert second == first  # the same PostgreSQL backend: no new connection per request


@pytest.mark.django_db(transaction=True)
def test_a_broken_pool_connection_is_replaced_before_the_next_call(pool):
    _postgres_only()
    request = AsyncRequestFactory().get("/")
    _, first = async_to_sync(db_threads.call)(request, _where)

    def break_it():
        connection.connection.close()  # the server went away under it
        connection.errors_occurred = True  # as Django records after a failed query

    async_to_sync(db_threads.call)(request, break_it)
    _, second = async_to_sync(db_threads.call)(request, _where)
    assert second != first


@pytest.mark.django_db(transaction=True)
def test_a_pool_connection_past_its_max_age_is_replaced(pool, settings):
    _postgres_only()
    settings.WEB_CONN_MAX_AGE = 60
    request = AsyncRequestFactory().get("/")
    _, first = async_to_sync(db_threads.call)(request, _where)

    def age_it():
        connection.close_at = 0  # as if WEB_CONN_MAX_AGE had passed

    async_to_sync(db_threads.call)(request, age_it)
    _, second = async_to_sync(db_threads.call)(request, _where)
    assert second != first


@pytest.mark.django_db
def test_wsgi_calls_stay_on_the_callers_thread_and_transaction(pool):
    request = RequestFactory().get("/")
    assert not db_threads.pooled(request)
    job = ClassificationFactory()  # uncommitted: only this test's connection sees it
    seen = async_to_sync(db_threads.call)(request, lambda: Classification.objects.filter(id=job.id).exists())
    assert seen


@pytest.mark.django_db
def test_the_pool_is_off_with_zero_threads_or_max_age(settings):
    request = AsyncRequestFactory().get("/")
    settings.WEB_DB_THREADS, settings.WEB_CONN_MAX_AGE = 0, 60
    assert not db_threads.pooled(request)
    settings.WEB_DB_THREADS, settings.WEB_CONN_MAX_AGE = 4, 0
    assert not db_threads.pooled(request)


@pytest.mark.django_db(transaction=True)
def test_an_asgi_upload_runs_its_view_on_the_pool_and_answers(pool, tiny_bundle, media_root):
    token = Token.objects.create(user=UserFactory())
    upload = SimpleUploadedFile("cat.png", make_image_bytes("png"))
    response = async_to_sync(AsyncClient().post)(
        "/api/v1/classifications/?wait=5", {"image": upload}, headers={"Authorization": f"Token {token.key}"}
    )
    assert response.status_code in (200, 202), response.content
    body = response.json()
    assert body["status"] == "done" and body["predictions"]
    assert Classification.objects.get(id=body["id"]).status == Classification.Status.DONE
    assert any(t.name.startswith("web-db") for t in threading.enumerate())  # it ran there


@pytest.fixture
def health_checks(monkeypatch):
    """The number of health checks (``SELECT 1`` through ``is_usable``) the pool's connections run."""
    calls = []
    wrapper = type(connections["default"])  # the backend's DatabaseWrapper (connection is a proxy)
    real = wrapper.is_usable
    monkeypatch.setattr(wrapper, "is_usable", lambda self: calls.append(1) or real(self))
    return calls


@pytest.mark.django_db(transaction=True)
def test_a_connection_used_cleanly_a_moment_ago_is_not_health_checked_again(pool, settings, health_checks):
    _postgres_only()
    settings.WEB_DB_HEALTH_CHECK_INTERVAL = 60
    request = AsyncRequestFactory().get("/")
    pids = [async_to_sync(db_threads.call)(request, _where)[1] for _ in range(3)]
    assert len(set(pids)) == 1 and health_checks == []  # a new connection needs no check, then within 60 s
    settings.WEB_DB_HEALTH_CHECK_INTERVAL = 0  # checked before every call, as Django's per-request check
    for _ in range(2):
        async_to_sync(db_threads.call)(request, _where)
    assert len(health_checks) == 2


@pytest.mark.django_db(transaction=True)
def test_a_silently_dropped_connection_is_replaced_once_the_interval_has_passed(pool, settings, health_checks):
    _postgres_only()
    settings.WEB_DB_HEALTH_CHECK_INTERVAL = 0.05
    request = AsyncRequestFactory().get("/")
    _, first = async_to_sync(db_threads.call)(request, _where)

    def drop_it():
        connection.connection.close()  # the server restarted; no query has failed yet

    async_to_sync(db_threads.call)(request, drop_it)
    time.sleep(0.1)
    _, second = async_to_sync(db_threads.call)(request, _where)  # checked first, so it reconnects
    assert second != first and len(health_checks) == 1


@pytest.mark.django_db(transaction=True)
def test_within_the_interval_a_dropped_connection_fails_one_call_and_is_replaced(pool, settings):
    """The price of skipping the check (the same as Django's between its per-request check and a
    query): the first call after a silent drop fails; the connection is closed, the next call works."""
    _postgres_only()
    settings.WEB_DB_HEALTH_CHECK_INTERVAL = 60
    request = AsyncRequestFactory().get("/")
    _, first = async_to_sync(db_threads.call)(request, _where)
    async_to_sync(db_threads.call)(request, lambda: connection.connection.close())
    with pytest.raises(InterfaceError):
        async_to_sync(db_threads.call)(request, _where)
    _, second = async_to_sync(db_threads.call)(request, _where)
    assert second != first
