"""What is accepted and how refusals read: the formats (and the HEIF plugin registration), the
size limits, the messages, `ImageRejected` and `ImageInfo`."""

from __future__ import annotations

from dataclasses import dataclass

try:  # HEIC/HEIF (iPhone photos): pillow-heif registers a Pillow plugin named "HEIF".
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
    HEIF_SUPPORTED = False

DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # 10 MB
DEFAULT_MAX_PIXELS = 40_000_000  # 40 megapixels: a 6000 x 4000 (24 MP) photo passes

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


class ImageRejected(ValueError):
    """The bytes are not an image we accept; ``str(exc)`` says why, for the person who sent it."""


@dataclass
class ImageInfo:
    format: str  # canonical extension: jpg, png, webp, gif, bmp, tiff, avif, heic
    width: int  # as displayed, i.e. after EXIF orientation
    height: int
    mime: str
    frames: int = 1
