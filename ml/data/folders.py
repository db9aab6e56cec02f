"""Image-folder trees ``root/<class>/*.jpg|png``: `load_image_folder` decodes them into an
`ArrayDataset` (in a process pool from `PARALLEL_MIN_FILES` files on) and caches the array under
`DEFAULT_CACHE_DIR`, keyed by `folder_fingerprint` (file list, sizes and modification times), so
50,000 JPEGs are decoded once."""

from __future__ import annotations

import hashlib
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ml.data.dataset import ArrayDataset

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Defined here only (`ml.data.DEFAULT_CACHE_DIR` reads it from here): patch ml.data.folders.DEFAULT_CACHE_DIR.
DEFAULT_CACHE_DIR = Path(os.environ.get("ML_CACHE_DIR", Path(__file__).resolve().parents[2] / ".cache" / "ml"))


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


def _decode_chunk(paths: list[Path], size: int) -> np.ndarray:
    return np.stack([decode_image(p, size) for p in paths])


# Below this many files a process pool costs more than it saves.
PARALLEL_MIN_FILES = 2000


def _decode_all(paths: list[Path], size: int, workers: int) -> np.ndarray:
    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    if workers <= 1 or len(paths) < PARALLEL_MIN_FILES:
        for i, path in enumerate(paths):
            images[i] = decode_image(path, size)
        return images
    chunk = 1000
    starts = range(0, len(paths), chunk)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for start, block in zip(
            starts, pool.map(_decode_chunk, [paths[s : s + chunk] for s in starts], [size] * len(starts)), strict=True
        ):
            images[start : start + len(block)] = block
    return images


def load_image_folder(
    root: str | Path, size: int = 32, cache_dir: str | Path | bool | None = True, workers: int = 0
) -> ArrayDataset:
    """Load ``root/<class>/<image>``; classes are the sorted folder names.

    ``cache_dir``: True = ``DEFAULT_CACHE_DIR`` (``.cache/ml``, or ``$ML_CACHE_DIR``); a path; or
    None/False for no cache. ``workers``: decoding processes on a cache miss (0 = one per CPU core;
    1 = in this process).
    """
    if cache_dir is True:
        cache_dir = DEFAULT_CACHE_DIR
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes, files = _folder_files(root)
    key = folder_fingerprint(root, files, size)
    cache_path = Path(cache_dir) / f"folder-{root.name}-{key}.npz" if cache_dir else None
    if cache_path is not None and cache_path.is_file():
        with np.load(cache_path) as z:
            return ArrayDataset(z["images"], z["labels"], classes, source=str(root), extra={"cache": str(cache_path)})
    images = _decode_all([path for path, _ in files], size, workers or (os.cpu_count() or 1))
    labels = np.array([label for _, label in files], dtype=np.int64)
    if cache_path is not None:
        _write_cache(cache_path, images=images, labels=labels)
    return ArrayDataset(images, labels, classes, source=str(root))


def _write_cache(cache_path: Path, **arrays: np.ndarray) -> None:
    """Write the cache file atomically, safe against other writers of the same file.

    Several processes can miss the cache at once (the ranks of a torchrun job, two training
    commands started together): each writes a temporary file of its own in the same folder and
    renames it into place, so a reader sees no file or a whole one, and the last rename wins with
    identical content. A shared temporary name made the slower writer's rename fail.
    """
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.parent / f".{cache_path.stem}.{os.getpid()}-{uuid.uuid4().hex}.tmp.npz"
    try:
        with open(tmp, "xb") as f:  # "x": never someone else's file; the mode follows the umask
            np.savez(f, **arrays)
        os.replace(tmp, cache_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
