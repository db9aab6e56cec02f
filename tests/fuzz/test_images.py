"""Property tests (Hypothesis) for the upload check, worker.runtime.images.inspect_upload.

* Any bytes at all, and any damaged copy of a real image (cut short, bytes overwritten, junk
  after a real header), either pass or raise ImageRejected with a message, never anything else.
* Real images of random size, colour mode and format, within the limits, are accepted with the
  right format, MIME type and size (EXIF-rotated JPEGs report their displayed size), and what is
  accepted also decodes for the model and makes a thumbnail, so the worker never meets an
  accepted upload it cannot read.
* The byte and pixel limits hold exactly: one byte or one pixel over is refused with the limit
  in the message, exactly at the limit is accepted.

Derandomized so CI runs the same cases every time. Pure Python: no database.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from worker.runtime.images import ImageInfo, ImageRejected, decode_for_model, inspect_upload, make_thumbnail

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# format -> (Pillow name, canonical extension, MIME type, colour modes that format can store)
FORMATS = {
    "jpg": ("JPEG", "jpg", "image/jpeg", ["RGB", "L", "CMYK"]),
    "png": ("PNG", "png", "image/png", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"]),
    "webp": ("WEBP", "webp", "image/webp", ["RGB", "RGBA"]),
    "gif": ("GIF", "gif", "image/gif", ["P", "L"]),
    "bmp": ("BMP", "bmp", "image/bmp", ["RGB", "L", "P", "1"]),
    "tiff": ("TIFF", "tiff", "image/tiff", ["RGB", "RGBA", "L", "CMYK", "1"]),
}
MAGIC = [
    b"\xff\xd8\xff\xe0",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
]


def _noise_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        values = rng.integers(0, 65536, (height, width), dtype=np.uint16).astype("<u2")
        return Image.frombytes("I;16", (width, height), values.tobytes())
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    if mode == "P":
        return rgb.quantize(colors=16)
    return rgb.convert(mode)


@st.composite
def real_images(draw, max_side: int = 96) -> tuple[bytes, str, int, int]:
    """(bytes, format key, width, height) of a real encoded image."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    pil_name, _, _, modes = FORMATS[fmt]
    mode = draw(st.sampled_from(modes))
    width = draw(st.integers(1, max_side))
    height = draw(st.integers(1, max_side))
    image = _noise_image(mode, width, height, draw(st.integers(0, 2**32 - 1)))
    buf = io.BytesIO()
    image.save(buf, format=pil_name)
    return buf.getvalue(), fmt, width, height


def _accepted_or_rejected(data: bytes, **limits: int) -> ImageInfo | None:
    """inspect_upload's answer; None when it refused with a message. Anything else propagates."""
    try:
        info = inspect_upload(data, **limits)
    except ImageRejected as exc:
        assert str(exc).strip(), "a refusal must say why"
        return None
    assert info.width >= 1 and info.height >= 1
    assert info.format in {ext for _, ext, _, _ in FORMATS.values()}
    return info


# ----------------------------------------------------------------------------- hostile bytes
@given(data=st.binary(max_size=2048))
@PROPERTY_SETTINGS
def test_arbitrary_bytes_pass_or_are_refused_with_a_message(data):
    _accepted_or_rejected(data)


@given(magic=st.sampled_from(MAGIC), tail=st.binary(max_size=2048))
@PROPERTY_SETTINGS
def test_junk_behind_a_real_magic_number_passes_or_is_refused(magic, tail):
    _accepted_or_rejected(magic + tail)


@given(image=real_images(), cut=st.floats(0.0, 1.0, exclude_max=True))
@PROPERTY_SETTINGS
def test_truncated_real_image_passes_or_is_refused(image, cut):
    data = image[0]
    _accepted_or_rejected(data[: int(len(data) * cut)])


@given(
    image=real_images(),
    edits=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
)
@PROPERTY_SETTINGS
def test_corrupted_real_image_passes_or_is_refused(image, edits):
    data = bytearray(image[0])
    for where, value in edits:
        data[int(len(data) * where)] = value
    info = _accepted_or_rejected(bytes(data))
    if info is not None:
        # Whatever the upload check lets through, the worker can decode: no job fails later.
        assert decode_for_model(bytes(data), (32, 32)).shape == (3, 32, 32)


# ----------------------------------------------------------------------------- valid images
@given(image=real_images())
@PROPERTY_SETTINGS
def test_real_images_are_accepted_with_their_format_and_size(image):
    data, fmt, width, height = image
    info = inspect_upload(data)
    _, ext, mime, _ = FORMATS[fmt]
    assert (info.format, info.mime, info.width, info.height) == (ext, mime, width, height)
    array = decode_for_model(data, (32, 32))
    assert array.shape == (3, 32, 32) and array.dtype == np.uint8
    thumbnail = Image.open(io.BytesIO(make_thumbnail(data, 64)))
    assert thumbnail.format == "JPEG" and max(thumbnail.size) <= 64


@given(
    width=st.integers(1, 80),
    height=st.integers(1, 80),
    orientation=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
@PROPERTY_SETTINGS
def test_exif_rotated_jpeg_reports_its_displayed_size(width, height, orientation, seed):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    _noise_image("RGB", width, height, seed).save(buf, format="JPEG", exif=exif)
    info = inspect_upload(buf.getvalue())
    # Orientations 5-8 turn the picture by 90 degrees when it is shown.
    expected = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    assert (info.width, info.height) == expected
    assert decode_for_model(buf.getvalue(), (32, 32)).shape == (3, 32, 32)


# ----------------------------------------------------------------------------- limits
@given(image=real_images(max_side=64))
@PROPERTY_SETTINGS
def test_byte_limit_is_exact(image):
    data = image[0]
    assert inspect_upload(data, max_bytes=len(data)).width == image[2]
    with pytest.raises(ImageRejected, match="limit"):
        inspect_upload(data, max_bytes=len(data) - 1)


@given(image=real_images(max_side=64))
@PROPERTY_SETTINGS
def test_pixel_limit_is_exact(image):
    data, _, width, height = image
    assert inspect_upload(data, max_pixels=width * height).height == height
    if width * height > 1:
        with pytest.raises(ImageRejected, match="limit"):
            inspect_upload(data, max_pixels=width * height - 1)
