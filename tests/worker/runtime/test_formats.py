"""AVIF (Pillow's own plugin) and HEIC/HEIF (pillow-heif) photos go through the same checks and
decode as every other format; formats we still refuse are named in the message."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from worker.runtime import images
from worker.runtime.images import ImageRejected, decode_for_model, inspect_upload, prepare_upload


def encode(fmt: str, size=(64, 48), color=(20, 160, 40), **params) -> bytes:
    im = Image.new("RGB", size, color)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("pil_format", "extension", "mime"), [("AVIF", "avif", "image/avif"), ("HEIF", "heic", "image/heic")]
)
def test_avif_and_heic_are_inspected_and_decoded(pil_format, extension, mime):
    data = encode(pil_format, size=(64, 48), color=(20, 160, 40), quality=90)
    info = inspect_upload(data)
    assert (info.format, info.mime, info.width, info.height) == (extension, mime, 64, 48)

    arr = decode_for_model(data, (32, 32))
    assert arr.shape == (3, 32, 32) and arr.dtype == np.uint8
    # The colour survives the lossy codec: the mean is close to the source colour.
    assert np.allclose(arr.reshape(3, -1).mean(axis=1), (20, 160, 40), atol=12)

    info2, thumbnail = prepare_upload(data, thumbnail_size=32)
    assert info2 == info
    assert Image.open(io.BytesIO(thumbnail)).format == "JPEG"


@pytest.mark.parametrize("pil_format", ["AVIF", "HEIF"])
def test_truncated_avif_and_heic_are_corrupt_not_unknown(pil_format):
    data = encode(pil_format, size=(200, 160))
    with pytest.raises(ImageRejected) as excinfo:
        inspect_upload(data[: len(data) // 2])
    assert str(excinfo.value) == images.MSG_CORRUPT


@pytest.mark.parametrize("pil_format", ["AVIF", "HEIF"])
def test_pixel_limit_applies_to_avif_and_heic(pil_format):
    data = encode(pil_format, size=(300, 200))
    with pytest.raises(ImageRejected, match="megapixels"):
        inspect_upload(data, max_pixels=50_000)


def test_the_accepted_list_names_the_new_formats():
    assert "AVIF" in images.ACCEPTED_FORMATS_TEXT and "HEIC" in images.ACCEPTED_FORMATS_TEXT
    assert "AVIF" in images.MSG_NOT_IMAGE


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "SVG"),
        (b"%PDF-1.7\n", "PDF"),
        (b"8BPS\x00\x01" + b"\x00" * 40, "Photoshop (PSD)"),
        (b"\xff\x0a\xfa\x7f" + b"\x00" * 40, "JPEG XL"),
    ],
)
def test_refused_formats_are_named(data, name):
    with pytest.raises(ImageRejected) as excinfo:
        inspect_upload(data)
    assert f"it looks like {name}" in str(excinfo.value)
    assert "not an image" in str(excinfo.value)


@pytest.mark.parametrize("pil_format", ["AVIF", "HEIF"])
def test_exif_orientation_is_applied_once(pil_format):
    # Left half red, right half blue; orientation 6 (rotate 90° clockwise to display) puts red on top.
    im = Image.new("RGB", (64, 32), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format=pil_format, exif=exif.tobytes(), quality=95)
    data = buf.getvalue()
    info = inspect_upload(data)
    assert (info.width, info.height) == (32, 64)
    arr = decode_for_model(data, (64, 32)).astype(int)  # H x W = 64 x 32, as displayed
    top, bottom = arr[:, :24, :], arr[:, 40:, :]
    assert top[0].mean() > 200 and top[2].mean() < 60  # red on top
    assert bottom[2].mean() > 200 and bottom[0].mean() < 60  # blue below
