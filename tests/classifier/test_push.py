"""Push instead of poll: the API's ``wait`` and the pages' event streams wake on a published update.

The fallback re-check (API_WAIT_POLL_SECONDS) is set to a minute here, far longer than any of
these tests may take, so a test passes only if the published update woke the waiter. Each
transport is tried: in-process (no broker) and Redis pub/sub (skipped when the local Redis does
not answer).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.db import connection

from classifier import push, services
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory
from tests.e2e.procs import redis_ping

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Under WSGI (the test client) Django consumes the async event stream in one go, and says so.
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators"),
]

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
POLL = 60.0  # the fallback re-check: no test here may depend on it


@pytest.fixture(params=["in-process", "redis"])
def transport(request, settings) -> str:
    if request.param == "redis":
        if not redis_ping(LOCAL_REDIS):
            pytest.skip(f"Redis at {LOCAL_REDIS} does not answer")
        settings.PUSH_REDIS_URL = LOCAL_REDIS
    else:
        settings.PUSH_REDIS_URL = ""
    settings.API_WAIT_POLL_SECONDS = POLL
    return request.param


def finish_later(job_id, delay: float = 0.5, fail: bool = False) -> threading.Thread:
    """Start and finish the job from another thread (as the worker would), after ``delay``."""

    def run() -> None:
        time.sleep(delay)
        try:
            services.classification_start(classification_id=job_id)
            if fail:
                services.classification_fail(classification_id=job_id, message="could not read it")
            else:
                services.classification_complete(
                    classification_id=job_id, predictions=[("cat", 0.9), ("dog", 0.1)], model_version="v1"
                )
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_wait_wakes_when_the_job_finishes(transport, api, user, media_root):
    c = ClassificationFactory(owner=user)
    thread = finish_later(c.id)
    started = time.monotonic()
    body = api.get(f"/api/v1/classifications/{c.id}/", {"wait": 30}).json()
    elapsed = time.monotonic() - started
    thread.join()
    assert body["status"] == "done"
    assert body["predictions"][0] == {"label": "cat", "probability": 0.9}
    assert elapsed < 15  # woken by the update: the next re-check would have been 30 s (the wait) away


def test_wait_wakes_on_failure_too(transport, api, user, media_root):
    c = ClassificationFactory(owner=user)
    thread = finish_later(c.id, fail=True)
    started = time.monotonic()
    body = api.get(f"/api/v1/classifications/{c.id}/", {"wait": 30}).json()
    thread.join()
    assert body["status"] == "failed" and body["error"] == "could not read it"
    assert time.monotonic() - started < 15


def _post_and_wait(api, settings, monkeypatch, then) -> tuple:
    """POST an image with ?wait= to a queue (not in-process): ``then(job_id)`` plays the worker."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.conftest import make_image_bytes

    settings.CELERY_TASK_ALWAYS_EAGER = False
    threads = []
    monkeypatch.setattr(services, "enqueue_classification", lambda job_id: threads.append(then(job_id)) or True)
    image = SimpleUploadedFile("cat.png", make_image_bytes("png"), content_type="image/png")
    response = api.post("/api/v1/classifications/?wait=30", {"image": image}, format="multipart")
    for thread in threads:
        thread.join()
    return response, response.json()


def test_upload_with_wait_answers_the_finished_job_in_full(transport, api, user, media_root, settings, monkeypatch):
    response, body = _post_and_wait(api, settings, monkeypatch, lambda job_id: finish_later(job_id, delay=0.3))
    assert response.status_code == 202 and response["Location"] == body["url"]
    assert body["status"] == "done" and body["predictions"][0]["label"] == "cat"
    assert {"queued_at", "finished_at", "model_version", "explanation"} <= set(body)  # the whole resource


def test_upload_with_wait_sees_a_job_that_finished_before_the_wait_began(
    transport, api, user, media_root, settings, monkeypatch
):
    # The worker finishes the job before the view has even answered: its messages came before the
    # wait subscribed, and must still end the wait (replayed to the subscription, or a read).
    def finish_now(job_id) -> threading.Thread:
        thread = finish_later(job_id, delay=0)
        thread.join()
        return thread

    started = time.monotonic()
    response, body = _post_and_wait(api, settings, monkeypatch, finish_now)
    assert body["status"] == "done" and body["predictions"][0]["label"] == "cat"
    assert time.monotonic() - started < 15  # not the 30 s wait: the re-check is a minute away


def test_upload_with_wait_does_not_read_the_row_again_before_waiting(api, user, media_root, settings, monkeypatch):
    # The view wrote the row as queued after the mark, and the push stream has been live since:
    # the status it saw stands; the row is read once, for the answer, after the job finished.
    from classifier import waiter

    settings.PUSH_REDIS_URL = ""
    settings.API_WAIT_POLL_SECONDS = POLL
    reads = []
    monkeypatch.setattr(waiter, "_status", lambda job_id: reads.append(job_id))
    response, body = _post_and_wait(api, settings, monkeypatch, lambda job_id: finish_later(job_id, delay=0.3))
    assert body["status"] == "done"
    assert reads == []


def test_a_mark_covers_only_a_stream_without_a_break(transport, monkeypatch):
    from asgiref.sync import async_to_sync

    async def subscribe(job_id, since):
        sub = await push.subscribe([job_id], since=since)
        push.unsubscribe(sub)
        return sub

    async_to_sync(subscribe)("warm-up", None)  # the Redis transport's listener is subscribed now
    job_id = str(uuid.uuid4())
    mark = push.mark()
    assert mark.live
    push.dispatch(job_id, "running")
    push.dispatch(job_id, "done")
    sub = async_to_sync(subscribe)(job_id, mark)
    assert sub.covered and sub.queue.get_nowait() == (job_id, "done")  # the latest status, replayed

    mark = push.mark()
    push._listener_state(lambda: None)  # the listener reconnected in between: messages may be lost
    assert not async_to_sync(subscribe)(job_id, mark).covered

    monkeypatch.setattr(push, "RECENT_MESSAGES", 2)
    mark = push.mark()
    for i in range(3):  # more messages than the process remembers
        push.dispatch(f"other-{i}", "done")
    assert not async_to_sync(subscribe)(job_id, mark).covered
    assert async_to_sync(subscribe)(job_id, push.mark()).covered


def test_upload_with_wait_for_a_job_deleted_meanwhile_is_404(api, user, media_root, settings, monkeypatch):
    settings.PUSH_REDIS_URL = ""
    settings.API_MAX_WAIT_SECONDS = 0.5

    def delete_later(job_id) -> threading.Thread:
        def run() -> None:
            time.sleep(0.1)
            try:
                Classification.objects.filter(id=job_id).delete()
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    response, body = _post_and_wait(api, settings, monkeypatch, delete_later)
    assert response.status_code == 404 and body["error"]["code"] == "not_found"


def test_wait_gives_up_at_the_cap(api, user, settings, media_root):
    settings.PUSH_REDIS_URL = ""
    settings.API_WAIT_POLL_SECONDS = POLL
    settings.API_MAX_WAIT_SECONDS = 0.3
    c = ClassificationFactory(owner=user)
    started = time.monotonic()
    body = api.get(f"/api/v1/classifications/{c.id}/", {"wait": 3600}).json()
    assert body["status"] == "queued"
    assert 0.3 <= time.monotonic() - started < 15


def test_wait_without_push_still_ends_by_the_slow_recheck(api, user, settings, media_root, monkeypatch):
    # A lost notification (Redis down when the worker published) costs one re-check, not the answer.
    settings.PUSH_REDIS_URL = ""
    settings.API_WAIT_POLL_SECONDS = 0.2
    monkeypatch.setattr(push, "dispatch", lambda job_id, status: 0)  # every message is lost
    c = ClassificationFactory(owner=user)
    thread = finish_later(c.id, delay=0.3)
    body = api.get(f"/api/v1/classifications/{c.id}/", {"wait": 30}).json()
    thread.join()
    assert body["status"] == "done"


def test_wait_for_an_other_users_job_is_404(api, media_root, settings):
    settings.PUSH_REDIS_URL = ""
    other = ClassificationFactory()
    response = api.get(f"/api/v1/classifications/{other.id}/", {"wait": 5})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_publish_happens_only_on_commit(settings, user, media_root, monkeypatch):
    settings.PUSH_REDIS_URL = ""
    published = []
    monkeypatch.setattr(push, "publish", lambda job_id, status: published.append((str(job_id), status)))
    c = ClassificationFactory(owner=user)
    from django.db import transaction

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            services.classification_start(classification_id=c.id)
            raise RuntimeError("rolled back")
    assert published == []
    services.classification_start(classification_id=c.id)
    services.classification_complete(classification_id=c.id, predictions=[("cat", 1.0)], model_version="v")
    assert published == [(str(c.id), "running"), (str(c.id), "done")]


# ----------------------------------------------------------------------------- event streams
def read_events(response) -> list[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream body, comments and retry lines left out."""
    body = b"".join(response).decode()  # the sync test client consumes the async stream
    events = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], fields.get("data", "")))
    return events


def test_event_stream_delivers_the_update(transport, client, user, media_root):
    import json

    client.force_login(user)
    c = ClassificationFactory(owner=user)
    thread = finish_later(c.id)
    started = time.monotonic()
    response = client.get("/classifications/events", {"id": str(c.id)})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = read_events(response)
    thread.join()
    assert time.monotonic() - started < 15
    jobs = [json.loads(data) for name, data in events if name == "job"]
    assert [j["status"] for j in jobs][0] == "queued"  # the state when the stream opened
    assert jobs[-1]["status"] == "done" and jobs[-1]["id"] == str(c.id)
    assert jobs[-1]["predictions"][0]["label"] == "cat"
    assert events[-1][0] == "end"


def test_event_stream_of_several_jobs_ends_when_all_are_finished(transport, client, user, media_root):
    import json

    client.force_login(user)
    first, second = ClassificationFactory(owner=user), ClassificationFactory(owner=user)
    threads = [finish_later(first.id, 0.3), finish_later(second.id, 0.8, fail=True)]
    events = read_events(client.get("/classifications/events", {"id": [str(first.id), str(second.id)]}))
    for t in threads:
        t.join()
    last = {}
    for name, data in events:
        if name == "job":
            job = json.loads(data)
            last[job["id"]] = job["status"]
    assert last == {str(first.id): "done", str(second.id): "failed"}
    assert events[-1][0] == "end"


def test_event_stream_shows_only_own_jobs(client, user, settings, media_root):
    settings.PUSH_REDIS_URL = ""
    client.force_login(user)
    other = ClassificationFactory()  # someone else's, still queued
    events = read_events(client.get("/classifications/events", {"id": str(other.id)}))
    assert events == [("end", '{"finished":[]}')]


def test_event_stream_needs_login_and_ids(client, user):
    response = client.get("/classifications/events", {"id": str(uuid.uuid4())})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(user)
    assert client.get("/classifications/events").status_code == 400
    assert client.get("/classifications/events", {"id": "not-a-uuid"}).status_code == 400


def test_finished_job_status_values_match_the_model():
    from classifier.waiter import FINISHED

    assert FINISHED == {Classification.Status.DONE, Classification.Status.FAILED}
