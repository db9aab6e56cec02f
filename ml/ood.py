"""Clearly non-CIFAR images, and how well an out-of-distribution score separates them.

``generate(n_per_kind, seed)`` draws 32x32 RGB uint8 images of five kinds that are no CIFAR class
(uniform noise, flat colours, rendered text, stripes, checkerboards). `ml export` uses a set of
them to report the OOD score's AUROC and the share its threshold flags; the tests use the same
generator, so what the bundle promises is what the tests check.

``auroc(in_scores, out_scores)``: the probability that a random out-of-distribution image scores
higher than a random in-distribution one (ties count one half); the Mann-Whitney U statistic.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("noise", "flat", "text", "stripes", "checkerboard")
WORDS = ("invoice", "TOTAL", "42", "Hello", "page 3", "ERROR", "lorem", "ipsum", "SALE", "x=1", "A4", "qr")


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(0, 256, 3)
    b = (a + rng.integers(80, 176, 3)) % 256  # far enough apart to be visible
    return a.astype(np.uint8), b.astype(np.uint8)


def _one(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One H x W x 3 uint8 image of ``kind``."""
    if kind == "noise":
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    if kind == "flat":
        return np.broadcast_to(np.array(_colour(rng), dtype=np.uint8), (size, size, 3)).copy()
    if kind == "text":
        scale = 4  # draw large, then shrink as a photo of a document would be
        im = Image.new("RGB", (size * scale, size * scale), _colour(rng))
        draw = ImageDraw.Draw(im)
        font = ImageFont.load_default()
        ink = tuple(255 - c for c in im.getpixel((0, 0)))
        for line in range(int(rng.integers(2, 6))):
            word = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 3))))
            draw.text((int(rng.integers(0, 24)), 8 + line * 24), word, fill=ink, font=font)
        return np.asarray(im.resize((size, size), Image.Resampling.BOX))
    a, b = _two_colours(rng)
    y, x = np.mgrid[0:size, 0:size]
    if kind == "stripes":
        period = int(rng.integers(2, 9))
        angle = rng.choice(["h", "v", "d"])
        coord = y if angle == "h" else x if angle == "v" else x + y
        mask = (coord // period) % 2 == 0
    elif kind == "checkerboard":
        cell = int(rng.integers(2, 9))
        mask = ((y // cell) + (x // cell)) % 2 == 0
    else:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    return np.where(mask[..., None], a, b).astype(np.uint8)


def generate(n_per_kind: int = 100, seed: int = 0, size: int = 32) -> tuple[np.ndarray, list[str]]:
    """``n_per_kind`` images of each kind: uint8 N x 3 x size x size (RGB), and each image's kind."""
    rng = np.random.default_rng(seed)
    images, kinds = [], []
    for kind in KINDS:
        for _ in range(n_per_kind):
            images.append(_one(kind, rng, size).transpose(2, 0, 1))
            kinds.append(kind)
    return np.ascontiguousarray(np.stack(images)), kinds


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling ``out_scores`` (positives, expected higher) from ``in_scores``."""
    a, b = np.asarray(in_scores, dtype=np.float64), np.asarray(out_scores, dtype=np.float64)
    if not len(a) or not len(b):
        raise ValueError("auroc needs scores of both sets")
    ranks = _ranks(np.concatenate([a, b]))
    u = ranks[len(a) :].sum() - len(b) * (len(b) + 1) / 2
    return float(u / (len(a) * len(b)))
