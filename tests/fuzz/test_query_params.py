"""Property tests (Hypothesis) for the API's query parameters, in-process on the test database.

A user owns jobs in every status with a few top labels; another user owns jobs too. Arbitrary
query strings (the real parameter names with any text, plus unknown names) must never give a
5xx, and what comes back must be right, not just well-formed:

* list: 200 with exactly the caller's rows that match the filters (compared with a count made
  here in Python), pages no larger than the page size, newest first; or 400/404 in the error
  shape, 400 only when a filter value is invalid.
* retrieve: 200 only for the caller's own job ids, 404 for anything else (someone else's id, a
  malformed id, unicode, NUL), 400 only for a bad ``wait``.
* create: any ``wait`` is 202 or a 400 that names ``wait``.
"""

from __future__ import annotations

import math
from urllib.parse import quote, urlencode

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory, UserFactory
from tests.conftest import make_image_bytes

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/classifications/"
STATUSES = Classification.Status.values
LABELS = ["cat", "dog", "Ship"]
PROPERTY_SETTINGS = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Text that looks like each parameter's valid values, and text that does not.
any_text = st.text(max_size=80)
status_values = st.one_of(st.sampled_from(STATUSES + ["", "DONE", " done", "done "]), any_text)
label_values = st.one_of(st.sampled_from(LABELS + ["CAT", "", "x" * 64, "x" * 65]), any_text)
number_text = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "0", "1", "2", "last", "1e3", "0x10", "nan", "inf", "-0", " 1"]),
    any_text,
)
query_strategy = st.dictionaries(
    st.one_of(st.sampled_from(["status", "label", "page", "page_size", "wait"]), st.text(max_size=10)),
    st.one_of(status_values, label_values, number_text),
    max_size=5,
)


@pytest.fixture
def owner(settings, media_root):
    settings.API_MAX_WAIT_SECONDS = 0.05  # a queued job with ?wait= must not hold the test up
    user = UserFactory()
    rows = []
    for i, status in enumerate(STATUSES * 3):
        label = LABELS[i % len(LABELS)] if status == "done" else ""
        rows.append(ClassificationFactory(owner=user, status=status, top_label=label))
    ClassificationFactory.create_batch(3, done=True)  # another user's, never visible
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client, rows


def _assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    return body["error"]


def _expected_rows(rows, status: str, label: str) -> list:
    return [
        r for r in rows if (not status or r.status == status) and (not label or r.top_label.lower() == label.lower())
    ]


def _page_size(query: dict[str, str]) -> int:
    try:
        size = int(query.get("page_size", ""))
    except ValueError:
        return 20
    return min(size, 100) if size > 0 else 20


@given(query=query_strategy)
@PROPERTY_SETTINGS
def test_list_with_any_query_is_correct_or_refused(owner, query):
    client, rows = owner
    response = client.get(f"{LIST_URL}?{urlencode(query)}")
    status, label = query.get("status", ""), query.get("label", "")
    filters_valid = status in ["", *STATUSES] and len(label) <= 64 and "\x00" not in label
    if not filters_valid:
        error = _assert_error(response, 400)
        assert set(error["details"]) & {"status", "label"}
        return
    expected = _expected_rows(rows, status, label)
    if response.status_code == 404:  # a page that does not exist
        assert _assert_error(response, 404)["message"] == "Invalid page."
        return
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == len(expected)
    ids = [item["id"] for item in body["results"]]
    assert len(ids) <= _page_size(query)
    assert set(ids) <= {str(r.id) for r in expected}
    queued_at = [item["queued_at"] for item in body["results"]]
    assert queued_at == sorted(queued_at, reverse=True)


@given(job=st.integers(0, 11), wait=st.one_of(st.none(), number_text))
@PROPERTY_SETTINGS
def test_retrieve_own_job_with_any_wait(owner, job, wait):
    client, rows = owner
    query = "" if wait is None else "?" + urlencode({"wait": wait})
    response = client.get(f"{LIST_URL}{rows[job].id}/{query}")
    if wait is None:
        wait_valid = True
    elif wait == "":
        wait_valid = False  # present without a value: an error (the schema says a number), not "no wait"
    else:
        try:
            wait_valid = float(wait) >= 0 and math.isfinite(float(wait))
        except ValueError:
            wait_valid = False
    if wait_valid:
        assert response.status_code == 200, response.content
        assert response.json()["id"] == str(rows[job].id)
    else:
        assert "wait" in _assert_error(response, 400)["details"]


@given(classification_id=st.one_of(st.uuids().map(str), any_text.filter(lambda s: "/" not in s and s.strip())))
@PROPERTY_SETTINGS
def test_retrieve_anything_but_own_ids_is_404(owner, classification_id):
    client, rows = owner
    others = [str(c.id) for c in Classification.objects.exclude(owner__in=[rows[0].owner])]
    for candidate in (classification_id, *others):
        response = client.get(f"{LIST_URL}{quote(candidate, safe='')}/")
        if candidate in {str(r.id) for r in rows}:
            continue  # st.uuids() hitting a real id is as likely as a collision
        _assert_error(response, 404)


@given(wait=number_text)
@settings(PROPERTY_SETTINGS, max_examples=25)
def test_create_with_any_wait_is_202_or_refused(owner, wait):
    client, _ = owner
    cache.clear()  # the upload throttle is not what this test is about
    image = make_image_bytes("png", size=(12, 10))
    response = client.post(
        f"{LIST_URL}?{urlencode({'wait': wait})}", {"image": SimpleUploadedFile("a.png", image)}, format="multipart"
    )
    assert response.status_code in (202, 400), response.content
    if response.status_code == 400:
        assert "wait" in _assert_error(response, 400)["details"]
