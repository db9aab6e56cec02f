"""Try without an account: classify one uploaded image during the request and keep nothing.

The image takes the same checks as a real upload (the byte limit of `services._read_upload`, the
upload check `inspect_upload`) and is shrunk here to the model's input (`decode_for_model`, the
worker's decode; a 32x32 PNG of a few KB, whatever the upload's size). The worker classifies that,
as it does a live camera frame (`classifier.frames`: ``classify_frame``, answered by push, the
message expiring after ``FRAME_TIMEOUT_SECONDS``), so the web process never loads the model. Before,
the first demo of each web process imported torch and loaded the bundle: 2.6-2.7 s for that visitor
and about 245 MB more per web process (`python -m benchmarks.cold_start`), and every demo ran the
model on the web's cores. No row, no file and no log
line with the image is written; the bytes are dropped when the request ends. Requests are limited
per client IP by `DemoIPThrottle` (rate ``demo_ip``, setting ``DEMO_RATE``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from PIL import Image

from classifier import frames, services
from classifier.errors import ApplicationError
from classifier.throttling import _SharedRateThrottle
from worker.runtime.images import ImageInfo, ImageRejected, decode_for_model, inspect_upload
from worker.runtime.manifest import read_manifest

MSG_NO_ANSWER = "The classifier did not answer in time; it may be busy or restarting. Please try again in a moment."


class DemoIPThrottle(_SharedRateThrottle):
    scope = "demo_ip"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def demo_throttle_wait(request) -> float | None:
    """None when the demo may run for this client, else the seconds to wait."""
    throttle = DemoIPThrottle()
    if throttle.allow_request(request, None):
        return None
    return throttle.wait() or 1.0


@dataclass
class DemoResult:
    predictions: list[dict[str, float | str]]
    model_version: str
    width: int
    height: int
    format: str


@dataclass
class DemoImage:
    """A checked upload, shrunk to the model's input: what goes to the worker."""

    model_input_png: bytes
    info: ImageInfo


def demo_prepare(*, upload: UploadedFile) -> DemoImage:
    """Check the upload as an upload is checked and shrink it to the model's input size.
    ApplicationError (400) with the same messages as an upload when the file is refused."""
    data = services._read_upload(upload)
    size = read_manifest(Path(settings.MODEL_BUNDLE)).input_size  # the manifest only: no torch here
    try:
        info = inspect_upload(data, max_bytes=settings.MAX_UPLOAD_BYTES, max_pixels=settings.MAX_IMAGE_PIXELS)
        array = decode_for_model(data, (int(size[0]), int(size[1])), max_pixels=settings.MAX_IMAGE_PIXELS)
    except ImageRejected as exc:
        raise ApplicationError(str(exc), code="invalid_image") from exc
    buffer = io.BytesIO()
    Image.fromarray(array.transpose(1, 2, 0)).save(buffer, format="PNG")  # lossless: the worker sees these pixels
    return DemoImage(model_input_png=buffer.getvalue(), info=info)


async def demo_classify(image: DemoImage) -> DemoResult:
    """Top-5 classes from the worker, storing nothing. ApplicationError: 503 ``unavailable`` when no
    worker answered within ``FRAME_TIMEOUT_SECONDS``, 400 when the worker could not read the image."""
    answer = await frames.frame_classify(data=image.model_input_png)
    if answer is None:
        raise ApplicationError(MSG_NO_ANSWER, code="unavailable", status_code=503)
    if "error" in answer:
        raise ApplicationError(answer["error"], code="invalid_image")
    return DemoResult(
        predictions=answer["predictions"],
        model_version=answer["model_version"],
        width=image.info.width,
        height=image.info.height,
        format=image.info.format,
    )
