"""AVIF and HEIC photos through the HTML form: stored, queued and classified by the real task."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from classifier.models import Classification
from tests.conftest import make_image_bytes

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("fmt", "name"), [("avif", "photo.avif"), ("heic", "IMG_0001.HEIC")])
def test_avif_and_heic_uploads_are_classified(
    client, django_user_model, tiny_bundle, media_root, django_capture_on_commit_callbacks, fmt, name
):
    user = django_user_model.objects.create_user("pat", password="x-pass-word-1")
    client.force_login(user)
    upload = SimpleUploadedFile(name, make_image_bytes(fmt, size=(60, 40)), content_type="application/octet-stream")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("classifier:upload"), {"images": [upload]})
    assert response.status_code == 302
    job = Classification.objects.get(owner=user)
    assert job.image_format == fmt
    assert job.status == Classification.Status.DONE  # eager Celery: the real task ran the tiny bundle
    assert len(job.predictions) == 5
    # The owner-only original is served with its real type.
    assert client.get(reverse("classifier:image", args=[job.id]))["Content-Type"] == f"image/{fmt}"


def test_upload_page_lists_the_accepted_formats(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("quin", password="x-pass-word-1"))
    page = client.get(reverse("classifier:upload")).content.decode()
    assert "AVIF" in page and "HEIC/HEIF" in page
    assert ".heic" in page and "image/avif" in page  # offered by the picker
