"""Live camera frames: classified by the worker, answered by push, never stored.

``POST /api/v1/frames/`` (`classifier.live_api`) reads the frame, subscribes to
``frame-<uuid>`` (`classifier.push`), enqueues ``worker.tasks.classify_frame`` with the bytes,
and awaits the answer the worker publishes (at most ``FRAME_TIMEOUT_SECONDS``; the message
expires after that too, so a busy worker never works on stale frames). No row and no file is
written: the page's "keep this frame" sends the frame to the ordinary upload instead. Without a
broker the task runs in-process, like every task in that mode.
"""

from __future__ import annotations

import base64
import json
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings

from classifier import dispatch, push


def frame_key(frame_id: str) -> str:
    return f"frame-{frame_id}"


def frame_predict(*, data: bytes) -> dict:
    """Top-k of one frame with its answer set (the classes the model cannot rule out, null for a
    bundle without sets; the same plain forward pass as the uploads'), or ``{"error": message}``
    when it is not an image we can read (worker side)."""
    from classifier import explanations
    from classifier.explanations.selectors import prediction_set_summary
    from worker.runtime.batching import predict_batch
    from worker.runtime.images import ImageRejected
    from worker.runtime.predictor import get_predictor

    predictor = get_predictor(settings.MODEL_BUNDLE, device=settings.MODEL_DEVICE)
    [result] = predict_batch(
        predictor,
        [data],
        top_k=settings.PREDICTION_TOP_K,
        max_pixels=settings.MAX_IMAGE_PIXELS,
        run=lambda arrays, k: explanations.predict(predictor, arrays, top_k=k),
    )
    if isinstance(result, ImageRejected):
        return {"error": str(result)}
    return {
        "predictions": [{"label": label, "probability": round(float(p), 6)} for label, p in result.predictions],
        "prediction_set": prediction_set_summary(result.prediction_set, result.set_coverage),
        "model_version": predictor.version,
    }


def frame_answer(*, frame_id: str, data: bytes) -> None:
    """Classify the frame and push the answer to the request waiting for it (the task's body)."""
    push.publish(frame_key(frame_id), json.dumps(frame_predict(data=data)))


def _enqueue(frame_id: str, data: bytes) -> None:
    dispatch.send(
        dispatch.CLASSIFY_FRAME,
        frame_id,
        base64.b64encode(data).decode("ascii"),
        expires=settings.FRAME_TIMEOUT_SECONDS,
    )


async def frame_classify(*, data: bytes, timeout: float | None = None) -> dict | None:
    """The worker's answer for this frame, or None when none came within ``timeout`` seconds."""
    timeout = settings.FRAME_TIMEOUT_SECONDS if timeout is None else timeout
    frame_id = str(uuid.uuid4())
    async with await push.subscribe([frame_key(frame_id)]) as sub:  # before enqueueing: no answer is missed
        try:
            await sync_to_async(_enqueue)(frame_id, data)
        except Exception:  # broker down
            return None
        message = await sub.next(timeout)
    return json.loads(message[1]) if message is not None else None
