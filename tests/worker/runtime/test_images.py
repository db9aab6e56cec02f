"""worker.runtime.images on the hostile corpus (tests/hostile.py) and on targeted cases."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from tests.hostile import CASE_NAMES, REASON_FRAGMENTS, Case, encode, left_right, photo
from worker.runtime import images
from worker.runtime.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    ImageRejected,
    decode_for_model,
    inspect_upload,
    make_thumbnail,
    opening,
    prepare_upload,
)


def inspect(data: bytes, **limits: int) -> ImageInfo:
    return inspect_upload(
        data,
        max_bytes=limits.get("max_bytes", DEFAULT_MAX_BYTES),
        max_pixels=limits.get("max_pixels", DEFAULT_MAX_PIXELS),
    )


def pixel(arr: np.ndarray, row: int, col: int) -> tuple[int, ...]:
    return tuple(int(v) for v in arr[:, row, col])


def close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 6) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


# ----------------------------------------------------------------------------- the whole corpus
@pytest.mark.parametrize("name", CASE_NAMES)
def test_inspect_upload_gives_the_expected_outcome(name: str, hostile_corpus: dict[str, Case]) -> None:
    case = hostile_corpus[name]
    if case.expected == "reject":
        with pytest.raises(ImageRejected) as excinfo:
            inspect(case.read())
        assert str(excinfo.value) == case.message
        assert REASON_FRAGMENTS[case.reason] in str(excinfo.value)
    else:
        info = inspect(case.read())
        assert (info.format, (info.width, info.height), info.frames) == (case.format, case.size, case.frames)
        assert info.mime == images.FORMATS["JPEG" if info.format == "jpg" else info.format.upper()][1]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_decode_for_model_decodes_what_is_accepted_and_refuses_the_rest(
    name: str, hostile_corpus: dict[str, Case]
) -> None:
    case = hostile_corpus[name]
    if case.expected == "reject":
        with pytest.raises(ImageRejected) as excinfo:
            decode_for_model(case.read())
        assert str(excinfo.value)  # a message, never an empty one
    else:
        arr = decode_for_model(case.read())
        assert arr.shape == (3, 32, 32)
        assert arr.dtype == np.uint8
        assert arr.flags["C_CONTIGUOUS"]


def _outcome(fn, data: bytes) -> str:
    try:
        fn(data)
    except ImageRejected as exc:
        return f"refused: {exc}"
    return "accepted"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_the_upload_check_and_the_worker_make_one_decision(name: str, hostile_corpus: dict[str, Case]) -> None:
    # Whatever the upload check accepts, the worker decodes; whatever the worker would refuse is
    # refused at upload with the same message (a broken APNG once got 202 and then failed).
    data = hostile_corpus[name].read()
    if len(data) > DEFAULT_MAX_BYTES:  # refused on length before any decode; the worker never sees it
        return
    upload = _outcome(lambda d: prepare_upload(d, max_bytes=DEFAULT_MAX_BYTES, max_pixels=DEFAULT_MAX_PIXELS), data)
    assert upload == _outcome(decode_for_model, data)
    assert upload == _outcome(inspect, data)


@pytest.mark.parametrize("name", [n for n in CASE_NAMES])
def test_make_thumbnail_reencodes_accepted_files(name: str, hostile_corpus: dict[str, Case]) -> None:
    case = hostile_corpus[name]
    if case.expected == "reject":
        with pytest.raises(ImageRejected):
            make_thumbnail(case.read())
        return
    thumb = make_thumbnail(case.read())
    with Image.open(io.BytesIO(thumb)) as im:
        assert im.format == "JPEG"
        assert im.mode == "RGB"
        assert max(im.size) <= 128
        assert not im.getexif()  # no metadata (EXIF, GPS) is carried over
        width, height = case.size
        if max(width, height) > 128:  # aspect ratio kept, upright
            assert abs(im.size[0] / im.size[1] - width / height) < 0.05
        else:  # never enlarged
            assert im.size == (width, height)
    # nothing but pixels survives a polyglot
    assert b"PK\x03\x04" not in thumb
    assert b"<script" not in thumb
    assert b"<html" not in thumb


# ----------------------------------------------------------------------------- what the model sees
def test_alpha_is_flattened_on_white(hostile_corpus: dict[str, Case]) -> None:
    arr = decode_for_model(hostile_corpus["rgba_png"].read())
    assert pixel(arr, 4, 4) == (255, 255, 255)  # fully transparent black -> white
    assert close(pixel(arr, 28, 4), (127, 127, 127), tol=2)  # half-transparent black -> mid grey
    assert pixel(arr, 16, 28) == (0, 0, 255)  # opaque blue stays blue


def test_palette_transparency_is_flattened_on_white(hostile_corpus: dict[str, Case]) -> None:
    arr = decode_for_model(hostile_corpus["palette_png_transparent"].read())
    assert pixel(arr, 16, 4) == (255, 255, 255)  # transparent index whose colour is black
    assert pixel(arr, 16, 28) == (0, 255, 0)


def test_exif_orientation_is_applied(hostile_corpus: dict[str, Case]) -> None:
    # Stored 80x40 with the left half red and the right half blue, orientation 6 (rotate 90 cw):
    # displayed 40x80 with red on top and blue at the bottom.
    arr = decode_for_model(hostile_corpus["exif_rotated"].read())
    assert close(pixel(arr, 2, 16), (255, 0, 0))
    assert close(pixel(arr, 29, 16), (0, 0, 255))
    assert close(pixel(arr, 2, 2), pixel(arr, 2, 29))  # no left/right split any more
    with Image.open(io.BytesIO(make_thumbnail(hostile_corpus["exif_rotated"].read()))) as thumb:
        assert thumb.size == (40, 80)
        assert close(thumb.getpixel((20, 5)), (255, 0, 0), tol=12)
        assert close(thumb.getpixel((20, 75)), (0, 0, 255), tol=12)


def test_without_orientation_the_same_pixels_stay_left_and_right() -> None:
    # The control for the test above: the same image with no EXIF orientation.
    arr = decode_for_model(encode(left_right(80, 40, (255, 0, 0), (0, 0, 255)), "JPEG", quality=95))
    assert close(pixel(arr, 16, 2), (255, 0, 0))
    assert close(pixel(arr, 16, 29), (0, 0, 255))


def test_16bit_grey_is_scaled_not_clipped(hostile_corpus: dict[str, Case]) -> None:
    for name in ("png_16bit_grey", "tiff_16bit_grey"):
        arr = decode_for_model(hostile_corpus[name].read())
        row = arr[0, 16].astype(int)
        assert row[0] < 30 and row[-1] > 225, name  # the full 0..65535 ramp spans 0..255
        assert np.all(np.diff(row) >= 0), name  # still a ramp, left to right
        assert (arr[0] == arr[1]).all() and (arr[1] == arr[2]).all(), name  # grey stays grey
        assert abs(float(arr.mean()) - 127.5) < 3, name


def test_16bit_rgb_keeps_its_colours(hostile_corpus: dict[str, Case]) -> None:
    arr = decode_for_model(hostile_corpus["png_16bit_rgb"].read()).astype(int)
    assert arr[0, 16, 0] < 30 and arr[0, 16, -1] > 225  # red ramp
    assert (arr[1] == 0).all()
    assert np.abs(arr[2] - 127).max() <= 1  # blue at half


def test_cmyk_greyscale_and_one_pixel_become_rgb(hostile_corpus: dict[str, Case]) -> None:
    cmyk = decode_for_model(hostile_corpus["cmyk_jpeg"].read())
    assert close(pixel(cmyk, 16, 16), (255, 0, 0))
    grey = decode_for_model(hostile_corpus["greyscale_jpeg"].read())
    assert (grey[0] == grey[1]).all() and (grey[1] == grey[2]).all()
    assert grey.std() > 5  # it has content, not a flat fill
    dot = decode_for_model(hostile_corpus["one_pixel"].read())
    assert (dot.reshape(3, -1) == np.array([[10], [200], [30]])).all()


def test_animations_use_their_first_frame(hostile_corpus: dict[str, Case]) -> None:
    for name in ("animated_gif", "animated_webp"):
        arr = decode_for_model(hostile_corpus[name].read())
        assert (arr.reshape(3, -1) == np.array([[255], [0], [0]])).all(), name


def test_webp_alpha_is_flattened_on_white(hostile_corpus: dict[str, Case]) -> None:
    arr = decode_for_model(hostile_corpus["webp_alpha"].read())
    assert pixel(arr, 16, 4) == (255, 255, 255)
    assert pixel(arr, 16, 28) == (255, 0, 0)


def test_non_square_target_size_is_height_width() -> None:
    arr = decode_for_model(encode(photo(120, 90), "PNG"), size=(16, 48))
    assert arr.shape == (3, 16, 48)


def test_centre_crop_keeps_the_middle_of_a_wide_image() -> None:
    # 96x32: blue | red | blue in thirds; the central square is all red.
    arr = np.zeros((32, 96, 3), np.uint8)
    arr[:, :32] = arr[:, 64:] = (0, 0, 255)
    arr[:, 32:64] = (255, 0, 0)
    out = decode_for_model(encode(Image.fromarray(arr), "PNG"))
    assert close(pixel(out, 16, 1), (255, 0, 0), tol=20)
    assert close(pixel(out, 16, 30), (255, 0, 0), tol=20)


def test_reduced_scale_jpeg_decoding_matches_a_full_decode() -> None:
    # decode_for_model decodes big JPEGs at 1/8 scale; the result must match what a full decode
    # (the same pixels stored losslessly as PNG) gives, up to JPEG noise.
    big = photo(2400, 1600, seed=3)
    fast = decode_for_model(encode(big, "JPEG", quality=95)).astype(int)
    full = decode_for_model(encode(big, "PNG", compress_level=1)).astype(int)
    assert np.abs(fast - full).mean() < 2.0
    assert np.abs(fast - full).max() < 20


# ----------------------------------------------------------------------------- limits and order of checks
def test_size_is_checked_before_anything_is_parsed(
    hostile_corpus: dict[str, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Image.open must not be called for an oversized upload")

    monkeypatch.setattr(opening.Image, "open", refuse)
    with pytest.raises(ImageRejected, match=r"^The file is 50 MB; the limit is 10 MB\.$"):
        inspect(hostile_corpus["noise_50mb"].read())


def test_byte_limit_boundary() -> None:
    data = encode(photo(40, 30), "PNG")
    assert inspect(data, max_bytes=len(data)).format == "png"
    with pytest.raises(ImageRejected, match=r"^The file is [\d,]+ bytes; the limit is [\d,]+ bytes\.$"):
        inspect(data, max_bytes=len(data) - 1)
    with pytest.raises(ImageRejected, match=r"^The file is 12\.3 MB; the limit is 10 MB\.$"):
        inspect(bytes(int(12.3 * 1024 * 1024)))


def test_pixel_limit_is_checked_before_pixels_are_decoded(
    hostile_corpus: dict[str, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels must not be decoded for an image over the pixel limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    with pytest.raises(ImageRejected, match="8000×8000 pixels"):
        inspect(hostile_corpus["bomb_png_8000"].read())


def test_pixel_limit_is_configurable(hostile_corpus: dict[str, Case]) -> None:
    data = hostile_corpus["huge_photo"].read()
    assert inspect(data).width == 6000  # 24 MP passes the default 40 MP
    with pytest.raises(
        ImageRejected, match=r"^The image is 6000×4000 pixels \(24 megapixels\); the limit is 10 megapixels\.$"
    ):
        inspect(data, max_pixels=10_000_000)
    with pytest.raises(ImageRejected, match="the limit is 10 megapixels"):
        decode_for_model(data, max_pixels=10_000_000)


def test_pillows_bomb_warning_is_an_error_here_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a caller limit above Pillow's own, Pillow's warning is the guard: it must refuse,
    # and the process-wide warning filters must be left as they were.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    filters_before = list(warnings.filters)
    with pytest.raises(ImageRejected, match=r"^The image declares 0\.0012 megapixels"):
        inspect(encode(photo(40, 30), "PNG"), max_pixels=10**12)  # 1200 px > 1000
    assert warnings.filters == filters_before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Image.open(io.BytesIO(encode(photo(40, 30), "PNG")))  # outside: a warning, not an error
    assert any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)


def test_pillows_limit_holds_even_without_the_warning_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    # catch_warnings is not thread-safe: another thread may restore the filters mid-call. The
    # explicit check must refuse on its own.
    monkeypatch.setattr(opening, "_bomb_guard", contextlib.nullcontext)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(
            ImageRejected, match=r"^The image is 40×30 pixels \(0\.0012 megapixels\); the limit is 0\.001 megapixels\.$"
        ):
            inspect(encode(photo(40, 30), "PNG"), max_pixels=10**12)


def test_truncated_images_are_not_allowed_globally(hostile_corpus: dict[str, Case]) -> None:
    with pytest.raises(ImageRejected):
        inspect(hostile_corpus["truncated_jpeg"].read())
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_data_in_the_middle_of_a_png_is_refused() -> None:
    data = bytearray(encode(photo(120, 90), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        inspect(bytes(data))


# ----------------------------------------------------------------------------- one decode for uploads
@pytest.mark.parametrize("name", CASE_NAMES)
def test_prepare_upload_equals_inspect_plus_thumbnail(name: str, hostile_corpus: dict[str, Case]) -> None:
    data = hostile_corpus[name].read()
    try:
        expected = (inspect(data), make_thumbnail(data))
    except ImageRejected as exc:
        with pytest.raises(ImageRejected) as excinfo:
            prepare_upload(data, max_bytes=DEFAULT_MAX_BYTES, max_pixels=DEFAULT_MAX_PIXELS)
        assert str(excinfo.value) == str(exc)
        return
    assert prepare_upload(data, max_bytes=DEFAULT_MAX_BYTES, max_pixels=DEFAULT_MAX_PIXELS) == expected
