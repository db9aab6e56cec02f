"""Fixtures shared by every test folder.

* ``tiny_bundle`` (session): a real TorchScript model bundle made with ml.export.export_bundle from
  a random-init ResNet-20 at width 0.25 (about 17k parameters; exported in a few seconds).
  When Django is configured it also points ``settings.MODEL_BUNDLE`` at it for the session.
* ``reported_bundle`` (session): a bundle like ``tiny_bundle`` with a report/ folder written by
  ml.evaluate.write_report on 60 random images (report.json, report.md, PNGs), plus ablations.md,
  training-log.txt and two files an import must ignore (notes.docx, secret.png).
* ``image_bytes``: encode a small real image in any accepted format.
* ``media_root``: a fresh MEDIA_ROOT for one test (files written by services land there).

Nothing here imports Django at module level, so ``pytest -p no:django tests/ml`` still works.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _close_the_async_bridge_threads_connections() -> Iterator[None]:
    """After each test, close the database connections of asgiref's shared sync thread.

    An async view or ``sync_to_async`` call made from a test (``async_to_sync(AsyncClient().get)``)
    runs its database work on ``SyncToAsync.single_thread_executor``, a thread that outlives the
    test; its connection is its own (Django's connections are thread-local) and nothing closes it
    (the test client disconnects ``close_old_connections`` from the request signals), so at the
    end of the session PostgreSQL refused to drop the test database ("is being accessed by other
    users", a PytestWarning, and a database left behind)."""
    yield
    if "django.db" not in sys.modules:
        return
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


@pytest.fixture(autouse=True)
def _fresh_model_version_bookkeeping() -> Iterator[None]:
    """A fresh per-process "version seen" throttle for each test (classifier.evaluation.services):
    its keys would otherwise outlive each test's rolled-back ModelVersion rows, and a job the next
    test finishes would link to a row that is gone."""
    module = sys.modules.get("classifier.evaluation.services")
    if module is not None:
        module.clear_seen_cache()
    yield
    module = sys.modules.get("classifier.evaluation.services")
    if module is not None:
        module.clear_seen_cache()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import torch

    from ml.export import export_bundle
    from ml.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=len(CIFAR10_CLASSES), width=0.25)
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(
        [(model, {"arch": "resnet20", "width": 0.25, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]})],
        out,
        classes=CIFAR10_CLASSES,
        name="tiny-test",
        version="tiny-test-0",
        metrics={"note": "random init, for tests only"},
        command="tests/conftest.py tiny_bundle",
    )
    django_settings = _django_settings()
    old = getattr(django_settings, "MODEL_BUNDLE", None) if django_settings is not None else None
    if django_settings is not None:
        django_settings.MODEL_BUNDLE = str(out)
    yield out
    if django_settings is not None:
        django_settings.MODEL_BUNDLE = old


@pytest.fixture(scope="session")
def reported_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle exported by ml.export with a report/ written by ml.evaluate.write_report on 60 random images
    (plus ablations.md, training-log.txt and files the import must ignore)."""
    import numpy as np
    import torch

    from ml.evaluate import evaluate_probs, write_report
    from ml.export import export_bundle
    from ml.models import build_model

    rng = np.random.default_rng(0)
    labels = np.arange(60) % len(CIFAR10_CLASSES)
    probs = rng.dirichlet(np.ones(len(CIFAR10_CLASSES)), size=60)
    probs[np.arange(40), labels[:40]] += 2  # 40 of 60 right, the rest random
    probs /= probs.sum(axis=1, keepdims=True)
    images = rng.integers(0, 256, size=(60, 3, 32, 32), dtype=np.uint8)
    report_dir = tmp_path_factory.mktemp("report") / "report"
    result = evaluate_probs(probs, labels, CIFAR10_CLASSES)
    data = {"source": "synthetic", "split": "val", "val_per_class": 6, "split_seed": 0, "n": 60}
    write_report(report_dir, result, probs=probs, labels=labels, images=images, data=data, title="test", command="t")
    (report_dir / "ablations.md").write_text("# Ablations\n\n| run | accuracy |\n|---|---|\n| no augment | 81.0% |\n")
    (report_dir / "training-log.txt").write_text("epoch 1 | val acc 0.40\n")
    (report_dir / "notes.docx").write_bytes(b"PK\x03\x04 not a text file: ignored")
    (report_dir / "secret.png").write_bytes((report_dir / "reliability.png").read_bytes())  # not on the whitelist

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=len(CIFAR10_CLASSES), width=0.25)
    out = tmp_path_factory.mktemp("bundle") / "reported"
    export_bundle(
        [(model, {"arch": "resnet20", "mean": [0.5] * 3, "std": [0.25] * 3})],
        out,
        classes=CIFAR10_CLASSES,
        name="reported",
        version="reported-1",
        metrics={"accuracy": 0.5, "note": "the manifest's own numbers"},
        command="tests/conftest.py reported_bundle",
        report_dir=report_dir,
    )
    return out


def _django_settings():
    """Django's settings when Django is configured in this run, else None."""
    try:
        from django.conf import settings
    except ImportError:
        return None
    return settings if settings.configured else None


def make_image_bytes(
    fmt: str = "png", size: tuple[int, int] = (40, 30), color=(200, 30, 30), mode: str = "RGB"
) -> bytes:
    """A real image of ``size`` (W, H) encoded as ``fmt`` (jpg, png, webp, gif, bmp, tiff, avif, heic)."""
    from PIL import Image

    import worker.runtime.images  # noqa: F401  (registers the HEIF plugin, for heic)

    pil_format = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "heic": "HEIF", "heif": "HEIF"}.get(
        fmt.lower(), fmt.upper()
    )
    im = Image.new(mode, size, color)
    for x in range(0, size[0], 4):  # some structure, so encoders do real work
        im.putpixel((x, x % size[1]), (0, 0, 0) if mode == "RGB" else 0)
    buf = io.BytesIO()
    im.save(buf, format=pil_format)
    return buf.getvalue()


@pytest.fixture
def image_bytes() -> Callable[..., bytes]:
    return make_image_bytes


@pytest.fixture
def media_root(tmp_path: Path, settings) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    return root


def make_bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_uploads() -> dict[str, bytes]:
    """The bad inputs every upload path must refuse: name -> bytes (oversize is made by the test
    with a small MAX_UPLOAD_BYTES, so it is not listed here)."""
    jpg = make_image_bytes("jpg", size=(200, 160))
    return {
        "empty": b"",
        "not_an_image": b"%PDF-1.4 this is not an image at all\n" * 20,
        "truncated": jpg[: len(jpg) // 2],
        "bomb": make_bomb_png(),
    }


def files_under(root: str | Path) -> list[str]:
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def terminate_backend(cursor, pid: int, timeout: float = 10.0) -> None:
    """End PostgreSQL backend ``pid`` (as a restart or an idle timeout would) through ``cursor``, a
    cursor of another connection, and wait until it has exited and closed its socket."""
    import time

    cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        if cursor.fetchone()[0] == 0:
            return
        time.sleep(0.05)
