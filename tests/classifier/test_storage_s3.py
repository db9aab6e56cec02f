"""Media on S3 for real: a local S3-compatible server (moto's server mode, a separate process on
127.0.0.1) behind django-storages, and the whole life of a job against it: upload -> worker
(the real task and tiny bundle, in-process) -> result -> the owner-only image views -> delete.

Skipped when moto[server] is not installed (it is in requirements-dev.txt).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier.models import Classification
from tests.classifier.factories import UserFactory
from tests.conftest import make_image_bytes
from tests.e2e.procs import free_port, port_open, stop_group, wait_until

pytest.importorskip("moto.server", reason="moto[server] is not installed")
boto3 = pytest.importorskip("boto3")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

BUCKET = "cifar-media-test"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: port_open(port), 60, "the moto S3 server")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)


@pytest.fixture
def s3(s3_endpoint, settings):
    client = boto3.client("s3", endpoint_url=s3_endpoint, **KEYS)
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "access_key": KEYS["aws_access_key_id"],
                "secret_key": KEYS["aws_secret_access_key"],
                "region_name": KEYS["region_name"],
                "endpoint_url": s3_endpoint,
                "location": "media",
                "default_acl": "private",
                "querystring_auth": True,
                "file_overwrite": False,
            },
        },
    }
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def keys(client) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_upload_classify_read_and_delete_against_s3(s3, tiny_bundle, settings):
    settings.PUSH_REDIS_URL = ""
    user = UserFactory()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    image = make_image_bytes("png", size=(64, 48), color=(20, 120, 200))

    response = api.post("/api/v1/classifications/?wait=10", {"image": _file(image)}, format="multipart")
    assert response.status_code == 202, response.content
    job = response.json()
    assert job["status"] == "done"  # the task ran (in-process) and read the image back from S3
    assert len(job["predictions"]) == 5 and job["model_version"] == "tiny-test-0"

    c = Classification.objects.get(id=job["id"])
    assert keys(s3) == sorted([f"media/{c.image.name}", f"media/{c.thumbnail.name}"])
    assert s3.get_object(Bucket=BUCKET, Key=f"media/{c.image.name}")["Body"].read() == image
    assert s3.get_object_acl(Bucket=BUCKET, Key=f"media/{c.image.name}")["Grants"][0]["Permission"] == "FULL_CONTROL"

    # The owner-only views stream the bytes from S3 (never a public URL).
    browser = APIClient()
    browser.force_login(user)
    served = browser.get(f"/classifications/{c.id}/image")
    assert served.status_code == 200 and b"".join(served.streaming_content) == image
    thumb = browser.get(f"/classifications/{c.id}/thumbnail")
    assert thumb.status_code == 200 and b"".join(thumb.streaming_content)[:2] == b"\xff\xd8"  # a JPEG
    other = APIClient()
    other.force_login(UserFactory())
    assert other.get(f"/classifications/{c.id}/image").status_code == 404

    assert api.delete(f"/api/v1/classifications/{c.id}/").status_code == 204
    assert keys(s3) == []  # both files removed from the bucket once the deletion committed
    assert not Classification.objects.filter(id=c.id).exists()


def test_a_refused_upload_leaves_nothing_in_the_bucket(s3):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=UserFactory()).key}")
    response = api.post("/api/v1/classifications/", {"image": _file(b"not an image" * 50)}, format="multipart")
    assert response.status_code == 400
    assert keys(s3) == []


def _file(data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("picture.png", data)
