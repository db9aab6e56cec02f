"""Feedback endpoints and the streaming CSV export of the REST API."""

from __future__ import annotations

import csv
import io
import uuid
from unittest import mock

import pytest
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier.evaluation.models import Feedback
from classifier.models import Classification, Explanation
from tests.classifier.evaluation.factories import ModelVersionFactory, bulk_done, done_job, now
from tests.classifier.factories import ClassificationFactory, UserFactory

pytestmark = pytest.mark.django_db
EXPORT_URL = "/api/v1/classifications/export.csv"


def feedback_url(id) -> str:
    return f"/api/v1/classifications/{id}/feedback/"


def api_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


@pytest.fixture
def job():
    return done_job(ModelVersionFactory(), top="cat")


# ----------------------------------------------------------------------------- feedback
def test_post_get_change_delete_feedback(job):
    api = api_for(job.owner)
    assert_error(api.get(feedback_url(job.id)), 404, "not_found")
    response = api.post(feedback_url(job.id), {"correct": True}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["classification"], body["correct"], body["label"], body["predicted_label"]) == (
        str(job.id),
        True,
        "cat",
        "cat",
    )
    response = api.post(feedback_url(job.id), {"label": "dog"}, format="json")
    assert response.status_code == 200  # changed, not a second row
    assert (response.json()["correct"], response.json()["label"]) == (False, "dog")
    assert api.get(feedback_url(job.id)).json()["label"] == "dog"
    assert Feedback.objects.count() == 1
    assert api.delete(feedback_url(job.id)).status_code == 204
    assert_error(api.delete(feedback_url(job.id)), 404)
    assert not Feedback.objects.exists()


def test_unknown_label_is_a_clear_400(job):
    error = assert_error(
        api_for(job.owner).post(feedback_url(job.id), {"label": "zebra"}, format="json"), 400, "invalid_label"
    )
    assert "'zebra' is not a class" in error["message"]
    assert "truck" in error["details"]["classes"]


@pytest.mark.parametrize(
    "body",
    [{}, {"correct": 1}, {"correct": "true"}, {"correct": None}, {"label": 5}, {"label": "x" * 65}, {"label": ""}],
)
def test_malformed_bodies_are_400(job, body):
    assert_error(api_for(job.owner).post(feedback_url(job.id), body, format="json"), 400)
    assert not Feedback.objects.exists()


def test_form_bodies_are_415(job):
    response = api_for(job.owner).post(feedback_url(job.id), {"correct": "true"})  # multipart
    assert_error(response, 415)


def test_failed_job_refuses_feedback_with_a_message():
    failed = ClassificationFactory(failed=True)
    error = assert_error(
        api_for(failed.owner).post(feedback_url(failed.id), {"correct": True}, format="json"),
        400,
        "classification_failed",
    )
    assert "failed" in error["message"]


def test_only_the_owner_reaches_feedback(job):
    other = api_for(UserFactory())
    for response in (
        other.get(feedback_url(job.id)),
        other.post(feedback_url(job.id), {"correct": False}, format="json"),
        other.delete(feedback_url(job.id)),
    ):
        assert_error(response, 404, "not_found")
    assert not Feedback.objects.exists()
    anonymous = APIClient()
    assert anonymous.post(feedback_url(job.id), {"correct": True}, format="json").status_code == 401
    assert_error(api_for(job.owner).post(feedback_url(uuid.uuid4()), {"correct": True}, format="json"), 404)
    assert_error(api_for(job.owner).get(feedback_url("not-a-uuid")), 404)


def test_api_never_shows_challenger_predictions(job):
    from classifier.evaluation.models import ShadowPrediction

    ShadowPrediction.objects.create(
        classification=job,
        model_version=ModelVersionFactory(version="secret-challenger"),
        predictions=[{"label": "dog", "probability": 1.0}],
        top_label="dog",
        top_probability=1.0,
    )
    text = api_for(job.owner).get(f"/api/v1/classifications/{job.id}/").content.decode()
    assert "secret-challenger" not in text and "dog" not in text


# ----------------------------------------------------------------------------- export
def read_csv(response) -> list[dict]:
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_export_streams_own_rows_with_feedback():
    owner = UserFactory()
    version = ModelVersionFactory()
    mine = done_job(version, top="cat", owner=owner, original_filename="=HYPERLINK(evil).png")
    Feedback.objects.create(classification=mine, user=owner, correct=False, label="dog")
    Explanation.objects.create(
        classification=mine, model_input=b"", prediction_set=["cat", "dog"], prediction_set_coverage=0.95
    )
    failed = ClassificationFactory(failed=True, owner=owner)
    done_job(version, owner=UserFactory(), original_filename="someone-else.png")
    response = api_for(owner).get(EXPORT_URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="classifications-')
    rows = read_csv(response)
    assert {r["id"] for r in rows} == {str(mine.id), str(failed.id)}
    by_id = {r["id"]: r for r in rows}
    assert by_id[str(mine.id)]["top_label"] == "cat"
    assert by_id[str(mine.id)]["predictions"] == "cat:0.700000"
    assert by_id[str(mine.id)]["answer_set"] == "cat;dog" and by_id[str(failed.id)]["answer_set"] == ""
    assert (by_id[str(mine.id)]["feedback_correct"], by_id[str(mine.id)]["feedback_label"]) == ("false", "dog")
    assert by_id[str(mine.id)]["original_filename"] == "'=HYPERLINK(evil).png"  # no formula in a spreadsheet
    assert by_id[str(failed.id)]["status"] == "failed" and by_id[str(failed.id)]["error"]
    assert by_id[str(failed.id)]["feedback_correct"] == ""


def test_export_has_the_lists_filters():
    owner = UserFactory()
    version = ModelVersionFactory()
    cat = done_job(version, top="cat", owner=owner)
    done_job(version, top="dog", owner=owner)
    ClassificationFactory(failed=True, owner=owner)
    api = api_for(owner)
    assert [r["id"] for r in read_csv(api.get(EXPORT_URL, {"label": "CAT"}))] == [str(cat.id)]
    assert len(read_csv(api.get(EXPORT_URL, {"status": "done"}))) == 2
    assert len(read_csv(api.get(EXPORT_URL, {"status": "", "label": ""}))) == 3
    assert_error(api.get(EXPORT_URL, {"status": "bogus"}), 400)
    assert APIClient().get(EXPORT_URL).status_code == 401


def test_export_accepts_a_csv_accept_header(job):
    response = api_for(job.owner).get(EXPORT_URL, HTTP_ACCEPT="text/csv")
    assert response.status_code == 200 and len(read_csv(response)) == 1


def test_export_of_10000_rows_streams_in_chunks():
    owner = UserFactory()
    version = ModelVersionFactory()
    bulk_done(version, owner, ["cat", "dog"] * 5000, [0.9] * 10000, now())
    response = api_for(owner).get(EXPORT_URL)
    assert isinstance(response, StreamingHttpResponse) and response.streaming
    lines = 0
    first_chunk = None
    # QuerySet._fetch_all is how list(), len() and a plain for loop load every row into memory;
    # the export must read the cursor in chunks (QuerySet.iterator) instead.
    with mock.patch.object(QuerySet, "_fetch_all", side_effect=AssertionError("all rows loaded at once")):
        for chunk in response.streaming_content:
            if first_chunk is None:
                first_chunk = chunk
            lines += 1
    assert first_chunk.startswith(b"id,original_filename,status")
    assert lines == 10_001  # header + one line per row, each its own chunk


def test_session_users_export_from_the_history_page(client, job):
    client.force_login(job.owner)
    html = client.get("/classifications/?status=done").content.decode()
    assert 'href="/api/v1/classifications/export.csv?status=done"' in html
    response = client.get("/api/v1/classifications/export.csv?status=done")
    assert response.status_code == 200 and len(read_csv(response)) == 1
    assert Classification.objects.count() == 1
