"""Try without an account: classify one uploaded image during the request and keep nothing.

The image takes the same path as a real upload (the byte limit of `services._read_upload`, the
upload check `inspect_upload`, then `decode_for_model`, the worker's decode) and goes through the
same predictor the worker uses, loaded once per web process. No row, no file and no log line
with the image is written; the bytes are dropped when the request ends. Requests are limited per
client IP by `DemoIPThrottle` (rate ``demo_ip``, setting ``DEMO_RATE``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from classifier import services
from classifier.errors import ApplicationError
from classifier.throttling import _SharedRateThrottle
from worker.runtime.images import ImageRejected, decode_for_model, inspect_upload


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


def demo_classify(*, upload: UploadedFile) -> DemoResult:
    """Top-5 classes for one image, in this process, storing nothing. ApplicationError (400) with
    the same messages as an upload when the file is refused."""
    from worker.runtime.predictor import get_predictor

    data = services._read_upload(upload)
    try:
        info = inspect_upload(data, max_bytes=settings.MAX_UPLOAD_BYTES, max_pixels=settings.MAX_IMAGE_PIXELS)
        predictor = get_predictor(settings.MODEL_BUNDLE, device=settings.MODEL_DEVICE)
        array = decode_for_model(data, predictor.input_size, max_pixels=settings.MAX_IMAGE_PIXELS)
    except ImageRejected as exc:
        raise ApplicationError(str(exc), code="invalid_image") from exc
    [top] = predictor.predict([array], top_k=settings.PREDICTION_TOP_K)
    return DemoResult(
        predictions=[{"label": label, "probability": float(p)} for label, p in top],
        model_version=predictor.version,
        width=info.width,
        height=info.height,
        format=info.format,
    )
