"""Conversion to model input: `decode_for_model`, bytes -> uint8 3 x H x W RGB array."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .decoding import _decode, _to_rgb
from .formats import DEFAULT_MAX_PIXELS


def decode_for_model(
    data: bytes, size: tuple[int, int] = (32, 32), *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Bytes -> uint8 array 3 x H x W (RGB) for the model; ``size`` is (H, W) like a manifest's input_size.

    The image is centre-cropped to the target aspect ratio (CIFAR images are square and framed on
    the object) and resized with a bicubic filter; large images are first reduced by whole
    factors (``reducing_gap``), and JPEGs are decoded at reduced scale, which is much faster and
    loses nothing at 32 x 32.
    """
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (H, W), got {size}")
    side = 2 * max(height, width)
    im = _decode(data, draft_to=(side, side), max_pixels=max_pixels).image
    src_w, src_h = im.size
    if src_w * height > src_h * width:  # wider than the target: crop the sides
        crop_w = src_h * width / height
        box = ((src_w - crop_w) / 2, 0.0, (src_w + crop_w) / 2, float(src_h))
    else:
        crop_h = src_w * height / width
        box = (0.0, (src_h - crop_h) / 2, float(src_w), (src_h + crop_h) / 2)
    resized = _to_rgb(im.resize((width, height), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0))
    arr = np.asarray(resized, dtype=np.uint8)  # H x W x 3
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
