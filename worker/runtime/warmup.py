"""Warming a freshly loaded bundle up, so that the first jobs after a start are not the slow ones.

TorchScript's profiling executor runs each method's first call instrumented and rewrites the
graph on the second: one image through the default bundle took 243 and 212 ms on the first two
calls and 23 ms from the third on (fp32, 2 threads, 2-core AMD EPYC of family 25, Zen 3). Each
method has its own executor: ``forward`` (the plain predictions: live camera frames, the demo) and
``scores`` (the jobs: members, agreement, "not sure", OOD, `worker.runtime.explain`). `warm_up`
runs each of them `PASSES` times on one blank image, so that the users' first images do not pay
for it; `Predictor.load(warm_up=True)` does it before the loaded bundle is published, so a job
that arrives meanwhile waits for the end of the warm-up instead of racing it. ``explain``
(Grad-CAM) runs with the optimising executor off and is not warmed.

`warm_up_decoding` decodes a small JPEG as an upload's is decoded (Pillow registers its decoders
on the first open); the Celery pool process runs both (`worker.celery.warm_up_model`).

A batch of a size not seen before still costs one slower call (the executor specialises on the
shape once more): a worker settles after its first few batches. This module imports no Django.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from worker.runtime.bundle import LoadedBundle

logger = logging.getLogger(__name__)

PASSES = 2  # the profiling run, then the one that optimises the graph
METHODS = ("forward", "scores")


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    switch = threads is not None and threads != before
    if switch:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if switch:
            torch.set_num_threads(before)


def warm_up(bundle: LoadedBundle, *, threads: int | None = None) -> float:
    """Run the bundle's `METHODS` (those it has) `PASSES` times on one blank image; the seconds taken.

    ``threads``: torch's thread count meanwhile (None: the process's). A process that may fork
    afterwards warms up on one thread: GNU OpenMP hangs in a child forked after a parallel region
    (`worker.runtime.threads`). A failure is logged, not raised: the jobs report it themselves."""
    height, width = (int(n) for n in bundle.manifest.input_size)
    image = torch.zeros(1, 3, height, width, dtype=torch.uint8, device=bundle.device)
    methods = [getattr(bundle.module, name) for name in METHODS if hasattr(bundle.module, name)]
    start = time.perf_counter()
    try:
        with _torch_threads(threads), torch.inference_mode():
            for _ in range(PASSES):
                for method in methods:
                    method(image)
            if bundle.device.type == "cuda":
                torch.cuda.synchronize(bundle.device)
    except Exception:
        logger.warning("warming up the model bundle %s failed; the jobs will tell why", bundle.path, exc_info=True)
    seconds = time.perf_counter() - start
    logger.info(
        "model bundle %s warmed up in %.2f s (%d passes of %d methods)", bundle.path, seconds, PASSES, len(methods)
    )
    return seconds


def warm_up_decoding(size: tuple[int, int]) -> None:
    """Decode a small JPEG to model input once (`decode_for_model`), as the first job would."""
    from PIL import Image

    from worker.runtime.images import decode_for_model

    buffer = io.BytesIO()
    Image.new("RGB", (2 * size[1], 2 * size[0]), (128, 128, 128)).save(buffer, format="JPEG")
    decode_for_model(buffer.getvalue(), size)
