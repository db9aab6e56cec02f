"""Data sources, all returning an `ArrayDataset` of uint8 N x 3 x H x W images and int64 labels.

- `load_image_folder(root)`: ``root/<class>/*.jpg|png``; the decoded array is cached under
  ``cache_dir`` keyed by a fingerprint of the file list, sizes and modification times, so 50,000
  JPEGs are decoded once.
- `load_cifar(path, split=...)`: the official CIFAR-10 / CIFAR-100 python-version archives
  (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``; md5-checked, read without extracting)
  or their extracted folders (``cifar-10-batches-py/``, ``cifar-100-python/``).
- `select_classes`, `select_superclass`, `to_coarse`: CIFAR-100 subsets and 20-way superclasses,
  labels remapped to 0..k-1.
- `stratified_split(labels, per_class, seed)`: the seeded train/validation split.
- `load_source(spec, ...)`: one entry point that detects which of the above a path is.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_CACHE_DIR = Path(os.environ.get("ML_CACHE_DIR", Path(__file__).resolve().parent.parent / ".cache" / "ml"))
DEFAULT_DATA_DIR = Path(os.environ.get("ML_DATA_DIR", Path(__file__).resolve().parent.parent / "data"))


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


# ----------------------------------------------------------------------------- CIFAR archives
@dataclass(frozen=True)
class CifarSpec:
    name: str  # cifar10 | cifar100
    archive: str  # official archive file name
    folder: str  # top-level folder inside the archive
    md5: str  # of the archive
    url: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str


CIFAR: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        "cifar10",
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        "c58f30108f718f92721af3b95e74349a",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
    ),
    "cifar100": CifarSpec(
        "cifar100",
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        ("train",),
        ("test",),
        "meta",
    ),
}


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_md5(path: str | Path, expected: str) -> None:
    actual = md5_file(path)
    if actual != expected.lower():
        raise ValueError(
            f"{path}: md5 mismatch (expected {expected}, got {actual}); the file is corrupt or not the official "
            "archive. Delete it and download again (python -m ml download ...)."
        )


def _cifar_spec_of_folder(path: Path) -> CifarSpec | None:
    for spec in CIFAR.values():
        if (path / spec.meta_file).is_file() and (path / spec.train_files[0]).is_file():
            return spec
    return None


def detect_cifar(path: str | Path) -> tuple[CifarSpec, Path] | None:
    """(spec, location) when ``path`` is a CIFAR archive, its extracted folder, or a folder holding
    either; None otherwise. Archives are recognised by the folder name inside them."""
    path = Path(path)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(path) as tar:
                top = {m.name.split("/", 1)[0] for m in tar.getmembers()}
        except tarfile.TarError as exc:
            raise ValueError(f"{path} is not a readable tar archive: {exc}") from exc
        for spec in CIFAR.values():
            if spec.folder in top:
                return spec, path
        raise ValueError(
            f"{path} is an archive but not a CIFAR python-version archive (top-level folders: {sorted(top)})"
        )
    if path.is_dir():
        spec = _cifar_spec_of_folder(path)
        if spec is not None:
            return spec, path
        for spec in CIFAR.values():  # a download folder such as data/
            if (path / spec.folder).is_dir() and _cifar_spec_of_folder(path / spec.folder) is spec:
                return spec, path / spec.folder
            if (path / spec.archive).is_file():
                return spec, path / spec.archive
    return None


def _unpickle(f) -> dict:
    # The official files are Python 2 pickles; bytes keys (b"data", b"labels", ...).
    return pickle.load(f, encoding="bytes")


def _str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_cifar(
    path: str | Path, split: str = "train", label_mode: str = "fine", expected_md5: str | None = None
) -> ArrayDataset:
    """Load CIFAR-10 or CIFAR-100 (which one is detected) from the official archive or its folder.

    ``label_mode``: "fine" (the 10 or 100 classes) or "coarse" (CIFAR-100's 20 superclasses).
    ``expected_md5``: checked against an archive; defaults to the official checksum.
    CIFAR-100 datasets carry ``superclasses`` (fine class -> superclass, taken from the data).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    found = detect_cifar(path)
    if found is None:
        raise FileNotFoundError(f"{path} is not a CIFAR-10/100 python-version archive or extracted folder")
    spec, location = found
    if label_mode == "coarse" and spec.name != "cifar100":
        raise ValueError(f"label_mode='coarse' needs CIFAR-100; {path} is {spec.name}")
    names = [spec.meta_file, *(spec.train_files if split == "train" else spec.test_files)]
    if location.is_file():
        check_md5(location, expected_md5 or spec.md5)
        with tarfile.open(location) as tar:

            def read(name: str) -> dict:
                member = tar.extractfile(f"{spec.folder}/{name}")
                if member is None:
                    raise FileNotFoundError(f"{location} has no {spec.folder}/{name}")
                return _unpickle(member)

            meta, *batches = [read(n) for n in names]
    else:
        missing = [n for n in names if not (location / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{location} lacks {', '.join(missing)}")
        loaded = []
        for n in names:
            with open(location / n, "rb") as f:
                loaded.append(_unpickle(f))
        meta, *batches = loaded

    images = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
    superclasses = None
    if spec.name == "cifar10":
        labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
        classes = [_str(c) for c in meta[b"label_names"]]
    else:
        fine = np.concatenate([np.asarray(b[b"fine_labels"], dtype=np.int64) for b in batches])
        coarse = np.concatenate([np.asarray(b[b"coarse_labels"], dtype=np.int64) for b in batches])
        fine_names = [_str(c) for c in meta[b"fine_label_names"]]
        coarse_names = [_str(c) for c in meta[b"coarse_label_names"]]
        superclasses = superclass_map(fine, coarse, fine_names, coarse_names)
        labels, classes = (fine, fine_names) if label_mode == "fine" else (coarse, coarse_names)
        if label_mode == "coarse":
            superclasses = None  # the classes are the superclasses
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(classes):
        raise ValueError(f"{path}: labels outside 0..{len(classes) - 1}")
    return ArrayDataset(
        np.ascontiguousarray(images),
        labels,
        classes,
        superclasses=superclasses,
        source=f"{location}#{split}",
        extra={"dataset": spec.name, "split": split, "label_mode": label_mode},
    )


def superclass_map(
    fine: np.ndarray, coarse: np.ndarray, fine_names: list[str], coarse_names: list[str]
) -> dict[str, str]:
    """Fine class -> superclass, read off the data (every fine label must have one coarse label)."""
    pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0)
    mapping: dict[str, str] = {}
    for f, c in pairs:
        name = fine_names[f]
        if name in mapping and mapping[name] != coarse_names[c]:
            raise ValueError(
                f"class {name!r} appears under two superclasses: {mapping[name]!r} and {coarse_names[c]!r}"
            )
        mapping[name] = coarse_names[c]
    return mapping


# ----------------------------------------------------------------------------- subsets and label modes
def select_classes(data: ArrayDataset, names: Sequence[str]) -> ArrayDataset:
    """Keep only the named classes; labels become 0..k-1 in the data set's original class order."""
    unknown = [n for n in names if n not in data.classes]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; known: {', '.join(data.classes)}")
    keep = [c for c in data.classes if c in set(names)]  # original order, no duplicates
    old = np.array([data.classes.index(c) for c in keep])
    remap = np.full(len(data.classes), -1, dtype=np.int64)
    remap[old] = np.arange(len(keep))
    mask = remap[data.labels] >= 0
    superclasses = {c: data.superclasses[c] for c in keep} if data.superclasses else None
    return ArrayDataset(
        data.images[mask],
        remap[data.labels[mask]],
        keep,
        superclasses=superclasses,
        source=data.source,
        extra={**data.extra, "classes_subset": keep},
    )


def select_superclass(data: ArrayDataset, superclasses: str | Sequence[str]) -> ArrayDataset:
    """Keep the fine classes of one or more superclasses (e.g. "fish": its five classes)."""
    if not data.superclasses:
        raise ValueError(f"{data.source} has no superclasses (only CIFAR-100 with label_mode=fine does)")
    wanted = [superclasses] if isinstance(superclasses, str) else list(superclasses)
    known = sorted(set(data.superclasses.values()))
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise ValueError(f"unknown superclasses {unknown}; known: {', '.join(known)}")
    subset = select_classes(data, [c for c in data.classes if data.superclasses[c] in wanted])
    subset.extra["superclass_subset"] = wanted
    return subset


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


def describe(data: ArrayDataset) -> str:
    counts = np.bincount(data.labels, minlength=len(data.classes))
    return f"{data.source}: {len(data)} images, {len(data.classes)} classes ({counts.min()}-{counts.max()} per class)"
