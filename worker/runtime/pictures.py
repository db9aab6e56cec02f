"""The small PNGs of an explanation: a Grad-CAM heatmap in a colour map, and the model's input.

Numpy and Pillow only (no torch, no Django), so the web process can render stored maps.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# A perceptually ordered colour map (dark blue -> teal -> yellow, like viridis), as anchors.
_ANCHORS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
    dtype=np.float64,
)


def colourise(values: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 colours for values in [0, 1]."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.floor(v).astype(np.int64).clip(0, len(_ANCHORS) - 2)
    frac = (v - lo)[..., None]
    return np.round(_ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac).astype(np.uint8)


def heatmap_png(heatmap: np.ndarray, size: int = 256) -> bytes:
    """The map (any non-negative values) scaled to its maximum, coloured, smoothly enlarged to
    ``size`` x ``size`` (bilinear: a Grad-CAM map is a coarse field, not pixels), as PNG."""
    h = np.asarray(heatmap, dtype=np.float64)
    peak = h.max() if h.size else 0.0
    scaled = h / peak if peak > 0 else np.zeros_like(h)
    small = Image.fromarray(colourise(scaled), "RGB")
    out = io.BytesIO()
    small.resize((size, size), Image.Resampling.BILINEAR).save(out, format="PNG")
    return out.getvalue()


def model_input_png(image: np.ndarray) -> bytes:
    """The model's input (uint8 3 x H x W) as a PNG of its own size; pages enlarge it without smoothing."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(1, 2, 0)), "RGB").save(
        out, format="PNG"
    )
    return out.getvalue()


def channel_grid(activations: np.ndarray, n: int = 16, cell: int = 48) -> tuple[bytes, list[int]]:
    """The ``n`` most active channels (highest mean activation) of C x h x w activations as a
    square grid PNG, each channel scaled to its own range and enlarged without smoothing;
    returns the PNG and the channel indices, most active first."""
    act = np.asarray(activations, dtype=np.float64)
    order = np.argsort(-act.mean(axis=(1, 2)), kind="mergesort")[:n]
    side = int(np.ceil(np.sqrt(len(order)))) or 1
    grid = Image.new("RGB", (side * (cell + 2), side * (cell + 2)), (255, 255, 255))
    for k, c in enumerate(order):
        a = act[c]
        lo, hi = a.min(), a.max()
        scaled = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        tile = Image.fromarray(colourise(scaled), "RGB").resize((cell, cell), Image.Resampling.NEAREST)
        grid.paste(tile, ((k % side) * (cell + 2) + 1, (k // side) * (cell + 2) + 1))
    out = io.BytesIO()
    grid.save(out, format="PNG")
    return out.getvalue(), [int(c) for c in order]
