"""Reading untrusted image uploads: the upload-time check, decoding for the model, thumbnails.

Everything here takes the raw bytes a user sent and trusts nothing about them: the format is
sniffed from the content by Pillow (never from the file name or the client's content type), only
the formats in `FORMATS` are accepted (AVIF through Pillow's own plugin, HEIC/HEIF through
pillow-heif's opener, registered here), the size in bytes is checked before anything is parsed, and the pixel
count is checked from the header before any pixel is decoded.

* `inspect_upload` is the check the web app runs before it stores and queues an upload. It
  decodes the whole image once, with the very function the worker's `decode_for_model` uses
  (`_decode`), so a file is either refused with a 400 at upload or classified: never accepted
  and then failed in the worker.
* `decode_for_model` turns the bytes into the uint8 3 x H x W RGB array the model bundle takes:
  EXIF orientation applied, first frame of an animation, transparency flattened onto white,
  16-bit / palette / greyscale / CMYK converted to 8-bit RGB, centre-cropped to the target aspect
  ratio and resized with a bicubic filter.
* `prepare_upload` is `inspect_upload` plus `make_thumbnail` with a single decode, for the
  upload path.
* `make_thumbnail` re-encodes a small JPEG with the same orientation and alpha handling. Because
  it is re-encoded from decoded pixels, nothing a polyglot file carries besides its pixels (an
  appended zip, HTML in a comment) survives into the thumbnail.

Every failure is an `ImageRejected` whose message a person can act on. This module imports no
Django.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF (iPhone photos): pillow-heif registers a Pillow plugin named "HEIF".
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
    HEIF_SUPPORTED = False

DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # 10 MB
DEFAULT_MAX_PIXELS = 40_000_000  # 40 megapixels: a 6000 x 4000 (24 MP) photo passes
THUMBNAIL_QUALITY = 85

# Pillow format name -> (canonical extension, MIME type). MPO is what Pillow calls the
# multi-picture JPEGs many phone cameras write; they are JPEG files.
FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("jpg", "image/jpeg"),
    "MPO": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
    "BMP": ("bmp", "image/bmp"),
    "TIFF": ("tiff", "image/tiff"),
    "AVIF": ("avif", "image/avif"),
}
if HEIF_SUPPORTED:
    FORMATS["HEIF"] = ("heic", "image/heic")
# Only these plugins are ever asked to parse the bytes (MPO is reached through the JPEG plugin).
_PIL_FORMATS = tuple(name for name in FORMATS if name != "MPO")
# What people call the accepted formats, for messages and the upload page.
FORMAT_NAMES = ["JPEG", "PNG", "WebP", "GIF", "BMP", "TIFF", "AVIF", *(["HEIC/HEIF"] if HEIF_SUPPORTED else [])]
ACCEPTED_FORMATS_TEXT = ", ".join(FORMAT_NAMES[:-1]) + " or " + FORMAT_NAMES[-1]

MSG_EMPTY = "The file is empty."
MSG_NOT_IMAGE = f"The file is not an image we can read (expected {ACCEPTED_FORMATS_TEXT})."
MSG_CORRUPT = "The image file is truncated or corrupt."

_MB = 1024 * 1024


# ----------------------------------------------------------------------------- Pillow's log records
class _UserFileProblem(logging.Filter):
    """Pillow's plugins log what is wrong with the file being parsed (the TIFF plugin says "More
    samples per pixel than can be decoded" at ERROR). Here that file is one a user sent, and
    refusing it is not a server error: such records are kept, at WARNING. The caller logs its
    own line saying which upload or job was refused and why."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


# The loggers of the Pillow modules that parse what we accept (logging.getLogger creates them
# before Pillow imports its plugins; a filter on "PIL" itself would not see its children's records).
PIL_LOGGERS = (
    "PIL.Image",
    "PIL.ImageFile",
    "PIL.JpegImagePlugin",
    "PIL.MpoImagePlugin",
    "PIL.PngImagePlugin",
    "PIL.WebPImagePlugin",
    "PIL.GifImagePlugin",
    "PIL.BmpImagePlugin",
    "PIL.TiffImagePlugin",
    "PIL.TiffTags",
)


def _demote_pil_errors() -> None:
    for name in PIL_LOGGERS:
        pil_logger = logging.getLogger(name)
        if not any(isinstance(f, _UserFileProblem) for f in pil_logger.filters):
            pil_logger.addFilter(_UserFileProblem())


_demote_pil_errors()


class ImageRejected(ValueError):
    """The bytes are not an image we accept; ``str(exc)`` says why, for the person who sent it."""


@dataclass
class ImageInfo:
    format: str  # canonical extension: jpg, png, webp, gif, bmp, tiff, avif, heic
    width: int  # as displayed, i.e. after EXIF orientation
    height: int
    mime: str
    frames: int = 1


# ----------------------------------------------------------------------------- opening safely
@contextmanager
def _bomb_guard() -> Iterator[None]:
    """Turn Pillow's DecompressionBombWarning into an error, here only.

    The real limit is the explicit check in `_open` (``max_pixels``, capped at Pillow's
    ``MAX_IMAGE_PIXELS``); this guard also covers the checks Pillow makes inside plugins.
    ``catch_warnings`` is not thread-safe, which is why it is not the only check.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _human_size(n: int) -> str:
    text = f"{n / _MB:.1f}".removesuffix(".0")
    return f"{text} MB"


def _megapixels(n: float) -> str:
    value = n / 1e6
    return f"{value:.1f}".removesuffix(".0") if value >= 0.1 else f"{value:.2g}"


def _bomb_message(exc: Exception, max_pixels: int) -> str:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    declared = f"{_megapixels(int(match.group(1)))} megapixels" if match else "too many pixels"
    return f"The image declares {declared}; the limit is {_megapixels(max_pixels)} megapixels."


def _check_bytes(data: bytes, max_bytes: int | None) -> None:
    if not data:
        raise ImageRejected(MSG_EMPTY)
    if max_bytes is not None and len(data) > max_bytes:
        size, limit = _human_size(len(data)), _human_size(max_bytes)
        if size == limit:  # 10.0x MB would read "10 MB; the limit is 10 MB"
            size, limit = f"{len(data):,} bytes", f"{max_bytes:,} bytes"
        raise ImageRejected(f"The file is {size}; the limit is {limit}.")


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


# ISO base media files (AVIF, HEIC): a box of type "ftyp" first, then the major brand.
_ISOBMFF_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
# Formats people send that we do not read, named in the refusal (magic bytes -> name).
_KNOWN_UNSUPPORTED = (
    (b"<svg", "SVG"),
    (b"<?xml", "XML (SVG?)"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"\x00\x00\x01\x00", "ICO"),
)


def _has_image_signature(data: bytes) -> bool:
    """Starts like one of the accepted formats: then a parse failure means damage, not a wrong type."""
    if data[4:8] == b"ftyp" and data[8:12] in _ISOBMFF_BRANDS:
        return True
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _not_image_message(data: bytes) -> str:
    """MSG_NOT_IMAGE, naming the format when it is one people commonly try."""
    head = data[:64].lstrip()
    for magic, name in _KNOWN_UNSUPPORTED:
        if head.startswith(magic):
            return f"The file is not an image we can read: it looks like {name} (expected {ACCEPTED_FORMATS_TEXT})."
    return MSG_NOT_IMAGE


def _open(data: bytes, *, max_pixels: int) -> Image.Image:
    """Parse the header only, and refuse unknown formats and too many pixels."""
    try:
        with _bomb_guard():
            im = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(_bomb_message(exc, max_pixels)) from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected(MSG_CORRUPT if _has_image_signature(data) else _not_image_message(data)) from exc
    except Exception as exc:  # a plugin choking on a malformed header
        raise ImageRejected(MSG_CORRUPT) from exc
    if im.format not in FORMATS:
        raise ImageRejected(_not_image_message(data))
    width, height = im.size
    if width < 1 or height < 1:
        raise ImageRejected(MSG_CORRUPT)
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)  # never above Pillow's own bomb limit
    if width * height > limit:
        raise ImageRejected(
            f"The image is {width}×{height} pixels ({_megapixels(width * height)} megapixels); "
            f"the limit is {_megapixels(limit)} megapixels."
        )
    return im


def _draft(im: Image.Image, size: tuple[int, int]) -> None:
    """For JPEG, let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result is still >= size.

    The scaled decode still reads every byte of the entropy-coded data, so a truncated file is
    still caught; it only skips most of the inverse DCT work.
    """
    if im.format in ("JPEG", "MPO"):
        im.draft(None, size)


def _load(im: Image.Image, max_pixels: int) -> None:
    """Decode the pixels of the current frame; any decoder failure means a bad file."""
    try:
        with _bomb_guard():
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(_bomb_message(exc, max_pixels)) from exc
    except Exception as exc:  # OSError "truncated", SyntaxError, struct.error, EOFError, ...
        raise ImageRejected(MSG_CORRUPT) from exc


def _verify_png_checksums(data: bytes) -> None:
    """Check every chunk's CRC: decoding alone can turn damaged image data into garbage pixels."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.verify()
    except Exception as exc:
        raise ImageRejected(MSG_CORRUPT) from exc


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


# ----------------------------------------------------------------------------- public API
def _count_frames(data: bytes) -> int:
    """Frames in the file, from a fresh parse (GIF and TIFF count by skipping, not decoding)."""
    try:
        with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as im:
            return int(getattr(im, "n_frames", 1))
    except Exception:  # a broken later frame; only the first one is ever used
        return 1


def _inspect(data: bytes, *, max_bytes: int, max_pixels: int, draft_to: tuple[int, int]) -> tuple[ImageInfo, _Decoded]:
    """The checks of inspect_upload; also returns the decoded first frame."""
    _check_bytes(data, max_bytes)
    decoded = _decode(data, draft_to=draft_to, max_pixels=max_pixels)
    fmt, mime = FORMATS[decoded.format]
    width, height = decoded.size
    info = ImageInfo(format=fmt, width=width, height=height, mime=mime, frames=_count_frames(data))
    return info, decoded


def inspect_upload(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageInfo:
    """The upload-time check: size, sniffed format, pixel count, and one full decode.

    Raises `ImageRejected` for an empty file, a file over ``max_bytes`` (checked before any
    parsing), anything that is not one of `FORMATS` by content, an image over
    ``max_pixels`` (checked from the header, before decoding), and a truncated or corrupt file.
    Returns the canonical format, MIME type, displayed size and frame count.
    """
    info, _ = _inspect(data, max_bytes=max_bytes, max_pixels=max_pixels, draft_to=(512, 512))
    return info


def prepare_upload(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    thumbnail_size: int = 128,
) -> tuple[ImageInfo, bytes]:
    """`inspect_upload` and `make_thumbnail` with one decode instead of two: (info, thumbnail JPEG).

    Same checks, same errors, and the same thumbnail bytes as ``make_thumbnail(data, thumbnail_size)``;
    a 6000x4000 PNG took 1.8 s as two calls and 0.7 s as one (WebP 2.4 s -> 1.1 s; best of 3 on the
    loaded 2-core dev box).
    """
    if thumbnail_size < 1:
        raise ValueError(f"thumbnail_size must be positive, got {thumbnail_size}")
    side = 2 * thumbnail_size
    info, decoded = _inspect(data, max_bytes=max_bytes, max_pixels=max_pixels, draft_to=(side, side))
    return info, _encode_thumbnail(decoded.image, thumbnail_size)


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
