"""Tiny generated data in the formats ml.data reads (used by tests/ml/conftest.py and the tests).

- `write_cifar(dest, kind, archive=...)`: a small CIFAR-10 / CIFAR-100 in the exact official
  python-version format (Python-2-style pickles, protocol 2, bytes keys, the official file and
  folder names), as the ``.tar.gz`` or as the extracted folder.
- `write_image_folder(root)`: ``root/<class>/*.png``, each class a distinct colour plus noise, so
  a model can learn it in an epoch or two.
- `CIFAR100_SUPERCLASSES`: the real CIFAR-100 superclass -> fine classes table; the generated
  CIFAR-100 uses these names and this grouping, labels in alphabetical order as in the official meta.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
CIFAR100_FINE = sorted(c for fine in CIFAR100_SUPERCLASSES.values() for c in fine)
CIFAR100_COARSE = sorted(CIFAR100_SUPERCLASSES)
CIFAR100_COARSE_OF = {c: s for s, fine in CIFAR100_SUPERCLASSES.items() for c in fine}


def class_images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 N x 3 x 32 x 32: a per-class colour plus noise, so classes are separable."""
    palette = rng.integers(0, 256, size=(num_classes, 3))
    base = palette[labels][:, :, None, None]
    noise = rng.integers(-30, 31, size=(len(labels), 3, 32, 32))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(obj: dict) -> bytes:
    return pickle.dumps(obj, protocol=2)


def cifar_files(kind: str, per_class_train: int, per_class_test: int, seed: int) -> dict[str, bytes]:
    """{file name: pickled bytes} of a small CIFAR-10 or CIFAR-100 in the official layout."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    if kind == "cifar10":
        train = rng.permutation(np.repeat(np.arange(10), per_class_train))
        batches = np.array_split(train, 5)
        for i, labels in enumerate(batches, start=1):
            files[f"data_batch_{i}"] = _pickle(
                {
                    b"batch_label": f"training batch {i} of 5".encode(),
                    b"labels": labels.tolist(),
                    b"data": class_images(labels, 10, np.random.default_rng(seed)).reshape(len(labels), -1),
                    b"filenames": [f"img_{i}_{j}.png".encode() for j in range(len(labels))],
                }
            )
        test = rng.permutation(np.repeat(np.arange(10), per_class_test))
        files["test_batch"] = _pickle(
            {
                b"batch_label": b"testing batch 1 of 1",
                b"labels": test.tolist(),
                b"data": class_images(test, 10, np.random.default_rng(seed)).reshape(len(test), -1),
                b"filenames": [f"test_{j}.png".encode() for j in range(len(test))],
            }
        )
        files["batches.meta"] = _pickle(
            {
                b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                b"num_cases_per_batch": len(batches[0]),
                b"num_vis": 3072,
            }
        )
        return files
    if kind == "cifar100":
        coarse_of_fine = np.array([CIFAR100_COARSE.index(CIFAR100_COARSE_OF[c]) for c in CIFAR100_FINE])
        for name, per_class in (("train", per_class_train), ("test", per_class_test)):
            fine = rng.permutation(np.repeat(np.arange(100), per_class))
            files[name] = _pickle(
                {
                    b"filenames": [f"{name}_{j}.png".encode() for j in range(len(fine))],
                    b"batch_label": f"{name}ing batch 1 of 1".encode(),
                    b"fine_labels": fine.tolist(),
                    b"coarse_labels": coarse_of_fine[fine].tolist(),
                    b"data": class_images(fine, 100, np.random.default_rng(seed)).reshape(len(fine), -1),
                }
            )
        files["meta"] = _pickle(
            {
                b"fine_label_names": [c.encode() for c in CIFAR100_FINE],
                b"coarse_label_names": [c.encode() for c in CIFAR100_COARSE],
            }
        )
        return files
    raise ValueError(kind)


FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


def write_cifar(
    dest: Path,
    kind: str = "cifar10",
    *,
    archive: bool = True,
    per_class_train: int = 4,
    per_class_test: int = 2,
    seed: int = 0,
) -> Path:
    """Write the official archive (``dest/cifar-10-python.tar.gz``) or folder (``dest/cifar-10-batches-py/``)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = cifar_files(kind, per_class_train, per_class_test, seed)
    folder = FOLDERS[kind]
    if not archive:
        (dest / folder).mkdir(exist_ok=True)
        for name, blob in files.items():
            (dest / folder / name).write_bytes(blob)
        return dest / folder
    path = dest / ARCHIVES[kind]
    with tarfile.open(path, "w:gz") as tar:
        dir_info = tarfile.TarInfo(folder)
        dir_info.type = tarfile.DIRTYPE
        dir_info.mode = 0o755
        tar.addfile(dir_info)
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


IMAGE_FOLDER_CLASSES = ["cat", "dog", "frog", "ship"]


def write_image_folder(root: Path, per_class: int = 20, seed: int = 0, classes: list[str] | None = None) -> Path:
    classes = classes or IMAGE_FOLDER_CLASSES
    labels = np.repeat(np.arange(len(classes)), per_class)
    images = class_images(labels, len(classes), np.random.default_rng(seed))
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")
    return root


def tiny_train_overrides(data: Path, out_dir: Path, **overrides: Any) -> dict[str, Any]:
    """TrainConfig fields for a run of about a second on the CPU: ResNet-20 at width 0.25,
    2 validation images per class, one epoch, no progress bar or TensorBoard."""
    return {
        "data": str(data),
        "out_dir": str(out_dir),
        "val_per_class": 2,
        "epochs": 1,
        "batch_size": 16,
        "lr": 0.05,
        "model": "resnet20",
        "width": 0.25,
        "progress": False,
        "tensorboard": False,
        **overrides,
    }
