"""Shared fixtures for the ml tests (data generators in tests/ml/fakedata.py).

- ``image_folder`` (fresh per test) / ``shared_image_folder`` (per session): a 4-class x 20-image PNG tree.
- ``make_cifar(kind, archive=..., per_class_train=..., per_class_test=..., seed=...)``: writes a
  small official-format CIFAR-10/100 archive or folder under tmp_path and returns its path;
  ``cifar10_archive``, ``cifar100_archive``, ``cifar10_dir``, ``cifar100_dir``: ready-made ones
  (4 train and 2 test images per class). The md5 of a generated archive is ``md5_of(path)``.
- ``ml_cache``: a private decode cache so tests never touch the project's .cache/ml.
- ``tiny_run``: the run folder of a one-epoch tiny ResNet-20 on the shared image folder (a real
  checkpoint.pt / best.pt for evaluate, export and fine-tuning tests).
- ``tiny_runs`` (per session): two one-epoch tiny ResNet-20 runs (seeds 0 and 1) on a private
  4-class folder: ``{"data", "ckpts", "ckpt" (= seed 0), "cache"}``; ``tiny`` (per module) is the
  same with ``ml.data.folders.DEFAULT_CACHE_DIR`` pointed at its private cache, for the evaluate,
  ensemble, compare and export tests.
- ``one_torch_thread`` (autouse): torch runs on one thread during these tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ml.fakedata import tiny_train_overrides, write_cifar, write_image_folder


@pytest.fixture
def make_cifar(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(kind: str = "cifar10", **kwargs) -> Path:
        return write_cifar(tmp_path / f"cifar-{next(counter)}", kind, **kwargs)

    return make


@pytest.fixture(scope="session")
def cifar10_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("c10a"), "cifar10", archive=True)


@pytest.fixture(scope="session")
def cifar100_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("c100a"), "cifar100", archive=True)


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("c10d"), "cifar10", archive=False)


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("c100d"), "cifar100", archive=False)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A fresh 4-class x 20-image PNG tree (function scope: tests may modify it)."""
    return write_image_folder(tmp_path / "folder")


@pytest.fixture(scope="session")
def shared_image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tree, once per session, for tests that only read it."""
    return write_image_folder(tmp_path_factory.mktemp("shared") / "folder")


@pytest.fixture
def ml_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private decode cache, so tests never read or write the project's .cache/ml."""
    import ml.data.folders

    cache = tmp_path / "cache"
    monkeypatch.setattr(ml.data.folders, "DEFAULT_CACHE_DIR", cache)
    return cache


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and several threads fight other jobs for 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_run(shared_image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a one-epoch ResNet-20 (width 0.25) trained on ``shared_image_folder``:
    config.yaml, metrics.csv, checkpoint.pt, best.pt. Read-only: copy before changing."""
    from ml.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = TrainConfig(**tiny_train_overrides(shared_image_folder, out / "runs", name="tiny"))
    mp = pytest.MonkeyPatch()
    mp.setattr("ml.data.folders.DEFAULT_CACHE_DIR", out / "cache")
    try:
        return Path(train(cfg)["run_dir"])
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import ml.data.folders
    from tests.ml.fakemodels import train_tiny

    root = tmp_path_factory.mktemp("tiny-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ml.data.folders, "DEFAULT_CACHE_DIR", root / "cache")
        data = write_image_folder(root / "folder")
        ckpts = [train_tiny(root / "runs", data, name=f"tiny-seed{seed}", seed=seed) for seed in (0, 1)]
    return {"data": data, "ckpts": ckpts, "ckpt": ckpts[0], "cache": root / "cache"}


@pytest.fixture(scope="module")
def tiny(tiny_runs: dict) -> Iterator[dict]:
    import ml.data.folders

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ml.data.folders, "DEFAULT_CACHE_DIR", tiny_runs["cache"])
        yield tiny_runs
