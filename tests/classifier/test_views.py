"""HTML pages through the Django test client: sign-up, upload, result, history, delete, files."""

from __future__ import annotations

import io
import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from classifier import services
from classifier.models import Classification

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple-42"


# --- helpers and fixtures ------------------------------------------------------------------


def image_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buffer = io.BytesIO()
    mode = "RGB"
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def upload_file(name: str, data: bytes, content_type: str = "application/octet-stream") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password=PASSWORD)


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def make_row(owner, **fields) -> Classification:
    """A row without files, for pages that only list or show fields."""
    fields.setdefault("image_format", "png")
    fields.setdefault("original_filename", "cat.png")
    return Classification.objects.create(owner=owner, image=f"uploads/x/{uuid.uuid4()}.png", **fields)


def stored(owner, fmt: str = "PNG", name: str = "photo.png") -> Classification:
    """A row created by the real service: image and thumbnail on disk, left queued (nothing runs
    because on_commit callbacks are not executed inside the test transaction)."""
    return services.classification_create(owner=owner, upload=upload_file(name, image_bytes(fmt)))


# --- anonymous users ------------------------------------------------------------------------


def test_home_page_invites_anonymous_users_to_sign_up(client):
    response = client.get("/")
    assert response.status_code == 200
    assert reverse("classifier:signup").encode() in response.content
    assert reverse("login").encode() in response.content


def test_home_page_sends_logged_in_users_to_upload(alice_client):
    response = alice_client.get("/")
    assert response.status_code == 302
    assert response["Location"] == reverse("classifier:upload")


@pytest.mark.parametrize(
    "name, needs_id",
    [
        ("classifier:upload", False),
        ("classifier:history", False),
        ("classifier:result", True),
        ("classifier:delete", True),
        ("classifier:image", True),
        ("classifier:thumbnail", True),
    ],
)
def test_anonymous_users_are_sent_to_login(client, alice, name, needs_id):
    kwargs = {"id": make_row(alice).id} if needs_id else {}
    url = reverse(name, kwargs=kwargs)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert "next=" in response["Location"]


# --- sign up, log in, log out ---------------------------------------------------------------


def test_sign_up_creates_the_account_and_logs_in(client):
    response = client.post(
        reverse("classifier:signup"),
        {"username": "carol", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("classifier:upload")
    user = get_user_model().objects.get(username="carol")
    assert client.session["_auth_user_id"] == str(user.pk)
    assert client.get(reverse("classifier:upload")).status_code == 200


@pytest.mark.parametrize("password", ["12345678", "password", "carol", "abc"])
def test_sign_up_refuses_weak_passwords(client, password):
    response = client.post(
        reverse("classifier:signup"),
        {"username": "carol", "password1": password, "password2": password},
    )
    assert response.status_code == 400
    assert not get_user_model().objects.filter(username="carol").exists()
    assert b"errorlist" in response.content


def test_sign_up_refuses_mismatched_passwords(client):
    response = client.post(
        reverse("classifier:signup"),
        {"username": "carol", "password1": PASSWORD, "password2": PASSWORD + "x"},
    )
    assert response.status_code == 400
    assert not get_user_model().objects.filter(username="carol").exists()


def test_log_in_and_log_out(client, alice):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b'name="username"' in page.content and b'name="password"' in page.content

    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("classifier:history")).status_code == 200

    # Log-out is a POST form (Django 5 refuses GET).
    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response.status_code in (200, 302)
    assert client.get(reverse("classifier:history")).status_code == 302


def test_wrong_password_is_refused(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope-nope-nope"})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_nav_shows_admin_link_to_staff_only(client, alice, django_user_model):
    client.force_login(alice)
    assert reverse("admin:index").encode() not in client.get(reverse("classifier:upload")).content
    staff = django_user_model.objects.create_user("staff", password=PASSWORD, is_staff=True)
    client.force_login(staff)
    content = client.get(reverse("classifier:upload")).content
    assert reverse("admin:index").encode() in content
    assert b"/api/v1/docs/" in content


# --- upload ---------------------------------------------------------------------------------


def test_upload_page_has_a_multiple_file_input(alice_client):
    response = alice_client.get(reverse("classifier:upload"))
    assert response.status_code == 200
    html = response.content.decode()
    file_input = re.search(r"<input[^>]*type=\"file\"[^>]*>", html).group(0)
    assert "multiple" in file_input
    assert "image/webp" in file_input and ".tiff" in file_input
    assert 'for="id_images"' in html  # a label for the input


def test_upload_one_image_redirects_to_its_result(alice_client, alice):
    response = alice_client.post(reverse("classifier:upload"), {"images": upload_file("cat.png", image_bytes("PNG"))})
    classification = Classification.objects.get(owner=alice)
    assert response.status_code == 302
    assert response["Location"] == reverse("classifier:result", kwargs={"id": classification.id})
    assert classification.original_filename == "cat.png"
    assert classification.status == Classification.Status.QUEUED


@pytest.mark.parametrize(
    "fmt, ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tiff")]
)
def test_upload_accepts_every_supported_format(alice_client, alice, fmt, ext):
    response = alice_client.post(reverse("classifier:upload"), {"images": upload_file(f"x.{ext}", image_bytes(fmt))})
    assert response.status_code == 302
    assert Classification.objects.get(owner=alice).image_format == ext


def test_upload_several_images_creates_one_job_each_and_shows_history(alice_client, alice):
    files = [upload_file(f"img{i}.png", image_bytes("PNG", color=(i * 40, 0, 0))) for i in range(3)]
    response = alice_client.post(reverse("classifier:upload"), {"images": files}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("classifier:history")
    assert Classification.objects.filter(owner=alice).count() == 3
    html = response.content.decode()
    for i in range(3):
        assert f"img{i}.png" in html
    assert "3 images queued" in html


@pytest.mark.django_db(transaction=True)  # real commits: in-process mode runs each task on commit
def test_upload_message_says_the_images_are_classified_when_they_are(alice_client, alice, tiny_bundle):
    files = [upload_file(f"img{i}.png", image_bytes("PNG", color=(i * 40, 0, 0))) for i in range(6)]
    response = alice_client.post(reverse("classifier:upload"), {"images": files}, follow=True)
    assert set(Classification.objects.filter(owner=alice).values_list("status", flat=True)) == {"done"}
    html = response.content.decode()
    assert "6 images classified." in html
    assert "queued for classification" not in html


@pytest.mark.parametrize(
    "counts, expected",
    [
        ({"done": 6}, "6 images classified."),
        ({"queued": 3}, "3 images queued for classification."),
        (
            {"done": 4, "failed": 1, "queued": 1},
            "6 images uploaded: 4 classified, 1 failed, 1 queued for classification.",
        ),
        ({"running": 1, "done": 1}, "2 images uploaded: 1 classified, 1 being classified."),
    ],
)
def test_upload_message_is_worded_by_status(counts, expected):
    from classifier.views import _upload_summary

    assert _upload_summary(sum(counts.values()), counts) == expected


def test_upload_keeps_good_files_and_names_the_bad_ones(alice_client, alice):
    files = [
        upload_file("good.jpg", image_bytes("JPEG")),
        upload_file("notes.jpg", b"this is plain text, not a picture"),
        upload_file("empty.png", b""),
        upload_file("good2.png", image_bytes("PNG")),
    ]
    response = alice_client.post(reverse("classifier:upload"), {"images": files}, follow=True)
    assert response.status_code == 200
    names = set(Classification.objects.filter(owner=alice).values_list("original_filename", flat=True))
    assert names == {"good.jpg", "good2.png"}
    html = response.content.decode()
    assert "notes.jpg: The file is not an image" in html
    assert "empty.png: The file is empty" in html


def test_upload_of_only_bad_files_stays_on_the_form_with_a_message_per_file(alice_client, alice):
    png = image_bytes("PNG")
    files = [
        upload_file("script.jpg", b"<script>alert(1)</script>"),
        upload_file("truncated.png", png[: len(png) // 2]),
    ]
    response = alice_client.post(reverse("classifier:upload"), {"images": files})
    assert response.status_code == 400
    assert not Classification.objects.exists()
    html = response.content.decode()
    assert "No image was accepted" in html
    assert "script.jpg" in html and "truncated.png" in html
    assert "&lt;script&gt;" not in html  # file content is never echoed
    assert "truncated or corrupt" in html


def test_upload_without_files_asks_for_one(alice_client):
    response = alice_client.post(reverse("classifier:upload"), {})
    assert response.status_code == 400
    assert "Choose at least one image" in response.content.decode()
    assert not Classification.objects.exists()


def test_upload_refuses_more_files_than_the_limit(alice_client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    files = [upload_file(f"{i}.png", image_bytes("PNG")) for i in range(4)]
    response = alice_client.post(reverse("classifier:upload"), {"images": files})
    assert response.status_code == 400
    assert "upload at most 3 at a time" in response.content.decode()
    assert not Classification.objects.exists()


def test_upload_runs_the_model_when_the_transaction_commits(
    alice_client, alice, tiny_bundle, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(reverse("classifier:upload"), {"images": upload_file("a.png", image_bytes())})
    classification = Classification.objects.get(owner=alice)
    assert classification.status == Classification.Status.DONE
    page = alice_client.get(response["Location"])
    html = page.content.decode()
    assert html.count('class="prediction-bar"') == 5
    assert classification.model_version in html
    assert classification.top_label in html
    assert 'http-equiv="refresh"' not in html  # finished: no reloading


# --- result page ----------------------------------------------------------------------------


def test_result_page_of_a_queued_job_polls_the_api_and_has_a_no_js_fallback(alice_client, alice):
    classification = stored(alice)
    response = alice_client.get(reverse("classifier:result", kwargs={"id": classification.id}))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-api-url="/api/v1/classifications/{classification.id}/"' in html
    assert 'data-status="queued"' in html
    assert "js/result.js" in html
    assert '<noscript><meta http-equiv="refresh"' in html
    # A PNG is shown as the original (larger than the thumbnail); browsers can display it.
    assert f'src="{reverse("classifier:image", kwargs={"id": classification.id})}"' in html
    assert "<script>" not in html  # no inline scripts (CSP)


def test_result_page_shows_top_five_bars_model_and_timings(alice_client, alice):
    now = timezone.now()
    predictions = [
        {"label": label, "probability": p}
        for label, p in [("cat", 0.61), ("dog", 0.2), ("frog", 0.1), ("deer", 0.05), ("bird", 0.03), ("ship", 0.01)]
    ]
    row = make_row(
        alice,
        status="done",
        predictions=predictions,
        top_label="cat",
        top_probability=0.61,
        model_version="tiny-v1",
        started_at=now + timedelta(seconds=1),
        finished_at=now + timedelta(seconds=3),
    )
    html = alice_client.get(reverse("classifier:result", kwargs={"id": row.id})).content.decode()
    assert html.count('class="prediction-bar"') == 5
    assert "ship" not in html  # only the top five
    assert "61.0%" in html and "tiny-v1" in html
    assert 'value="0.610000"' in html


def test_result_page_of_a_failed_job_shows_the_error(alice_client, alice):
    row = make_row(alice, status="failed", error="The image could not be read: it is corrupt.")
    html = alice_client.get(reverse("classifier:result", kwargs={"id": row.id})).content.decode()
    assert "The image could not be read: it is corrupt." in html
    assert 'http-equiv="refresh"' not in html


def test_result_page_of_another_users_job_is_404(alice_client, bob):
    row = make_row(bob)
    assert alice_client.get(reverse("classifier:result", kwargs={"id": row.id})).status_code == 404
    assert alice_client.get(reverse("classifier:result", kwargs={"id": uuid.uuid4()})).status_code == 404


# --- history --------------------------------------------------------------------------------


def test_history_lists_only_own_rows_newest_first(alice_client, alice, bob):
    old = make_row(alice, original_filename="old.png")
    new = make_row(alice, original_filename="new.png")
    Classification.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    make_row(bob, original_filename="bobs.png")
    html = alice_client.get(reverse("classifier:history")).content.decode()
    assert "bobs.png" not in html
    assert html.index("new.png") < html.index("old.png")
    assert reverse("classifier:thumbnail", kwargs={"id": new.id}) in html


def test_history_is_paginated_by_twenty(alice_client, alice):
    base = timezone.now()
    for i in range(25):
        row = make_row(alice, original_filename=f"file{i:02d}.png")
        Classification.objects.filter(pk=row.pk).update(created_at=base - timedelta(minutes=i))
    first = alice_client.get(reverse("classifier:history")).content.decode()
    assert first.count('class="thumb"') == 20
    assert "file00.png" in first and "file19.png" in first and "file20.png" not in first
    assert "Page 1 of 2" in first
    second = alice_client.get(reverse("classifier:history"), {"page": 2}).content.decode()
    assert second.count('class="thumb"') == 5
    assert "file24.png" in second and "file00.png" not in second
    # Out-of-range and junk page numbers fall back to a real page instead of an error.
    assert alice_client.get(reverse("classifier:history"), {"page": 99}).status_code == 200
    assert alice_client.get(reverse("classifier:history"), {"page": "x"}).status_code == 200


def test_history_pagination_keeps_the_filters(alice_client, alice):
    for _ in range(21):
        make_row(alice, status="done", top_label="cat", top_probability=0.5)
    html = alice_client.get(reverse("classifier:history"), {"status": "done"}).content.decode()
    assert "?status=done&amp;page=2" in html


def test_history_filters_by_status_and_label(alice_client, alice):
    make_row(alice, original_filename="cat.png", status="done", top_label="cat", top_probability=0.9)
    make_row(alice, original_filename="dog.png", status="done", top_label="dog", top_probability=0.8)
    make_row(alice, original_filename="waiting.png", status="queued")
    done = alice_client.get(reverse("classifier:history"), {"status": "done"}).content.decode()
    assert "cat.png" in done and "dog.png" in done and "waiting.png" not in done
    dogs = alice_client.get(reverse("classifier:history"), {"label": "dog"}).content.decode()
    assert "dog.png" in dogs and "cat.png" not in dogs
    none = alice_client.get(reverse("classifier:history"), {"label": "ship"}).content.decode()
    assert "No classification matches these filters." in none
    # An unknown status is ignored by the form, not a server error.
    assert alice_client.get(reverse("classifier:history"), {"status": "bogus"}).status_code == 200


def test_history_shows_top_class_and_confidence(alice_client, alice):
    make_row(alice, status="done", top_label="airplane", top_probability=0.875)
    html = alice_client.get(reverse("classifier:history")).content.decode()
    assert "airplane" in html and "87.5%" in html


# --- delete ---------------------------------------------------------------------------------


def test_delete_removes_own_row_and_files(alice_client, alice, media_root, django_capture_on_commit_callbacks):
    classification = stored(alice)
    image_path = media_root / classification.image.name
    thumbnail_path = media_root / classification.thumbnail.name
    assert image_path.exists() and thumbnail_path.exists()
    url = reverse("classifier:delete", kwargs={"id": classification.id})
    confirm = alice_client.get(url)
    assert confirm.status_code == 200 and b"cannot be undone" in confirm.content

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("classifier:history")
    assert not Classification.objects.filter(pk=classification.pk).exists()
    assert not image_path.exists() and not thumbnail_path.exists()


def test_delete_follows_a_local_next_only(alice_client, alice):
    row = make_row(alice)
    response = alice_client.post(
        reverse("classifier:delete", kwargs={"id": row.id}), {"next": "/classifications/?page=2"}
    )
    assert response["Location"] == "/classifications/?page=2"
    row = make_row(alice)
    response = alice_client.post(reverse("classifier:delete", kwargs={"id": row.id}), {"next": "https://evil.example/"})
    assert response["Location"] == reverse("classifier:history")


def test_delete_of_another_users_row_is_404_and_keeps_it(alice_client, bob):
    row = make_row(bob)
    url = reverse("classifier:delete", kwargs={"id": row.id})
    assert alice_client.post(url).status_code == 404
    assert alice_client.get(url).status_code == 404
    assert Classification.objects.filter(pk=row.pk).exists()


def test_history_delete_buttons_are_post_forms_with_csrf_and_confirm(alice_client, alice):
    row = make_row(alice)
    html = alice_client.get(reverse("classifier:history")).content.decode()
    action = re.escape(reverse("classifier:delete", kwargs={"id": row.id}))
    form = re.search(rf'<form method="post" action="{action}"[^>]*>.*?</form>', html, re.S).group(0)
    assert "csrfmiddlewaretoken" in form
    assert "data-confirm=" in form


# --- image and thumbnail --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["classifier:image", "classifier:thumbnail"])
def test_owner_gets_the_file_with_safe_headers(alice_client, alice, name):
    classification = stored(alice, fmt="PNG")
    response = alice_client.get(reverse(name, kwargs={"id": classification.id}))
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    expected_type = "image/png" if name == "classifier:image" else "image/jpeg"
    assert response["Content-Type"] == expected_type
    assert Image.open(io.BytesIO(body)).format == ("PNG" if name == "classifier:image" else "JPEG")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert response["Cache-Control"].startswith("private")


@pytest.mark.parametrize("name", ["classifier:image", "classifier:thumbnail"])
def test_other_users_get_404_for_files_and_staff_get_them(client, alice, bob, django_user_model, name):
    classification = stored(alice)
    url = reverse(name, kwargs={"id": classification.id})
    client.force_login(bob)
    assert client.get(url).status_code == 404
    staff = django_user_model.objects.create_user("staff", password=PASSWORD, is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 200


def test_missing_file_is_404_not_500(alice_client, alice):
    row = make_row(alice)  # points at a file that was never written
    assert alice_client.get(reverse("classifier:image", kwargs={"id": row.id})).status_code == 404
    assert alice_client.get(reverse("classifier:thumbnail", kwargs={"id": row.id})).status_code == 404


def test_stored_file_names_contain_nothing_the_user_sent(alice):
    classification = services.classification_create(
        owner=alice, upload=upload_file("../../etc/passwd<x>.png", image_bytes("PNG"))
    )
    assert "passwd" not in classification.image.name
    assert str(classification.id) in classification.image.name


# --- error pages ----------------------------------------------------------------------------


def test_unknown_page_uses_the_site_404_template(alice_client):
    response = alice_client.get("/no-such-page/")
    assert response.status_code == 404
    assert b"There is nothing here" in response.content
