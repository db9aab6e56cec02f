"""Running a model bundle in a worker process: lazy loading, batching, top-k, one copy per process.

    predictor = get_predictor(settings.MODEL_BUNDLE)      # cheap: reads nothing yet
    predictor.version                                     # reads manifest.json only
    predictor.predict([decode_for_model(data)], top_k=5)  # loads the module on first use

Nothing here touches CUDA until the first `predict` (or an explicit `load` or `.device`), so a
Celery parent process that imports this module and then forks its pool stays CUDA-free. After a
fork, the child forgets every predictor it inherited (`os.register_at_fork`) and loads its own.
A parent should never predict before forking: on Linux torch's CPU thread pool (GNU OpenMP)
hangs in a child of a process that used it, so such a child is pinned to one thread and warned.
``WORKER_PRECISION`` (auto | bf16 | fp32 | int8, `worker.runtime.precision`) picks the dtype the
module runs in; auto (the default) is bf16 on CPUs with bf16 in hardware, for bundles that support
it; int8 runs the bundle's int8 module (`ml export --int8`) on the CPU.
``WORKER_TTA`` (unset: the bundle's level) runs the module at a lower test-time-augmentation level
for throughput; the bundle's calibration.md gives each level's accuracy and calibration.
``WORKER_TORCH_THREADS`` and ``WORKER_LONE_IMAGE_THREADS`` (torch's thread counts) and the fork
guard live in `worker.runtime.threads`.
This module imports no Django.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch

from worker.runtime import precision as prec
from worker.runtime import warmup
from worker.runtime.bundle import BundleError, LoadedBundle, Manifest, load_bundle, read_manifest
from worker.runtime.threads import (
    LONE_THREADS_ENV,
    THREADS_ENV,
    configure_threads,
    single_threaded_after_fork,
    threads_for,
    threads_from_env,
)

__all__ = [
    "DEFAULT_MAX_BATCH",
    "LONE_THREADS_ENV",
    "THREADS_ENV",
    "TTA_ENV",
    "Prediction",
    "Predictor",
    "clear_cache",
    "configure_threads",
    "get_predictor",
    "threads_for",
    "tta_from_env",
]

# The most images one forward pass takes; bigger batches run in chunks of this size. On the CPU
# chunks beat one pass over everything: `python -m benchmarks.runtime` on the 2-core Xeon (the
# default bundle at TTA 1, batches of 256) gave 997 images/s in chunks of 64 against 626 in one
# pass in bf16 (1.59x; chunks of 32 and 128 gave the same as 64, 16 less) and 1.15x in fp32.
# A GPU wants large batches.
DEFAULT_MAX_BATCH = {"cpu": 64, "cuda": 1024}
TTA_ENV = "WORKER_TTA"

Prediction = list[tuple[str, float]]


def tta_from_env() -> int | None:
    """``WORKER_TTA`` (a TTA level the bundle lists in ``extra["tta_levels"]``), or None when unset."""
    value = os.environ.get(TTA_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"{TTA_ENV} must be a TTA level (0, 1, 2 ...), got {value!r}")
    return int(value)


class Predictor:
    """One model bundle, loaded on first use, predicting top-k labels for decoded images."""

    def __init__(
        self,
        bundle_dir: str | Path,
        device: str | None = None,
        *,
        max_batch: int | None = None,
        precision: str | None = None,
        tta: int | None = None,
    ):
        # None: WORKER_PRECISION from the environment when the module loads, else auto
        self.precision = None if precision is None else prec.check(precision)
        self.tta = tta  # None: WORKER_TTA from the environment, else the bundle's own level
        self.bundle_dir = Path(bundle_dir)
        self.max_batch = max_batch  # None: DEFAULT_MAX_BATCH for the device
        self._requested_device = device
        self._device: torch.device | None = None
        self._manifest: Manifest | None = None
        self._bundle: LoadedBundle | None = None
        self._lock = threading.Lock()
        self.lone_threads: int | None = None  # threads for one image (LONE_THREADS_ENV, read on load)
        _live_predictors.add(self)

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"Predictor({str(self.bundle_dir)!r}, device={self._requested_device!r}, {state})"

    # ------------------------------------------------------------------ metadata (no torch work)
    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            if not self.bundle_dir.is_dir():
                raise BundleError(f"model bundle {self.bundle_dir} does not exist or is not a folder")
            self._manifest = read_manifest(self.bundle_dir)
        return self._manifest

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def input_size(self) -> tuple[int, int]:
        height, width = self.manifest.input_size
        return int(height), int(width)

    @property
    def device(self) -> torch.device:
        """The requested device, else CUDA when available, else CPU; decided on first access."""
        if self._device is None:
            if self._requested_device is not None:
                self._device = torch.device(self._requested_device)
            else:
                self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return self._device

    @property
    def max_batch(self) -> int:
        """The most images per forward pass (bigger batches are split): as given, else the device's default."""
        if self._max_batch is not None:
            return self._max_batch
        return DEFAULT_MAX_BATCH.get(self.device.type, DEFAULT_MAX_BATCH["cpu"])

    @max_batch.setter
    def max_batch(self, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError(f"max_batch must be positive, got {value}")
        self._max_batch = value

    # ------------------------------------------------------------------ loading
    @property
    def loaded(self) -> bool:
        return self._bundle is not None

    def load(self, *, warm_up: bool = False, warm_up_threads: int | None = None) -> LoadedBundle:
        """Load (once) and return the bundle: checksum checked, module on `device`, in eval mode.

        ``warm_up``: when this call loads it, run its methods on a blank image first
        (`worker.runtime.warmup`; on ``warm_up_threads`` threads, None: the process's), before other
        threads can use it: a ``predict`` meanwhile waits for the end of the warm-up."""
        if self._bundle is None:
            with self._lock:
                if self._bundle is None:
                    if single_threaded_after_fork():
                        warnings.warn(
                            f"loading {self.bundle_dir} single-threaded: this process was forked from one that had "
                            "already run a model on several threads, and torch's OpenMP pool hangs after such a "
                            "fork. Load models only in the worker processes (get_predictor is lazy).",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                    configure_threads()
                    self.lone_threads = threads_from_env(LONE_THREADS_ENV)
                    bundle = load_bundle(
                        self.bundle_dir,
                        self.device,
                        self.precision or prec.from_env(),
                        self.tta if self.tta is not None else tta_from_env(),
                    )
                    if warm_up:
                        warmup.warm_up(bundle, threads=warm_up_threads)
                    self._manifest = bundle.manifest
                    self._bundle = bundle
        return self._bundle

    def _forget(self) -> None:
        """Drop everything loaded (after a fork: the parent's module and device are not ours)."""
        self._bundle = None
        self._device = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ prediction
    def predict_probs(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W -> float32 N x C probabilities on the CPU, in chunks of max_batch."""
        bundle = self.load()
        expected = self.input_size
        if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a uint8 tensor N x 3 x H x W, got {batch.dtype} {tuple(batch.shape)}")
        if tuple(batch.shape[2:]) != expected:
            raise ValueError(f"images are {tuple(batch.shape[2:])} (H, W); this bundle takes {expected}")
        if batch.shape[0] == 0:
            return torch.zeros(0, len(self.classes))
        with threads_for(bundle.device, batch.shape[0], self.lone_threads):
            chunks = [bundle.predict(chunk) for chunk in torch.split(batch, self.max_batch)]
        return torch.cat(chunks)

    def predict(self, images: list[np.ndarray], top_k: int = 5) -> list[Prediction]:
        """Top-k (label, probability) per image, most probable first.

        ``images`` are uint8 arrays 3 x H x W (RGB) as `decode_for_model` returns them.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be positive, got {top_k}")
        if len(images) == 0:
            return []
        for i, image in enumerate(images):
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
                desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
                raise ValueError(f"image {i}: expected a uint8 array 3 x H x W, got {desc}")
        batch = torch.from_numpy(np.stack(images))
        probs = self.predict_probs(batch)
        k = min(top_k, probs.shape[1])
        values, indices = torch.topk(probs, k, dim=1)  # sorted, largest first
        classes = self.classes
        return [
            [(classes[j], float(p)) for p, j in zip(row_p.tolist(), row_i.tolist(), strict=True)]
            for row_p, row_i in zip(values, indices, strict=True)
        ]


# ----------------------------------------------------------------------------- one per process
_cache: dict[tuple[Path, str | None], Predictor] = {}
_cache_lock = threading.Lock()
_live_predictors: weakref.WeakSet[Predictor] = weakref.WeakSet()


def get_predictor(bundle_dir: str | Path, device: str | None = None) -> Predictor:
    """The process-wide Predictor for (bundle, device); created lazily, loaded on first predict."""
    key = (Path(bundle_dir).expanduser().resolve(), device)
    with _cache_lock:
        predictor = _cache.get(key)
        if predictor is None:
            predictor = _cache[key] = Predictor(key[0], device)
    return predictor


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _after_fork_in_child() -> None:
    # The child must not use the parent's CUDA context or its module copy; locks held by
    # parent threads at fork time would never be released in the child, so renew them too.
    # (`worker.runtime.threads` has its own hook, registered first, that pins the thread count.)
    global _cache_lock
    _cache_lock = threading.Lock()
    _cache.clear()
    for predictor in list(_live_predictors):
        predictor._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
