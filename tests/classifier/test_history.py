"""History page: class drop-down from the model's classes, file-name search, date range in the
browser's time zone, status, bulk delete (own rows only), times as <time datetime>, CSV button."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from classifier import selectors, services
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory, UserFactory

pytestmark = pytest.mark.django_db

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def alice():
    return UserFactory(username="alice")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def listed(client, **query) -> list[str]:
    html = client.get(reverse("classifier:history"), query).content.decode()
    return re.findall(r'<td data-label="File"><a href="[^"]+">([^<]+)</a>', html)


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00").replace(tzinfo=UTC)


def test_class_drop_down_offers_the_bundle_classes_then_older_labels(alice_client, alice, media_root, tiny_bundle):
    ClassificationFactory(owner=alice, done=True, top_label="wombat")  # from an older model version
    ClassificationFactory(owner=UserFactory(), done=True, top_label="secretlabel")  # someone else's
    assert selectors.classification_label_choices(user=alice) == [*CIFAR10, "wombat"]
    html = alice_client.get(reverse("classifier:history")).content.decode()
    select = re.search(r'<select name="label".*?</select>', html, re.S).group(0)
    assert re.findall(r'<option value="([^"]*)"', select) == ["", *CIFAR10, "wombat"]
    assert "secretlabel" not in html


def test_label_search_and_status_filters_combine(alice_client, alice, media_root):
    ClassificationFactory(owner=alice, done=True, top_label="cat", original_filename="IMG_0001.heic")
    ClassificationFactory(owner=alice, done=True, top_label="dog", original_filename="IMG_0002.jpg")
    ClassificationFactory(owner=alice, top_label="", original_filename="holiday-img.png")  # queued
    assert sorted(listed(alice_client, q="img_")) == ["IMG_0001.heic", "IMG_0002.jpg"]
    assert listed(alice_client, q="IMG", label="dog") == ["IMG_0002.jpg"]
    assert listed(alice_client, q="img", status="queued") == ["holiday-img.png"]
    # An unknown class is ignored (not a 500, not an empty page); the other filters still apply.
    assert sorted(listed(alice_client, q="IMG_", label="not-a-class")) == ["IMG_0001.heic", "IMG_0002.jpg"]


def test_date_range_is_whole_days_in_the_browser_time_zone(alice_client, alice, media_root):
    ClassificationFactory(owner=alice, original_filename="late-on-the-30th-utc.png", created_at=at("2026-11-30", 23))
    ClassificationFactory(owner=alice, original_filename="noon-1st.png", created_at=at("2026-12-01", 12))
    ClassificationFactory(owner=alice, original_filename="noon-2nd.png", created_at=at("2026-12-02", 12))
    assert sorted(listed(alice_client, date_from="2026-12-01", date_to="2026-12-01")) == ["noon-1st.png"]
    assert sorted(listed(alice_client, date_from="2026-12-01")) == ["noon-1st.png", "noon-2nd.png"]
    assert sorted(listed(alice_client, date_to="2026-11-30")) == ["late-on-the-30th-utc.png"]
    # 23:00 UTC on the 30th is already 1 December in Berlin (UTC+1).
    berlin = listed(alice_client, date_from="2026-12-01", date_to="2026-12-01", tz="Europe/Berlin")
    assert sorted(berlin) == ["late-on-the-30th-utc.png", "noon-1st.png"]
    # A made-up zone falls back to UTC.
    assert listed(alice_client, date_from="2026-12-01", date_to="2026-12-01", tz="Mars/Olympus") == ["noon-1st.png"]


def test_times_are_machine_readable_for_the_browser(alice_client, alice, media_root):
    ClassificationFactory(owner=alice, created_at=at("2026-12-01", 9))
    html = alice_client.get(reverse("classifier:history")).content.decode()
    assert '<time datetime="2026-12-01T09:00:00+00:00" data-format="datetime">2026-12-01 09:00 UTC</time>' in html
    assert "data-time-zone" in html and 'name="tz"' in html


def test_bulk_delete_removes_only_own_selected_rows(
    alice_client, alice, media_root, django_capture_on_commit_callbacks
):
    keep, first, second = (ClassificationFactory(owner=alice) for _ in range(3))
    others = ClassificationFactory(owner=UserFactory())
    files = [media_root / first.image.name, media_root / first.thumbnail.name]
    assert all(f.exists() for f in files)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            reverse("classifier:bulk_delete"),
            {"ids": [first.id, second.id, others.id, "not-a-uuid"], "next": "/classifications/?status=queued"},
        )
    assert response.status_code == 302 and response["Location"] == "/classifications/?status=queued"
    assert set(Classification.objects.values_list("id", flat=True)) == {keep.id, others.id}
    assert not any(f.exists() for f in files)
    assert "Deleted 2 classifications." in alice_client.get(reverse("classifier:history")).content.decode()


def test_bulk_delete_needs_a_selection_and_a_post(alice_client, alice, media_root):
    ClassificationFactory(owner=alice)
    assert alice_client.get(reverse("classifier:bulk_delete")).status_code == 405
    response = alice_client.post(reverse("classifier:bulk_delete"), {}, follow=True)
    assert "Select at least one classification to delete." in response.content.decode()
    assert Classification.objects.count() == 1


def test_one_export_button_that_carries_the_filters(alice_client, alice, media_root):
    ClassificationFactory(owner=alice)
    html = alice_client.get(reverse("classifier:history")).content.decode()
    assert html.count('id="export-csv"') == 1
    assert 'href="/api/v1/classifications/export.csv"' in html
    html = alice_client.get(reverse("classifier:history"), {"label": "cat"}).content.decode()
    assert html.count('id="export-csv"') == 1
    assert 'href="/api/v1/classifications/export.csv?label=cat"' in html


def test_services_delete_many_ignores_unknown_ids(alice, media_root):
    row = ClassificationFactory(owner=alice)
    import uuid

    assert services.classification_delete_many(owner=alice, ids=[uuid.uuid4()]) == 0
    assert services.classification_delete_many(owner=alice, ids=[row.id]) == 1
