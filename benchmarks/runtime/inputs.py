"""What the runtime benchmark feeds the runtime: real CIFAR-10 JPEGs (the shared data set beside
the checkout, `benchmarks.client.DEFAULT_IMAGES`) or generated ones, photo-like JPEGs of any
size, and bundles of random-init models (the compute of trained ones, before any training)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.client import DEFAULT_IMAGES

DEFAULT_BUNDLE = Path("bundles/default")


def photo_jpeg(width: int, height: int, seed: int) -> bytes:
    """A photo-like JPEG (smooth gradients, soft blobs, a little noise) of the given size."""
    from tests.hostile import photo  # the generator the upload tests use

    rng = np.random.default_rng(seed)
    noisy = np.asarray(photo(width, height, seed), dtype=np.int16) + rng.integers(
        -6, 7, (height, width, 3), dtype=np.int16
    )
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def cifar_jpegs(n: int) -> list[bytes]:
    """Real 32x32 CIFAR-10 JPEGs when the data set is on this machine, else generated ones."""
    root = DEFAULT_IMAGES
    files = sorted(root.glob("*/*.jpg"))[:: max(1, 50000 // max(n, 1))][:n] if root.is_dir() else []
    if len(files) == n:
        return [f.read_bytes() for f in files]
    return [photo_jpeg(32, 32, seed=i) for i in range(n)]


def random_bundle(directory: Path, arch: str, width: float | None = None, *, tta: int = 0, members: int = 1) -> Path:
    """A bundle of random-init models: the same compute as trained ones of that architecture."""
    from ml.export import export_bundle
    from ml.models import build_model, count_flops

    torch.manual_seed(0)
    options = {} if width is None else {"width": width}
    models = [build_model(arch, num_classes=10, **options) for _ in range(members)]
    out = directory / arch
    export_bundle(
        [
            (
                m,
                {
                    "arch": arch,
                    **options,
                    "macs": count_flops(m),
                    "mean": [0.49, 0.48, 0.45],
                    "std": [0.25, 0.24, 0.26],
                },
            )
            for m in models
        ],
        out,
        tta=tta,
        classes=[f"class{i}" for i in range(10)],
        name=f"benchmark-random-{arch}",
        version=f"benchmark-random-{arch}" + (f"-w{width}" if width is not None else ""),
        command=f"python -m benchmarks.runtime --random {arch}",
    )
    return out
