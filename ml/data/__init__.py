"""Data sources, all returning an `ArrayDataset` of uint8 N x 3 x H x W images and int64 labels.

- `load_image_folder(root)` (`ml.data.folders`): ``root/<class>/*.jpg|png``; the decoded array is
  cached under ``cache_dir`` (default `DEFAULT_CACHE_DIR`: ``.cache/ml``, or ``$ML_CACHE_DIR``)
  keyed by a fingerprint of the file list, sizes and modification times, so 50,000 JPEGs are
  decoded once.
- `load_cifar(path, split=...)` (`ml.data.cifar`): the official CIFAR-10 / CIFAR-100
  python-version archives (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``; md5-checked,
  read without extracting) or their extracted folders (``cifar-10-batches-py/``,
  ``cifar-100-python/``); ``label_mode="coarse"`` gives CIFAR-100's 20 superclasses.
- `select_classes`, `select_superclass` (`ml.data.dataset`): class subsets and CIFAR-100
  superclass subsets, labels remapped to 0..k-1.
- `stratified_split(labels, per_class, seed)` (`ml.data.sources`): the seeded train/validation split.
- `load_source(spec, ...)` (`ml.data.sources`): one entry point that detects which of the above a
  path is (``"cifar10"`` / ``"cifar100"``: the archive or folder in `DEFAULT_DATA_DIR`, ``data/``
  or ``$ML_DATA_DIR``).
"""

from __future__ import annotations

import sys
import types

# The package: dataset (ArrayDataset, class subsets, describe), folders (image-folder trees, decoding,
# the decode cache), cifar (the official archives, md5, superclasses), sources (load_source,
# stratified_split). The names below are its interface.
from ml.data import folders, sources
from ml.data.cifar import CIFAR, CifarSpec, check_md5, detect_cifar, load_cifar, md5_file, superclass_map
from ml.data.dataset import ArrayDataset, describe, select_classes, select_superclass
from ml.data.folders import IMAGE_SUFFIXES, decode_image, folder_fingerprint, load_image_folder
from ml.data.sources import load_source, stratified_split


# Settings that code reads from its own module's globals when it runs: each is defined once, in the
# module that uses it, and this package holds no copy. ``ml.data.DEFAULT_CACHE_DIR`` is a property
# that reads the value in effect there, and setting it here (``monkeypatch.setattr(ml.data,
# "DEFAULT_CACHE_DIR", ...)``) sets it there; the tests patch ``ml.data.folders.DEFAULT_CACHE_DIR``.
def _setting(module: types.ModuleType, name: str) -> property:
    return property(lambda _pkg: getattr(module, name), lambda _pkg, value: setattr(module, name, value))


class _Package(types.ModuleType):
    DEFAULT_CACHE_DIR = _setting(folders, "DEFAULT_CACHE_DIR")
    DEFAULT_DATA_DIR = _setting(sources, "DEFAULT_DATA_DIR")
    PARALLEL_MIN_FILES = _setting(folders, "PARALLEL_MIN_FILES")


sys.modules[__name__].__class__ = _Package

__all__ = [
    "CIFAR",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_DATA_DIR",
    "IMAGE_SUFFIXES",
    "PARALLEL_MIN_FILES",
    "ArrayDataset",
    "CifarSpec",
    "check_md5",
    "decode_image",
    "describe",
    "detect_cifar",
    "folder_fingerprint",
    "load_cifar",
    "load_image_folder",
    "load_source",
    "md5_file",
    "select_classes",
    "select_superclass",
    "stratified_split",
    "superclass_map",
]
