"""classifier.db_threads: under ASGI the waiting views' database work runs on threads that keep
their connection (checked like a request's before and after each call); under WSGI it stays on
the caller's thread and connection."""

from __future__ import annotations

import threading

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections
from django.test import AsyncClient, AsyncRequestFactory, RequestFactory
from rest_framework.authtoken.models import Token

from classifier import db_threads
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory, UserFactory
from tests.conftest import make_image_bytes, terminate_backend


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


@pytest.mark.django_db(transaction=True)
def test_a_quiet_pool_connection_is_not_pinged_before_each_call(pool, monkeypatch):
    # CONN_HEALTH_CHECKS would send a SELECT 1 before each call's first query; an idle socket
    # with nothing to read answers the check without a round trip.
    _postgres_only()
    request = AsyncRequestFactory().get("/")
    _, first = async_to_sync(db_threads.call)(request, _where)
    pings = []
    wrapper = type(connections["default"])  # the backend's DatabaseWrapper class (the pool threads' too)
    original = wrapper.is_usable
    monkeypatch.setattr(wrapper, "is_usable", lambda self: pings.append(1) or original(self))
    seen = {async_to_sync(db_threads.call)(request, _where)[1] for _ in range(3)}
    assert seen == {first}
    assert pings == []


@pytest.mark.django_db(transaction=True)
def test_a_pool_connection_the_server_ended_is_replaced_before_the_next_call(pool):
    # A PostgreSQL restart or pg_terminate_backend: the server says goodbye and closes the socket,
    # which the socket check sees; the next call gets a new connection instead of an error.
    _postgres_only()
    request = AsyncRequestFactory().get("/")
    _, first = async_to_sync(db_threads.call)(request, _where)
    with connection.cursor() as cursor:
        terminate_backend(cursor, first)
    _, second = async_to_sync(db_threads.call)(request, _where)  # no error: the check replaced it
    assert second != first
