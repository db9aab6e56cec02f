"""The naive baseline of benchmarks.realtime: the model inside the request, one image per forward pass.

    gunicorn benchmarks.naive_app:application --workers 2 --threads 4 --worker-class gthread

A WSGI app with no Django, no database, no queue and no authentication: ``POST
/api/v1/classifications/`` (multipart field ``image``, the product's own upload request) decodes
the image with the product's `decode_for_model` and answers ``200 {"status": "done",
"predictions": [...]}`` from `Predictor.predict` on that one image. It is what the earlier reports
deployed, and the floor any queued design is compared with. ``MODEL_BUNDLE`` (environment) names
the bundle; each gunicorn worker loads it once, on its first request.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from worker.runtime.images import ImageRejected, decode_for_model
from worker.runtime.predictor import get_predictor

BUNDLE = os.environ.get("MODEL_BUNDLE", str(Path(__file__).resolve().parent.parent / "bundles" / "default"))
MAX_BODY = 10 * 1024 * 1024


def _image_part(body: bytes, content_type: str) -> bytes | None:
    """The bytes of the multipart field ``image`` (a small parser: the benchmark's client is known)."""
    marker = "boundary="
    if marker not in content_type:
        return None
    boundary = content_type.split(marker, 1)[1].split(";", 1)[0].strip().strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, sep, data = part.partition(b"\r\n\r\n")
        if sep and b'name="image"' in head:
            return data[:-2] if data.endswith(b"\r\n") else data
    return None


def _answer(start_response, status: str, payload: dict) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST" or environ.get("PATH_INFO") != "/api/v1/classifications/":
        return _answer(start_response, "404 Not Found", {"error": "POST /api/v1/classifications/ only"})
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length <= 0 or length > MAX_BODY:
        return _answer(start_response, "400 Bad Request", {"error": "no body or too large"})
    data = _image_part(environ["wsgi.input"].read(length), environ.get("CONTENT_TYPE", ""))
    if not data:
        return _answer(start_response, "400 Bad Request", {"error": "no image field"})
    predictor = get_predictor(BUNDLE, device="cpu")
    try:
        array = decode_for_model(data, predictor.input_size)
    except ImageRejected as exc:
        return _answer(start_response, "400 Bad Request", {"error": str(exc)})
    [top] = predictor.predict([array], top_k=5)
    predictions = [{"label": label, "probability": p} for label, p in top]
    return _answer(start_response, "200 OK", {"status": "done", "predictions": predictions})
