"""The one decode of an upload (`_decode`), shared by the upload check, the thumbnail and the
worker: EXIF orientation, and any Pillow mode to 8-bit L/RGB/RGBA, then RGB over white."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .formats import MSG_EMPTY, ImageRejected
from .opening import _draft, _load, _open, _verify_png_checksums


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8) of a decoded image.

    Only called after `_load`: for PNG, ``getexif()`` loads the image itself, and a decoder error
    swallowed here would let a second load "succeed" on a half-decoded image.
    """
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a malformed EXIF block is not a reason to refuse the pixels
        return 1


def _exif_transpose(im: Image.Image, orientation: int) -> Image.Image:
    if orientation == 1:  # nothing to do; exif_transpose would still copy every pixel
        return im
    try:
        transposed = ImageOps.exif_transpose(im)
    except Exception:  # malformed EXIF: keep the stored orientation
        return im
    return transposed if transposed is not None else im


def _to_8bit(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit "L", "RGB" or "RGBA" (when there is transparency).

    Resizing happens in these modes, before `_to_rgb`: greyscale stays one channel and alpha is
    flattened only at the small size (Pillow resizes RGBA premultiplied, so the result is the
    same as flattening first), which keeps a 40-megapixel upload to a few hundred MB.
    """
    mode = im.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return Image.fromarray(_high_depth_to_uint8(np.asarray(im), mode))
    if mode in ("L", "RGB") and "transparency" not in im.info:
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        return im.convert("RGBA")
    if mode == "1":
        return im.convert("L")
    try:
        return im.convert("RGB")  # P, CMYK, YCbCr, ...
    except (ValueError, OSError) as exc:
        raise ImageRejected(f"The image uses a colour mode ({mode}) we cannot convert to RGB.") from exc


def _to_rgb(im: Image.Image) -> Image.Image:
    """An image from `_to_8bit` (possibly resized) -> RGB, transparency composited over white."""
    if im.mode == "RGBA":
        flat = Image.new("RGBA", im.size, (255, 255, 255, 255))
        flat.alpha_composite(im)
        return flat.convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _high_depth_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit integer or float greyscale -> uint8, scaled rather than clipped.

    Integer shifts and in-place float32 arithmetic: a 40-megapixel 16-bit PNG once took 7 s and
    1.4 GB here in float64.
    """
    if mode.startswith("I;16"):
        return (arr >> 8).astype(np.uint8)  # 65535 -> 255; within one level of round(v / 257)
    if arr.size == 0:
        return np.zeros(arr.shape, np.uint8)
    if mode == "I":
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 255:  # 8-bit data in a 32-bit mode
            return arr.astype(np.uint8)
        if lo >= 0 and hi <= 65535:  # Pillow uses "I" for 16-bit data from some decoders
            return (arr >> 8).astype(np.uint8)
    values = np.array(arr, dtype=np.float32)  # a private, writable copy
    finite = np.isfinite(values)
    if not finite.all():
        values[~finite] = 0.0
    lo, hi = float(values.min()), float(values.max())
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        values *= 255.0
    else:  # arbitrary range: stretch to 0-255
        values -= lo
        values *= 255.0 / (hi - lo) if hi > lo else 0.0
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    return values.astype(np.uint8)


@dataclass
class _Decoded:
    image: Image.Image  # the first frame, upright, in a mode of `_to_8bit` (JPEGs possibly at reduced scale)
    format: str  # Pillow's format name
    size: tuple[int, int]  # full-resolution (width, height) as displayed, i.e. after EXIF orientation


def _decode(data: bytes, *, draft_to: tuple[int, int], max_pixels: int) -> _Decoded:
    """The one decode of an upload: the upload check, the thumbnail and the worker all run this.

    Whatever it refuses is refused at upload time, and whatever it accepts at upload time the
    worker decodes the same way, so a job never fails in the worker on a file the upload check
    let through. ``draft_to`` only sets the JPEG decode scale, which reads every byte either way.
    """
    if not data:
        raise ImageRejected(MSG_EMPTY)
    im = _open(data, max_pixels=max_pixels)
    fmt = im.format
    width, height = im.size  # before the reduced-scale JPEG decode changes it
    _draft(im, draft_to)
    _load(im, max_pixels)
    if fmt == "PNG":
        _verify_png_checksums(data)
    orientation = _orientation(im)
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees when displayed
        width, height = height, width
    return _Decoded(image=_to_8bit(_exif_transpose(im, orientation)), format=fmt, size=(width, height))
