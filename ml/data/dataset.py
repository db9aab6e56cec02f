"""`ArrayDataset` (uint8 N x 3 x H x W images, int64 labels, class names) and what works on any
one: class subsets (`select_classes`, `select_superclass`, labels remapped to 0..k-1) and
`describe`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


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


def describe(data: ArrayDataset) -> str:
    counts = np.bincount(data.labels, minlength=len(data.classes))
    return f"{data.source}: {len(data)} images, {len(data.classes)} classes ({counts.min()}-{counts.max()} per class)"
