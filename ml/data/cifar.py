"""The official CIFAR-10 / CIFAR-100 python-version archives (`CIFAR`: names, md5s, URLs, file
lists): `detect_cifar` recognises an archive, its extracted folder or a folder holding either;
`load_cifar` reads one (archives md5-checked and read without extracting), fine or coarse labels,
with CIFAR-100's fine class -> superclass map (`superclass_map`)."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.data.dataset import ArrayDataset


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
