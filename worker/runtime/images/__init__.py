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

from .formats import (
    ACCEPTED_FORMATS_TEXT,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    FORMAT_NAMES,
    FORMATS,
    HEIF_SUPPORTED,
    MSG_CORRUPT,
    MSG_EMPTY,
    MSG_NOT_IMAGE,
    ImageInfo,
    ImageRejected,
)
from .model_input import decode_for_model
from .opening import PIL_LOGGERS
from .thumbnails import THUMBNAIL_QUALITY, make_thumbnail
from .upload import inspect_upload, prepare_upload

__all__ = [
    "ACCEPTED_FORMATS_TEXT",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "FORMAT_NAMES",
    "HEIF_SUPPORTED",
    "MSG_CORRUPT",
    "MSG_EMPTY",
    "MSG_NOT_IMAGE",
    "PIL_LOGGERS",
    "THUMBNAIL_QUALITY",
    "ImageInfo",
    "ImageRejected",
    "decode_for_model",
    "inspect_upload",
    "make_thumbnail",
    "prepare_upload",
]
