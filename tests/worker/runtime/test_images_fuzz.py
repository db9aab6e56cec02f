"""Property tests: damaged versions of valid images of every accepted format.

For any truncation, overwritten span or inserted bytes, `inspect_upload` either accepts the file
or raises `ImageRejected` with one of the known messages (no other exception escapes a decoder),
and whatever it accepts the worker can decode and thumbnail (a job never fails on a file the
upload check let through).
"""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.hostile import encode, photo
from worker.runtime.images import ImageRejected, decode_for_model, inspect_upload, make_thumbnail

BASE = photo(48, 36, seed=7)
RGBA = BASE.convert("RGBA")
RGBA.putalpha(200)
SEEDS = {
    "jpeg": encode(BASE, "JPEG", quality=90),
    "jpeg_progressive": encode(BASE, "JPEG", quality=90, progressive=True),
    "png": encode(BASE, "PNG"),
    "png_rgba": encode(RGBA, "PNG"),
    "png_palette": encode(BASE.convert("P"), "PNG"),
    "webp": encode(BASE, "WEBP", quality=80),
    "webp_lossless_alpha": encode(RGBA, "WEBP", lossless=True),
    "gif": encode(BASE, "GIF"),
    "bmp": encode(BASE, "BMP"),
    "tiff": encode(BASE, "TIFF"),
    "tiff_deflate": encode(BASE, "TIFF", compression="tiff_deflate"),
}
MESSAGE_STARTS = (
    "The file is empty",
    "The file is not an image",
    "The image file is truncated",
    "The image ",
    "The file is ",
)


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "flip"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        data = data[:at]
    elif kind == "overwrite":
        span = draw(st.binary(min_size=1, max_size=32))
        data[at : at + len(span)] = span
    elif kind == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=32))
    else:
        data[at] ^= 1 << draw(st.integers(0, 7))
    return f"{name}/{kind}@{at}", bytes(data)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_damaged_images_are_refused_cleanly_or_fully_usable(case: tuple[str, bytes]) -> None:
    label, data = case
    try:
        info = inspect_upload(data, max_bytes=1 << 20, max_pixels=40_000_000)
    except ImageRejected as exc:
        assert str(exc).startswith(MESSAGE_STARTS), (label, str(exc))
        return
    # accepted: the worker and the thumbnailer must cope with it too
    arr = decode_for_model(data)
    assert arr.shape == (3, 32, 32), label
    with Image.open(io.BytesIO(make_thumbnail(data))) as thumb:
        assert thumb.format == "JPEG", label
    assert info.width >= 1 and info.height >= 1, label


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_is_itself_accepted(name: str) -> None:
    assert inspect_upload(SEEDS[name], max_bytes=1 << 20, max_pixels=40_000_000).width == 48
