"""A user reaches only their own jobs, results, images and thumbnails: every page, API endpoint and
file URL is tried with another user's ids (and anonymously), and the owner's access is checked too
so that a 404 means "not yours", not "broken"."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory

pytestmark = pytest.mark.django_db

# Every URL that names one classification: (url name, kwarg, methods). A new route that takes a
# classification id must be added here; test_every_id_route_is_covered fails until it is.
HTML_ROUTES = [
    ("classifier:result", "id", ["GET"]),
    ("classifier:delete", "id", ["GET", "POST"]),
    ("classifier:image", "id", ["GET"]),
    ("classifier:thumbnail", "id", ["GET"]),
    ("classifier:feedback", "id", ["GET", "POST"]),
]
API_ROUTES = [
    ("api:classification-detail", "classification_id", ["GET", "DELETE"]),
    ("api:classification-feedback", "classification_id", ["GET", "POST", "DELETE"]),
    ("api:classification-explanation", "classification_id", ["POST"]),
    ("api:classification-heatmap", "classification_id", ["GET"]),
    ("api:classification-model-input", "classification_id", ["GET"]),
]


def url_for(name: str, kwarg: str, id_: uuid.UUID, method: str = "GET") -> str:
    return reverse(name, kwargs={kwarg: id_})


def _walk(patterns, prefix: str = "", namespace: str | None = None):
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = p.namespace or namespace
            yield from _walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern) and p.name:
            yield (f"{namespace}:{p.name}" if namespace else p.name), prefix + str(p.pattern)


def test_every_id_route_is_covered():
    """Any route outside the admin whose path takes an id must be in the matrices above."""
    covered = {name for name, _, _ in HTML_ROUTES + API_ROUTES}
    with_ids = {
        name
        for name, route in _walk(get_resolver().url_patterns)
        if re.search(r"<(uuid:|str:)?(id|classification_id|pk)>", route) and not route.startswith("admin/")
    }
    assert with_ids == covered


# --- HTML pages and files -------------------------------------------------------------------


@pytest.mark.parametrize("name, kwarg, methods", HTML_ROUTES)
def test_other_users_get_404_on_every_page_and_file(client, bob, alice_job, name, kwarg, methods):
    client.force_login(bob)
    for method in methods:
        response = getattr(client, method.lower())(url_for(name, kwarg, alice_job.id))
        assert response.status_code == 404, (method, name)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert b"alice-secret-holiday" not in body
    assert Classification.objects.filter(pk=alice_job.pk).exists()


@pytest.mark.parametrize("name, kwarg, methods", HTML_ROUTES)
def test_owner_reaches_every_page_and_file(client, alice, alice_job, name, kwarg, methods):
    client.force_login(alice)
    response = client.get(url_for(name, kwarg, alice_job.id))
    assert response.status_code == 200


@pytest.mark.parametrize("name, kwarg, methods", HTML_ROUTES)
def test_anonymous_users_are_sent_to_log_in(client, alice_job, name, kwarg, methods):
    for method in methods:
        response = getattr(client, method.lower())(url_for(name, kwarg, alice_job.id))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login") + "?next=")
    assert Classification.objects.filter(pk=alice_job.pk).exists()


@pytest.mark.parametrize("name, kwarg, methods", HTML_ROUTES)
def test_unknown_and_malformed_ids_are_404(client, alice, name, kwarg, methods):
    client.force_login(alice)
    assert client.get(url_for(name, kwarg, uuid.uuid4())).status_code == 404
    # A malformed id does not even match the route.
    path = url_for(name, kwarg, uuid.UUID(int=0)).replace(str(uuid.UUID(int=0)), "not-a-uuid")
    assert client.get(path).status_code == 404


def test_history_lists_only_own_jobs_whatever_the_filters(client, bob, alice_job):
    ClassificationFactory(owner=bob, done=True, original_filename="bobs.png")
    client.force_login(bob)
    for query in ({}, {"status": "done"}, {"label": "cat"}, {"page": 1}):
        html = client.get(reverse("classifier:history"), query).content.decode()
        assert "bobs.png" in html
        assert str(alice_job.id) not in html
        assert "alice-secret-holiday" not in html


def test_staff_may_see_any_image_and_thumbnail(client, staff, alice_job):
    client.force_login(staff)
    for name in ("classifier:image", "classifier:thumbnail"):
        assert client.get(reverse(name, kwargs={"id": alice_job.id})).status_code == 200
    # ...but the result page and delete stay the owner's (staff use the admin for those).
    assert client.get(reverse("classifier:result", kwargs={"id": alice_job.id})).status_code == 404
    assert client.post(reverse("classifier:delete", kwargs={"id": alice_job.id})).status_code == 404
    assert Classification.objects.filter(pk=alice_job.pk).exists()


# --- REST API -------------------------------------------------------------------------------


@pytest.fixture(params=["session", "token"])
def bob_api(request, bob, bob_token) -> APIClient:
    api = APIClient()
    if request.param == "session":
        api.force_login(bob)
    else:
        api.credentials(HTTP_AUTHORIZATION=f"Token {bob_token}")
    return api


def test_api_detail_of_another_users_job_is_404(bob_api, alice_job):
    url = reverse("api:classification-detail", kwargs={"classification_id": alice_job.id})
    for response in (bob_api.get(url), bob_api.get(url, {"wait": 1}), bob_api.delete(url)):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert "alice-secret-holiday" not in response.content.decode()
    assert Classification.objects.filter(pk=alice_job.pk).exists()


def test_api_feedback_on_another_users_job_is_404(bob_api, alice_job):
    url = reverse("api:classification-feedback", kwargs={"classification_id": alice_job.id})
    for response in (bob_api.get(url), bob_api.post(url, {"correct": True}, format="json"), bob_api.delete(url)):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert not alice_job.feedback.exists()


def test_api_explanation_request_on_another_users_job_is_404(bob_api, alice_job):
    from classifier.models import Explanation

    Explanation.objects.create(classification=alice_job, heatmaps_status=Explanation.HeatmapsStatus.NOT_REQUESTED)
    url = reverse("api:classification-explanation", kwargs={"classification_id": alice_job.id})
    response = bob_api.post(url)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert Explanation.objects.get(classification=alice_job).heatmaps_status == "not_requested"  # nothing queued


def test_api_list_never_shows_another_users_job(bob_api, bob, alice_job):
    own = ClassificationFactory(owner=bob, done=True)
    for query in ({}, {"status": "done"}, {"label": "cat"}, {"page_size": 100}):
        body = bob_api.get(reverse("api:classification-list"), query).json()
        ids = {row["id"] for row in body["results"]}
        assert str(alice_job.id) not in ids
        assert ids == {str(own.id)}


def test_api_owner_reaches_the_job(alice, alice_job):
    api = APIClient()
    api.force_login(alice)
    url = reverse("api:classification-detail", kwargs={"classification_id": alice_job.id})
    assert api.get(url).json()["id"] == str(alice_job.id)


def test_api_anonymous_gets_401(alice_job):
    api = APIClient()
    url = reverse("api:classification-detail", kwargs={"classification_id": alice_job.id})
    assert api.get(url).status_code == 401
    assert api.delete(url).status_code == 401
    assert api.get(reverse("api:classification-list")).status_code == 401
    assert Classification.objects.filter(pk=alice_job.pk).exists()


def test_api_staff_see_only_their_own_jobs(staff, alice_job):
    """Staff use the admin to see everyone's jobs; the API treats them like anyone else."""
    api = APIClient()
    api.force_login(staff)
    url = reverse("api:classification-detail", kwargs={"classification_id": alice_job.id})
    assert api.get(url).status_code == 404
    assert api.get(reverse("api:classification-list")).json()["results"] == []


# --- media URLs -----------------------------------------------------------------------------


def test_uploads_are_not_served_from_media_urls(client, alice, bob, staff, alice_job, settings):
    """The storage's public URL for an upload (MEDIA_URL + name) answers 404 to everyone,
    the owner included: files are served only by the owner-checked views."""
    paths = [alice_job.image.url, alice_job.thumbnail.url, settings.MEDIA_URL]
    assert all(path.startswith(settings.MEDIA_URL) for path in paths)
    for user in (None, alice, bob, staff):
        c = Client()
        if user is not None:
            c.force_login(user)
        for path in paths:
            assert c.get(path).status_code == 404, (user, path)


def test_no_url_pattern_serves_media(settings):
    media_prefix = settings.MEDIA_URL.strip("/")
    routes = [route for _, route in _walk(get_resolver().url_patterns)]
    assert not [route for route in routes if route.startswith(media_prefix)]


def test_storage_names_are_not_guessable_from_the_upload(alice, client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.conftest import make_image_bytes

    client.force_login(alice)
    client.post(
        reverse("classifier:upload"),
        {"images": SimpleUploadedFile("holiday.png", make_image_bytes("png"), content_type="image/png")},
    )
    job = Classification.objects.get(owner=alice)
    # Name = date + random UUID4 + our extension; nothing from the user's file name.
    assert re.fullmatch(rf"uploads/\d{{4}}/\d\d/\d\d/{job.id}\.png", job.image.name)
    assert job.id.version == 4
    assert "holiday" not in job.image.name and "holiday" not in job.thumbnail.name


def test_s3_storage_is_private_with_signed_urls():
    """When S3 is configured, objects are private and URLs are signed (no public bucket paths)."""
    import os
    import subprocess
    import sys

    from django.conf import settings as django_settings

    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps(settings.STORAGES['default']))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings.test", "AWS_STORAGE_BUCKET_NAME": "bucket"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=django_settings.BASE_DIR, capture_output=True, text=True, check=True
    )
    import json

    storage = json.loads(out.stdout.strip().splitlines()[-1])
    assert storage["BACKEND"] == "storages.backends.s3.S3Storage"
    assert storage["OPTIONS"]["default_acl"] == "private"
    assert storage["OPTIONS"]["querystring_auth"] is True


# --- admin ----------------------------------------------------------------------------------


ADMIN_URLS = [
    "admin:index",
    "admin:classifier_classification_changelist",
    "admin:classifier_classification_model_bundle",
    "admin:auth_user_changelist",
]


@pytest.mark.parametrize("name", ADMIN_URLS)
def test_admin_is_staff_only(client, bob, staff, alice_job, name):
    url = reverse(name)
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("admin:login"))
    client.force_login(bob)
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    client.force_login(staff)
    assert client.get(url).status_code == 200


def test_admin_change_page_is_staff_only(client, bob, staff, alice_job):
    url = reverse("admin:classifier_classification_change", args=[alice_job.id])
    client.force_login(bob)
    assert client.get(url).status_code == 302
    client.force_login(staff)
    response = client.get(url)
    assert response.status_code == 200
    assert "alice-secret-holiday" in response.content.decode()


def test_non_staff_cannot_log_in_to_the_admin(client, bob, password):
    response = client.post(reverse("admin:login"), {"username": "bob", "password": password})
    assert response.status_code == 200  # the form again, with an error
    assert client.get(reverse("admin:index")).status_code == 302
