"""Data sources, all returning an `ArrayDataset` of uint8 N x 3 x H x W images and int64 labels.

- `load_image_folder(root)`: ``root/<class>/*.jpg|png``; the decoded array is cached under
  ``cache_dir`` keyed by a fingerprint of the file list and sizes, so 50,000 JPEGs are decoded once.
- `stratified_split(labels, per_class, seed)`: the seeded train/validation split.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_CACHE_DIR = Path(os.environ.get("ML_CACHE_DIR", Path(__file__).resolve().parent.parent / ".cache" / "ml"))


@dataclass
class ArrayDataset:
    images: np.ndarray  # uint8, N x 3 x H x W
    labels: np.ndarray  # int64, N
    classes: list[str]
    superclasses: dict[str, str] | None = None  # class -> superclass
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N x 3 x H x W, got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> ArrayDataset:
        return ArrayDataset(
            self.images[indices], self.labels[indices], self.classes, self.superclasses, self.source, dict(self.extra)
        )


# ----------------------------------------------------------------------------- image folders
def _folder_files(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{root} has no class folders (expected {root}/<class>/*.jpg)")
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                files.append((path, label))
    if not files:
        raise FileNotFoundError(f"{root} has class folders but no images")
    return classes, files


def folder_fingerprint(root: Path, files: list[tuple[Path, int]], size: int) -> str:
    """Cheap fingerprint: relative paths, sizes and modification times, plus the target size."""
    digest = hashlib.sha256(f"v1 size={size}\n".encode())
    for path, label in files:
        st = path.stat()
        digest.update(f"{path.relative_to(root)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def decode_image(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def load_image_folder(
    root: str | Path, size: int = 32, cache_dir: str | Path | None = DEFAULT_CACHE_DIR
) -> ArrayDataset:
    """Load ``root/<class>/<image>``; classes are the sorted folder names."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes, files = _folder_files(root)
    key = folder_fingerprint(root, files, size)
    cache_path = Path(cache_dir) / f"folder-{root.name}-{key}.npz" if cache_dir else None
    if cache_path is not None and cache_path.is_file():
        with np.load(cache_path) as z:
            return ArrayDataset(z["images"], z["labels"], classes, source=str(root), extra={"cache": str(cache_path)})
    images = np.empty((len(files), 3, size, size), dtype=np.uint8)
    for i, (path, _label) in enumerate(files):
        images[i] = decode_image(path, size)
    labels = np.array([label for _, label in files], dtype=np.int64)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, labels=labels)
        os.replace(tmp, cache_path)
    return ArrayDataset(images, labels, classes, source=str(root))


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
def load_source(spec: str | Path, size: int = 32) -> ArrayDataset:
    """Load a data source named by a path: an image-folder tree (``root/<class>/*.jpg``)."""
    path = Path(spec)
    if path.is_dir():
        return load_image_folder(path, size=size)
    raise FileNotFoundError(f"data source {spec} not found (expected an image folder root/<class>/*.jpg)")
