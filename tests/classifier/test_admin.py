"""Admin: staff see every classification with thumbnail and prediction; filters and search work."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.classifier.factories import ClassificationFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/classifier/classification/"


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    return client


def test_staff_see_every_users_jobs_with_thumbnail(staff_client, media_root):
    a = ClassificationFactory(owner=UserFactory(username="alice"), done=True)
    b = ClassificationFactory(owner=UserFactory(username="bob"), failed=True)
    html = staff_client.get(CHANGELIST).content.decode()
    assert str(a.id) in html and str(b.id) in html
    assert "alice" in html and "bob" in html
    assert html.count('src="data:image/jpeg;base64,') == 2
    assert "70.0%" in html  # confidence of a
    assert "test-1" in html  # model version


@pytest.mark.parametrize(
    "query,expected",
    [
        ({"status__exact": "failed"}, {"failed"}),
        ({"top_label": "dog"}, {"dog"}),
        ({"q": "carol"}, {"carol"}),
        ({"q": "holiday-snap"}, {"named"}),
        ({"model_version": "v-old"}, {"old"}),
    ],
)
def test_filters_and_search(staff_client, media_root, query, expected):
    rows = {
        "failed": ClassificationFactory(failed=True),
        "dog": ClassificationFactory(done=True, top_label="dog"),
        "carol": ClassificationFactory(owner=UserFactory(username="carol")),
        "named": ClassificationFactory(original_filename="holiday-snap.jpg"),
        "old": ClassificationFactory(done=True, model_version="v-old"),
    }
    response = staff_client.get(CHANGELIST, query)
    assert response.status_code == 200
    shown = {name for name, row in rows.items() if str(row.id) in response.content.decode()}
    assert shown == expected


def test_search_by_id(staff_client, media_root):
    a, b = ClassificationFactory(), ClassificationFactory()
    html = staff_client.get(CHANGELIST, {"q": str(a.id)}).content.decode()
    assert str(a.id) in html and str(b.id) not in html


def test_change_page_shows_read_only_predictions(staff_client, media_root):
    c = ClassificationFactory(done=True)
    response = staff_client.get(f"{CHANGELIST}{c.id}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<td>cat</td><td>70.00%</td>" in html
    assert 'name="top_label"' not in html and 'name="predictions"' not in html  # read-only, not inputs
    # A POST cannot change the prediction either
    staff_client.post(f"{CHANGELIST}{c.id}/change/", {"status": "done", "error": "", "top_label": "dog"})
    c.refresh_from_db()
    assert c.top_label == "cat"


def test_non_staff_cannot_use_the_admin(client, media_root):
    client.force_login(UserFactory())
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_model_bundle_page(staff_client, tiny_bundle):
    html = staff_client.get(f"{CHANGELIST}model-bundle/").content.decode()
    assert "tiny-test-0" in html and "resnet20" in html and "random init" in html


def test_model_bundle_page_reports_a_missing_bundle(staff_client, settings, tmp_path):
    settings.MODEL_BUNDLE = str(tmp_path / "nope")
    html = staff_client.get(f"{CHANGELIST}model-bundle/").content.decode()
    assert "cannot be read" in html
