"""Opening untrusted bytes safely: the byte limit, format sniffing, the pixel limit read from the
header, decompression-bomb guards, decoding a frame, PNG checksums, and Pillow's log records about
a user's file demoted to WARNING."""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, UnidentifiedImageError

from .formats import (
    _PIL_FORMATS,
    ACCEPTED_FORMATS_TEXT,
    FORMATS,
    MSG_CORRUPT,
    MSG_EMPTY,
    MSG_NOT_IMAGE,
    ImageRejected,
)

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
