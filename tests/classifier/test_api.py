"""REST API: every endpoint, authentication, ownership, wait, filters, pagination, bad input, error shape."""

from __future__ import annotations

import uuid
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier import dispatch
from classifier.models import Classification
from tests.classifier.factories import PASSWORD, ClassificationFactory, UserFactory
from tests.conftest import bad_uploads, files_under, make_image_bytes

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/classifications/"
Status = Classification.Status


def detail_url(id) -> str:
    return f"/api/v1/classifications/{id}/"


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


@pytest.fixture
def client(api) -> APIClient:
    """Here ``client`` is the token-authenticated API client (tests/classifier/conftest.py)."""
    return api


def image_upload(data: bytes | None = None, name: str = "cat.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, make_image_bytes("png") if data is None else data)


# ----------------------------------------------------------------------------- authentication
@pytest.mark.parametrize(
    "method,url",
    [("get", LIST_URL), ("post", LIST_URL), ("get", detail_url(uuid.uuid4())), ("delete", detail_url(uuid.uuid4()))],
)
def test_anonymous_requests_get_401(method, url):
    response = getattr(APIClient(), method)(url)
    err = assert_error(response, 401, "not_authenticated")
    assert "credentials" in err["message"].lower()
    assert response["WWW-Authenticate"] == "Token"


def test_bad_token_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert_error(client.get(LIST_URL), 401, "authentication_failed")


def test_session_authentication_works(user):
    client = APIClient()
    client.force_login(user)
    assert client.get(LIST_URL).status_code == 200


def test_token_endpoint(user):
    response = APIClient().post("/api/v1/auth/token/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 200
    token = response.json()["token"]
    assert token == Token.objects.get(user=user).key
    # the same token again on a second call
    again = APIClient().post("/api/v1/auth/token/", {"username": user.username, "password": PASSWORD})
    assert again.json()["token"] == token
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(LIST_URL).status_code == 200


def test_token_endpoint_wrong_password_is_400(user):
    response = APIClient().post("/api/v1/auth/token/", {"username": user.username, "password": "wrong"})
    assert_error(response, 400, "invalid_credentials")
    assert_error(APIClient().post("/api/v1/auth/token/", {}), 400, "invalid")


# ----------------------------------------------------------------------------- create
def test_post_image_returns_202_with_id_and_url_and_queues(
    client, user, media_root, django_capture_on_commit_callbacks
):
    with mock.patch("classifier.dispatch.send") as send:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(LIST_URL, {"image": image_upload()}, format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    c = Classification.objects.get()
    assert body["id"] == str(c.id)
    assert body["url"] == f"http://testserver{detail_url(c.id)}"
    assert response["Location"] == body["url"]
    assert body["status"] == "queued"
    assert body["original_filename"] == "cat.png"
    assert c.owner == user
    send.assert_called_once_with(dispatch.CLASSIFY, str(c.id))


def test_post_then_get_gives_the_real_prediction(client, tiny_bundle, media_root, django_capture_on_commit_callbacks):
    # Eager Celery: the on-commit hook runs the real task in-process with the tiny bundle.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(LIST_URL, {"image": image_upload(make_image_bytes("jpg"), "x.jpg")}, format="multipart")
    assert response.status_code == 202
    body = client.get(response.json()["url"]).json()
    assert body["status"] == "done"
    assert body["model_version"] == "tiny-test-0"
    assert len(body["predictions"]) == 5
    assert set(body["predictions"][0]) == {"label", "probability"}
    assert body["top_label"] == body["predictions"][0]["label"]
    assert body["queued_at"] and body["started_at"] and body["finished_at"]
    assert body["error"] == ""


@pytest.mark.django_db(transaction=True)  # real commits: the eager task runs on commit, inside the request
def test_post_in_process_answers_with_the_job_as_it_is_after_the_task_ran(client, tiny_bundle, media_root):
    # No ?wait: in-process mode (no broker) has classified the image before the answer is written.
    response = client.post(LIST_URL, {"image": image_upload(make_image_bytes("jpg"), "x.jpg")}, format="multipart")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "done", body
    assert len(body["predictions"]) == 5 and body["model_version"] == "tiny-test-0"
    assert body == client.get(body["url"]).json()


@pytest.mark.parametrize("case", sorted(bad_uploads()))
def test_post_bad_input_is_400_and_nothing_stored_or_queued(
    case, client, media_root, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(LIST_URL, {"image": image_upload(bad_uploads()[case])}, format="multipart")
    err = assert_error(response, 400)
    assert err["code"] in {"invalid_image", "empty_file"}
    assert Classification.objects.count() == 0
    assert files_under(media_root) == []
    assert callbacks == []


def test_post_over_size_limit_is_400_and_nothing_stored(
    client, settings, media_root, django_capture_on_commit_callbacks
):
    settings.MAX_UPLOAD_BYTES = 1000
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(LIST_URL, {"image": image_upload(make_image_bytes("bmp"), "a.bmp")}, format="multipart")
    err = assert_error(response, 400, "file_too_large")
    assert err["details"]["max_bytes"] == 1000
    assert Classification.objects.count() == 0
    assert files_under(media_root) == []
    assert callbacks == []


def test_post_without_image_field_is_400(client, media_root):
    err = assert_error(client.post(LIST_URL, {}, format="multipart"), 400, "invalid")
    assert "image" in err["details"]
    assert err["message"].startswith("image:")


@pytest.mark.parametrize(
    "fields",
    [
        {"image": ["a.png", "b.png"]},  # curl -F image=@a.png -F image=@b.png
        {"image": ["a.png"], "photo": ["b.png"]},  # a second file under another field
        {"image": [f"{i}.png" for i in range(25)]},  # past DATA_UPLOAD_MAX_NUMBER_FILES (Django stops reading)
    ],
    ids=["two-images", "image-and-another-file", "25-images"],
)
def test_post_with_more_than_one_file_is_400_and_nothing_is_dropped_silently(
    fields, client, media_root, django_capture_on_commit_callbacks
):
    data = {name: [image_upload(name=n) for n in names] for name, names in fields.items()}
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(LIST_URL, data, format="multipart")
    err = assert_error(response, 400, "one_image_per_request")
    assert "one image per request" in err["message"]
    if sum(map(len, fields.values())) <= 20:
        assert err["details"] == {"files": sum(map(len, fields.values())), "fields": sorted(fields)}
    assert Classification.objects.count() == 0
    assert files_under(media_root) == []
    assert callbacks == []


def test_schema_documents_one_image_per_request():
    spec = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    create = spec["paths"]["/api/v1/classifications/"]["post"]
    assert "one_image_per_request" in create["description"]
    assert "one_image_per_request" in create["responses"]["400"]["description"]


def test_post_json_body_is_415(client):
    assert_error(client.post(LIST_URL, {"image": "x"}, format="json"), 415, "unsupported_media_type")


def test_post_throttled_is_429(client, media_root):
    from rest_framework.throttling import ScopedRateThrottle

    with mock.patch.object(ScopedRateThrottle, "THROTTLE_RATES", {"classification_create": "1/min"}):
        from django.core.cache import cache

        cache.clear()
        assert client.post(LIST_URL, {"image": image_upload()}, format="multipart").status_code == 202
        err = assert_error(client.post(LIST_URL, {"image": image_upload()}, format="multipart"), 429, "throttled")
    assert err["details"]["retry_after_seconds"] > 0
    cache.clear()


def test_request_body_too_large_is_413(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = client.post(LIST_URL, {"image": "x" * 500}, format="multipart")
    assert_error(response, 413, "request_too_large")


# ----------------------------------------------------------------------------- read
def test_get_own_classification(client, user, media_root):
    c = ClassificationFactory(owner=user, done=True)
    body = client.get(detail_url(c.id)).json()
    assert body["id"] == str(c.id)
    assert body["status"] == "done"
    assert body["predictions"] == c.predictions
    assert (body["top_label"], body["top_probability"], body["model_version"]) == ("cat", 0.7, "test-1")
    assert set(body) >= {"queued_at", "started_at", "finished_at", "error"}


def test_other_users_job_is_404_for_get_and_delete(client, media_root):
    theirs = ClassificationFactory(owner=UserFactory())
    assert_error(client.get(detail_url(theirs.id)), 404, "not_found")
    assert_error(client.delete(detail_url(theirs.id)), 404, "not_found")
    assert Classification.objects.filter(id=theirs.id).exists()


def test_staff_do_not_see_others_jobs_through_the_api(media_root):
    staff = UserFactory(is_staff=True, is_superuser=True)
    theirs = ClassificationFactory()
    client = APIClient()
    client.force_authenticate(staff)
    assert_error(client.get(detail_url(theirs.id)), 404)
    assert client.get(LIST_URL).json()["count"] == 0


def test_unknown_and_malformed_ids_are_404(client):
    assert_error(client.get(detail_url(uuid.uuid4())), 404, "not_found")
    assert_error(client.get(detail_url("not-a-uuid")), 404, "not_found")


def test_list_own_only_newest_first_paginated(client, user, media_root):
    mine = [ClassificationFactory(owner=user) for _ in range(3)]
    ClassificationFactory(owner=UserFactory())
    body = client.get(LIST_URL, {"page_size": 2}).json()
    assert body["count"] == 3
    assert [r["id"] for r in body["results"]] == [str(c.id) for c in reversed(mine)][:2]
    assert body["next"] is not None and body["previous"] is None
    page2 = client.get(body["next"]).json()
    assert [r["id"] for r in page2["results"]] == [str(mine[0].id)]
    assert_error(client.get(LIST_URL, {"page": 9}), 404, "not_found")


def test_list_filters_by_status_and_label(client, user, media_root):
    done_cat = ClassificationFactory(owner=user, done=True)
    done_dog = ClassificationFactory(owner=user, done=True, top_label="dog")
    failed = ClassificationFactory(owner=user, failed=True)
    ClassificationFactory(owner=user)

    def ids(**params):
        return {r["id"] for r in client.get(LIST_URL, params).json()["results"]}

    assert ids(status="done") == {str(done_cat.id), str(done_dog.id)}
    assert ids(status="failed") == {str(failed.id)}
    assert ids(label="dog") == {str(done_dog.id)}
    assert ids(label="CAT", status="done") == {str(done_cat.id)}
    err = assert_error(client.get(LIST_URL, {"status": "bogus"}), 400, "invalid")
    assert "status" in err["details"]


# ----------------------------------------------------------------------------- wait
# How wait wakes (push, not poll) is tested in tests/classifier/test_push.py.
def test_wait_on_post(client, tiny_bundle, media_root, django_capture_on_commit_callbacks):
    # in eager mode the job is done on commit; wait only polls the row (no sleep happens)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{LIST_URL}?wait=5", {"image": image_upload()}, format="multipart")
    assert response.status_code == 202


def test_bad_wait_value_is_400(client, user, media_root):
    c = ClassificationFactory(owner=user)
    assert_error(client.get(detail_url(c.id), {"wait": "soon"}), 400, "invalid")
    assert_error(client.get(detail_url(c.id), {"wait": -1}), 400, "invalid")


# ----------------------------------------------------------------------------- delete
def test_delete_own(client, user, media_root, django_capture_on_commit_callbacks):
    c = ClassificationFactory(owner=user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete(detail_url(c.id))
    assert response.status_code == 204
    assert not Classification.objects.filter(id=c.id).exists()
    assert files_under(media_root) == []
    assert_error(client.get(detail_url(c.id)), 404)


# ----------------------------------------------------------------------------- shape everywhere
def test_method_not_allowed_is_405(client):
    assert_error(client.put(LIST_URL, {}), 405, "method_not_allowed")


def test_unknown_api_url_is_json_404(client):
    assert_error(client.get("/api/v1/nothing-here/"), 404, "not_found")


def test_unhandled_error_is_json_500(client, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr("classifier.selectors.classification_list", boom)
    assert_error(client.get(LIST_URL), 500, "server_error")


def test_schema_and_docs_are_served_without_cdn(client):
    schema = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    spec = schema.json()
    assert spec["openapi"].startswith("3.")
    assert {"/api/v1/classifications/", "/api/v1/classifications/{classification_id}/", "/api/v1/auth/token/"} <= set(
        spec["paths"]
    )
    docs = APIClient().get("/api/v1/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html


def test_post_with_the_broker_down_still_returns_202_and_keeps_the_job(
    client, media_root, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    with mock.patch("classifier.dispatch.send", side_effect=OperationalError("Error 111 connecting")) as send:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(LIST_URL, {"image": image_upload()}, format="multipart")
    assert response.status_code == 202
    assert send.called
    c = Classification.objects.get()
    assert c.status == Status.QUEUED
    assert files_under(media_root) == sorted([c.image.name, c.thumbnail.name])
