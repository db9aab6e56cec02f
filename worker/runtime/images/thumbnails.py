"""Thumbnails: `make_thumbnail`, a small JPEG re-encoded from the decoded pixels (no metadata)."""

from __future__ import annotations

import io

from PIL import Image

from .decoding import _decode, _to_rgb
from .formats import DEFAULT_MAX_PIXELS

THUMBNAIL_QUALITY = 85


def make_thumbnail(data: bytes, size: int = 128, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """A JPEG no larger than ``size`` x ``size``, aspect kept, upright, alpha flattened on white.

    Re-encoded from pixels with no metadata (no EXIF, so no GPS position either).
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return _encode_thumbnail(_decode(data, draft_to=(2 * size, 2 * size), max_pixels=max_pixels).image, size)


def _encode_thumbnail(im: Image.Image, size: int) -> bytes:
    im.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    _to_rgb(im).save(out, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return out.getvalue()
