"""`load_source(spec, ...)`, the one entry point that detects what a path is (CIFAR archive or
folder, image-folder tree with or without train/ and test/, "cifar10" / "cifar100" in
`DEFAULT_DATA_DIR`) and applies label mode and class subsets; and `stratified_split`, the seeded
train/validation split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml.data.cifar import CIFAR, detect_cifar, load_cifar
from ml.data.dataset import ArrayDataset, select_classes, select_superclass
from ml.data.folders import load_image_folder

# Defined here only (`ml.data.DEFAULT_DATA_DIR` reads it from here): patch ml.data.sources.DEFAULT_DATA_DIR.
DEFAULT_DATA_DIR = Path(os.environ.get("ML_DATA_DIR", Path(__file__).resolve().parents[2] / "data"))


# ----------------------------------------------------------------------------- splits
def stratified_split(labels: np.ndarray, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (train_idx, val_idx): ``per_class`` validation images of each class, seeded."""
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if per_class >= len(idx):
            raise ValueError(f"class {c} has {len(idx)} images; cannot hold out {per_class} for validation")
        val.append(rng.choice(idx, size=per_class, replace=False))
    val_idx = np.sort(np.concatenate(val))
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


# ----------------------------------------------------------------------------- one entry point
def _split_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def load_source(
    spec: str | Path,
    size: int = 32,
    *,
    split: str = "train",
    label_mode: str = "fine",
    classes: str | Sequence[str] | None = None,
    superclass: str | Sequence[str] | None = None,
    cache_dir: str | Path | bool | None = True,
    expected_md5: str | None = None,
) -> ArrayDataset:
    """Load a data source named by a path (or "cifar10" / "cifar100" for the download folder):

    - a CIFAR archive (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``), its extracted
      folder, or a folder holding one of them (e.g. ``data/``);
    - an image-folder tree ``root/<class>/*.jpg``; when ``root`` holds ``train/`` and ``test/``
      (or ``val/``) sub-trees, ``split`` picks one.

    ``label_mode="coarse"``: CIFAR-100 superclasses. ``classes``: keep these classes (a list or a
    comma-separated string); ``superclass``: keep the classes of these CIFAR-100 superclasses.
    Either subset remaps labels to 0..k-1.
    """
    path = Path(spec)
    if not path.exists() and str(spec) in CIFAR:
        cifar = CIFAR[str(spec)]
        for candidate in (DEFAULT_DATA_DIR / cifar.archive, DEFAULT_DATA_DIR / cifar.folder):
            if candidate.exists():
                path = candidate
                break
        else:
            raise FileNotFoundError(
                f"{spec}: neither {DEFAULT_DATA_DIR / cifar.archive} nor {DEFAULT_DATA_DIR / cifar.folder} exists; "
                f"run: python -m ml download {spec} --dest {DEFAULT_DATA_DIR}"
            )
    if not path.exists():
        raise FileNotFoundError(
            f"data source {spec} not found (expected an image folder root/<class>/*.jpg, a CIFAR python-version "
            "archive or its extracted folder, or cifar10/cifar100 after python -m ml download)"
        )
    if detect_cifar(path) is not None:
        data = load_cifar(path, split=split, label_mode=label_mode, expected_md5=expected_md5)
    elif path.is_dir():
        if label_mode != "fine":
            raise ValueError(f"label_mode={label_mode!r} needs CIFAR-100; {path} is an image folder")
        if split not in ("train", "test", "val"):
            raise ValueError(f"split must be train, test or val, got {split!r}")
        if (path / "train").is_dir() and any((path / s).is_dir() for s in ("test", "val")):
            if not (path / split).is_dir():
                raise FileNotFoundError(f"{path} has no {split}/ sub-tree")
            path = path / split
        elif split != "train":
            raise ValueError(
                f"{path} is a single image-folder tree (no train/ and test/ inside); split={split!r} has no meaning"
            )
        data = load_image_folder(path, size=size, cache_dir=cache_dir)
    else:
        raise ValueError(f"{path} is a file but not a CIFAR archive; give an image folder or a CIFAR archive")
    if superclass:
        data = select_superclass(data, _split_list(superclass))
    if classes:
        data = select_classes(data, _split_list(classes))
    return data
