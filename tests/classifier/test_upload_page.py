"""The upload page carries the server's limits and messages for the browser's checks, and the plain
form (no JavaScript) still uploads several files in one POST."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from classifier import services
from classifier.models import Classification
from tests.classifier.factories import UserFactory
from tests.conftest import make_image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(client):
    client.force_login(UserFactory(username="una"))
    return client


def data_attributes(page: str) -> dict[str, str]:
    form = re.search(r'<form[^>]*id="upload-form"[^>]*>', page, re.S).group(0)
    return {k: html_lib.unescape(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', form)}


def test_upload_page_gives_the_browser_the_server_limits_and_messages(web, settings):
    settings.MAX_UPLOAD_BYTES = 3 * 1024 * 1024
    page = web.get(reverse("classifier:upload")).content.decode()
    attrs = data_attributes(page)
    assert attrs["api-url"] == "/api/v1/classifications/?explain=true"  # the page draws the maps
    assert attrs["max-bytes"] == str(3 * 1024 * 1024)
    assert attrs["max-files"] == str(settings.DATA_UPLOAD_MAX_NUMBER_FILES)
    assert ".heic" in attrs["accept"].split(",") and "image/avif" in attrs["accept"].split(",")
    assert "Up to 3.0 MB per file" in page
    # The template the browser fills in is the one the server itself uses for an oversized file.
    oversize = SimpleUploadedFile("big.png", b"\x89PNG" + b"0" * (3 * 1024 * 1024 + 10))
    response = web.post(reverse("classifier:upload"), {"images": [oversize]})
    expected = attrs["msg-too-large"].format(size="3.0 MB", limit="3.0 MB")
    assert expected == services.MSG_FILE_TOO_LARGE.format(size="3.0 MB", limit="3.0 MB")
    assert html_lib.escape(expected) in response.content.decode()
    assert "js/upload.js" in page and "<script>" not in page


def test_plain_form_post_without_javascript_uploads_several_files(web, media_root):
    files = [
        SimpleUploadedFile(f"p{i}.jpg", make_image_bytes("jpg", size=(40, 30), color=(40 * i, 90, 30)))
        for i in range(2)
    ]
    bad = SimpleUploadedFile("notes.png", b"not an image at all")
    response = web.post(reverse("classifier:upload"), {"images": [*files, bad]}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("classifier:history")
    assert Classification.objects.count() == 2
    page = response.content.decode()
    assert "notes.png: The file is not an image we can read" in page
    assert "2 images queued for classification." in page
