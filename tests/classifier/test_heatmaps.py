"""Heatmaps after the answer (classifier/explanations/heatmaps.py): the answer is stored and pushed
before Grad-CAM runs; maps are drawn when asked for (web form, ?explain=true, the result page, the
request endpoint); pending maps are followed by the event stream and re-asked for by the sweeper."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier import push, services
from classifier.explanations import heatmaps
from classifier.models import Classification, Explanation
from tests.classifier.factories import ClassificationFactory, UserFactory
from tests.conftest import make_image_bytes

Status = Classification.Status
HS = Explanation.HeatmapsStatus


def api_client(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture(autouse=True)
def on_commit(django_capture_on_commit_callbacks):
    """Run on-commit work (the queued tasks, in-process here) as a committed transaction would."""
    return django_capture_on_commit_callbacks


def upload(client: APIClient, on_commit, query: str = "") -> dict:
    image = SimpleUploadedFile("cat.png", make_image_bytes("png", (40, 30)), content_type="image/png")
    with on_commit(execute=True):
        response = client.post("/api/v1/classifications/" + query, {"image": image}, format="multipart")
    assert response.status_code == 202, response.content
    return client.get(response.json()["url"]).json()  # after the (in-process) worker ran


@pytest.mark.django_db(transaction=True)
def test_the_answer_is_committed_and_pushed_before_the_heatmaps(tiny_bundle, media_root, settings, monkeypatch):
    settings.PUSH_REDIS_URL = ""
    seen = []

    def publish(job_id, status):  # runs on commit: what would a waiter read at this moment?
        row = Classification.objects.get(id=job_id)
        exp = Explanation.objects.filter(classification_id=job_id).first()
        seen.append((status, bool(row.predictions), exp.heatmaps_status if exp else None, bool(exp and exp.heatmaps)))

    monkeypatch.setattr(push, "publish", publish)
    c = ClassificationFactory()
    services.classification_process(classification_id=c.id)
    assert seen == [
        ("running", False, None, False),
        ("done", True, HS.PENDING, False),  # the answer, members and flags: no maps yet
        ("done", True, HS.READY, True),  # then the maps, pushed in their turn
    ]
    exp = Explanation.objects.get(classification_id=c.id)
    c.refresh_from_db()
    assert exp.heatmaps["labels"] == [p["label"] for p in c.predictions]  # the maps of the stored top-5


@pytest.mark.django_db
def test_api_upload_answers_without_maps_and_the_result_page_draws_them(tiny_bundle, media_root, client, on_commit):
    user = UserFactory()
    body = upload(api_client(user), on_commit)
    assert body["status"] == "done" and body["members"] and body["agreement"]
    exp = body["explanation"]
    assert exp["heatmaps_status"] == "not_requested" and exp["available"] is False and exp["heatmaps"] == []
    assert exp["request_url"].endswith(f"/api/v1/classifications/{body['id']}/explanation/")
    client.force_login(user)
    page = reverse("classifier:result", kwargs={"id": body["id"]})
    with on_commit(execute=True):
        html = client.get(page).content.decode()
    # the owner opened the page: the maps were asked for, and the page says they are on their way
    assert 'id="heatmaps-pending"' in html and 'data-heatmaps="pending"' in html
    html = client.get(page).content.decode()  # the explain task has run (in-process here)
    assert 'id="cam-overlay"' in html and 'data-heatmaps="ready"' in html
    assert Explanation.objects.get(classification_id=body["id"]).heatmaps_status == HS.READY


@pytest.mark.django_db
def test_api_upload_with_explain_true_gets_the_maps(tiny_bundle, media_root, on_commit):
    body = upload(api_client(UserFactory()), on_commit, "?explain=true")
    exp = body["explanation"]
    assert exp["heatmaps_status"] == "ready" and exp["available"] and len(exp["heatmaps"]) == 5


@pytest.mark.django_db
def test_explanation_request_endpoint(tiny_bundle, media_root, on_commit):
    user = UserFactory()
    client = api_client(user)
    body = upload(client, on_commit)
    url = body["explanation"]["request_url"]
    with on_commit(execute=True):
        response = client.post(url)
    assert response.status_code == 202 and response.json()["heatmaps_status"] == "pending"  # queued (ran in-process)
    assert client.get(body["url"]).json()["explanation"]["heatmaps_status"] == "ready"
    again = client.post(url)
    assert again.status_code == 202 and again.json()["heatmaps_status"] == "ready"  # idempotent
    # not the owner: 404; nobody: 401; a failed job: 409 with a message
    assert api_client(UserFactory()).post(url).status_code == 404
    assert APIClient().post(url).status_code == 401
    failed = ClassificationFactory(owner=user, status=Status.FAILED, error="could not read it")
    response = client.post(f"/api/v1/classifications/{failed.id}/explanation/")
    assert response.status_code == 409 and response.json()["error"]["code"] == "classification_failed"
    old = ClassificationFactory(owner=user, done=True)  # done before explanations were stored
    response = client.post(f"/api/v1/classifications/{old.id}/explanation/")
    assert response.status_code == 409 and response.json()["error"]["code"] == "no_explanation"


@pytest.mark.django_db
def test_asking_while_the_job_is_queued_gets_the_maps_after_its_answer(tiny_bundle, media_root, settings):
    c = ClassificationFactory(heatmaps_requested=False)
    assert heatmaps.heatmaps_request(classification=c) == HS.PENDING
    c.refresh_from_db()
    assert c.heatmaps_requested
    services.classification_process(classification_id=c.id)
    assert Explanation.objects.get(classification=c).heatmaps_status == HS.READY


@pytest.mark.django_db
def test_stale_pending_maps_are_asked_for_again_by_the_sweeper(tiny_bundle, media_root, monkeypatch, on_commit):
    asked = []
    monkeypatch.setattr(heatmaps, "_enqueue", asked.append)
    old, fresh = ClassificationFactory(heatmaps_requested=False), ClassificationFactory(heatmaps_requested=False)
    for c in (old, fresh):
        services.classification_process(classification_id=c.id)
    long_ago = timezone.now() - timedelta(hours=1)
    Explanation.objects.filter(classification=old).update(heatmaps_status=HS.PENDING, heatmaps_requested_at=long_ago)
    Explanation.objects.filter(classification=fresh).update(
        heatmaps_status=HS.PENDING, heatmaps_requested_at=timezone.now()
    )
    with on_commit(execute=True):
        assert heatmaps.heatmaps_requeue_stale() == 1
    assert [str(i) for i in asked] == [str(old.id)]
    heatmaps.heatmaps_process(classification_id=old.id)  # what the explain task does
    assert Explanation.objects.get(classification=old).heatmaps_status == HS.READY
    assert Explanation.objects.get(classification=fresh).heatmaps_status == HS.PENDING
    # a finished map is never computed again
    assert heatmaps.heatmaps_process(classification_id=old.id) is None


@pytest.mark.django_db
def test_a_failing_gradcam_marks_the_maps_unavailable_and_keeps_the_answer(tiny_bundle, media_root, monkeypatch):
    import worker.runtime.explain as runtime_explain

    real = runtime_explain.predict_explained

    def broken_maps(predictor, images, top_k=5, *, heatmaps=True, labels=None):
        if heatmaps:
            raise RuntimeError("grad-cam is broken")
        return real(predictor, images, top_k, heatmaps=False)

    monkeypatch.setattr(runtime_explain, "predict_explained", broken_maps)
    c = ClassificationFactory()
    services.classification_process(classification_id=c.id)
    c.refresh_from_db()
    exp = c.explanation
    assert c.status == Status.DONE and len(c.predictions) == 5
    assert exp.heatmaps_status == HS.UNAVAILABLE and exp.heatmaps == {} and exp.members  # the rest stands


@pytest.mark.django_db
def test_the_result_page_of_pending_maps_says_so_and_follows_them(tiny_bundle, media_root, client):
    c = ClassificationFactory(heatmaps_requested=False)
    services.classification_process(classification_id=c.id)
    Explanation.objects.filter(classification=c).update(
        heatmaps_status=HS.PENDING, heatmaps_requested_at=timezone.now()
    )
    client.force_login(c.owner)
    html = client.get(reverse("classifier:result", kwargs={"id": c.id})).content.decode()
    assert 'id="heatmaps-pending"' in html and 'data-heatmaps="pending"' in html and 'id="cam-overlay"' not in html
    assert 'http-equiv="refresh"' in html  # the no-JS fallback reloads until the maps are there


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
def test_the_event_stream_stays_open_until_the_maps_arrive(tiny_bundle, media_root, client, settings):
    settings.PUSH_REDIS_URL = ""
    settings.API_WAIT_POLL_SECONDS = 60.0  # only the push may wake the stream
    c = ClassificationFactory(heatmaps_requested=False)
    services.classification_process(classification_id=c.id)
    Explanation.objects.filter(classification=c).update(
        heatmaps_status=HS.PENDING, heatmaps_requested_at=timezone.now()
    )

    def draw_later() -> None:
        time.sleep(0.5)
        try:
            heatmaps.heatmaps_process(classification_id=c.id)
        finally:
            connection.close()

    thread = threading.Thread(target=draw_later)
    thread.start()
    client.force_login(c.owner)
    started = time.monotonic()
    body = b"".join(client.get("/classifications/events", {"id": str(c.id)})).decode()
    thread.join()
    assert time.monotonic() - started < 15
    events = [block for block in body.split("\n\n") if block.startswith("event:")]
    jobs = [json.loads(b.split("data: ", 1)[1]) for b in events if b.startswith("event: job")]
    assert [j["explanation"]["heatmaps_status"] for j in jobs] == ["pending", "ready"]
    assert all(j["status"] == "done" for j in jobs) and events[-1].startswith("event: end")


@pytest.mark.django_db
def test_answering_a_finished_job_reads_it_with_its_explanation_in_one_query(
    tiny_bundle, media_root, django_assert_max_num_queries
):
    c = ClassificationFactory()
    services.classification_process(classification_id=c.id)
    client = api_client(c.owner)
    with django_assert_max_num_queries(2):  # the token (and its user), then the job joined to its explanation
        body = client.get(f"/api/v1/classifications/{c.id}/").json()
    assert body["explanation"]["heatmaps_status"] == "ready" and body["members"]
    png = client.get(body["explanation"]["model_input_url"])  # the deferred PNG is still served
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


@pytest.mark.django_db
def test_the_admin_says_why_a_job_has_no_heatmap(tiny_bundle, media_root, admin_client):
    c = ClassificationFactory(heatmaps_requested=False)
    services.classification_process(classification_id=c.id)
    url = reverse("admin:classifier_classification_change", args=[c.pk])
    assert "No heatmap: not requested" in admin_client.get(url).content.decode()
    Explanation.objects.filter(classification=c).update(heatmaps_status=HS.PENDING)
    assert "No heatmap: being drawn" in admin_client.get(url).content.decode()
