"""Micro-batching: collect a few queued jobs, decode each, run one forward pass for all of them.

Two small pieces, neither of which knows about Django or Celery:

* `collect` takes the first item and then up to ``max_size - 1`` more from ``take`` (a
  non-blocking "next queued item, or None"). Under load the queue is never empty and a batch
  fills at once. A lone job (nothing else queued at the first look) runs at once, unbatched: it
  is not held at all. Once a second job was there, the batch waits at most ``max_wait_s`` (a few
  milliseconds) for more: jobs are arriving, more are likely.
* `predict_batch` decodes every image on its own (a corrupt one becomes an `ImageRejected` in its
  own slot and costs nobody else anything) and runs the model once on the images that decoded.

Measured with benchmarks.runtime on the 2-core dev machine: batches of 64 run 282 images/s
against 143 one at a time, so a worker that batches under load does about twice the work per
core; see benchmarks/results/realtime.md for what that means end to end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from worker.runtime.images import ImageRejected, decode_for_model

T = TypeVar("T")

Prediction = list[tuple[str, float]]


def collect(
    first: T,
    take: Callable[[], T | None],
    *,
    max_size: int,
    max_wait_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 0.0005,
) -> list[T]:
    """``[first, ...]``: up to ``max_size`` items; ``[first]`` at once if nothing else is queued,
    else taking for at most ``max_wait_s`` seconds."""
    if max_size < 1:
        raise ValueError(f"max_size must be positive, got {max_size}")
    batch = [first]
    deadline = clock() + max(max_wait_s, 0.0)
    while len(batch) < max_size:
        item = take()
        if item is not None:
            batch.append(item)
            continue
        if len(batch) == 1 or clock() >= deadline:
            break
        sleep(poll_s)
    return batch


def predict_batch(
    predictor,
    images: Sequence[bytes],
    *,
    top_k: int,
    max_pixels: int | None = None,
    run: Callable[[list, int], list] | None = None,
) -> list:
    """One result per image, in order: its top-k predictions, or the `ImageRejected` that refused it.

    ``predictor`` is a `worker.runtime.predictor.Predictor` (anything with ``input_size`` and
    ``predict(arrays, top_k)``). One forward pass for all the images that decoded: ``run(arrays,
    top_k)`` (default ``predictor.predict``; the worker passes the explaining prediction).
    """
    run = run or (lambda arrays, k: predictor.predict(arrays, top_k=k))
    results: list[Prediction | ImageRejected | None] = [None] * len(images)
    arrays, slots = [], []
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    for i, data in enumerate(images):
        try:
            arrays.append(decode_for_model(data, predictor.input_size, **kwargs))
            slots.append(i)
        except ImageRejected as exc:
            results[i] = exc
    if arrays:
        for i, prediction in zip(slots, run(arrays, top_k), strict=True):
            results[i] = prediction
    return results  # type: ignore[return-value]
