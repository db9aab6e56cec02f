"""``python -m ml recompress``: further JPEG passes of an image folder, stored losslessly."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.data import load_image_folder
from ml.recompress import jpeg_pass, main, psnr, recompress, recompress_folder


def photo_like(seed: int = 0, size: int = 32) -> np.ndarray:
    """A smooth gradient with edges and a little noise: something JPEG neither keeps exactly nor ruins."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 6, y * 5, (x + y) * 3], axis=-1).astype(np.float64)
    base[8:20, 10:24] = [200, 40, 90]
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def test_a_pass_keeps_the_shape_and_loses_some_detail():
    image = photo_like()
    out = jpeg_pass(image, quality=75, offset=3)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert 20 < psnr(image, out) < 60


def test_a_misaligned_pass_changes_a_jpeg_more_than_an_aligned_one():
    # Re-encoding on the same grid at the same quality is close to idempotent; the offset is
    # what makes a further pass a real dose of compression.
    once = jpeg_pass(photo_like(1), quality=75, offset=0)
    aligned = jpeg_pass(once, quality=75, offset=0)
    misaligned = jpeg_pass(once, quality=75, offset=3)
    assert psnr(once, aligned) > psnr(once, misaligned) + 3


def test_more_passes_lose_more():
    image = photo_like(2)
    assert psnr(image, recompress(image, 75, passes=1, offset=3)) > psnr(
        image, recompress(image, 75, passes=2, offset=3)
    )


def test_the_folder_copy_keeps_classes_order_and_labels(image_folder: Path, tmp_path: Path, ml_cache):
    # the generated folder's images are PNG: the copy is their first compression
    out = tmp_path / "q75"
    summary = recompress_folder(image_folder, out, quality=75, passes=1, workers=1)
    source = load_image_folder(image_folder)
    copy = load_image_folder(out)
    assert summary["images"] == len(source) == len(copy)
    assert copy.classes == source.classes
    np.testing.assert_array_equal(copy.labels, source.labels)
    assert not np.array_equal(copy.images, source.images)
    assert all(p.suffix == ".png" for p in out.rglob("*") if p.is_file())
    expected = np.mean(
        [psnr(a.transpose(1, 2, 0), b.transpose(1, 2, 0)) for a, b in zip(source.images, copy.images, strict=True)]
    )
    assert summary["mean_psnr_db"] == pytest.approx(expected)
    assert not (tmp_path / "q75.partial").exists()


def test_the_copy_holds_exactly_the_recompressed_pixels(image_folder: Path, tmp_path: Path):
    recompress_folder(image_folder, tmp_path / "out", quality=50, passes=2, offset=5, workers=1)
    source = sorted(image_folder.rglob("*.png"))[0]
    with Image.open(source) as im:
        expected = recompress(np.asarray(im.convert("RGB")), 50, passes=2, offset=5)
    written = tmp_path / "out" / source.parent.name / (source.stem + ".png")
    with Image.open(written) as im:
        np.testing.assert_array_equal(np.asarray(im), expected)


def test_refusals(image_folder: Path, tmp_path: Path, capsys):
    with pytest.raises(ValueError, match="multiple of 8"):
        recompress_folder(image_folder, tmp_path / "x", quality=75, offset=8)
    with pytest.raises(ValueError, match="quality"):
        recompress_folder(image_folder, tmp_path / "x", quality=0)
    (tmp_path / "taken").mkdir()
    with pytest.raises(SystemExit) as exc:
        main([str(image_folder), str(tmp_path / "taken"), "--workers", "1"])
    assert exc.value.code == 2 and "exists" in capsys.readouterr().err


def test_the_command_prints_the_summary(image_folder: Path, tmp_path: Path, capsys):
    main([str(image_folder), str(tmp_path / "out"), "--quality", "90", "--workers", "1"])
    out = capsys.readouterr().out
    assert "1 pass(es) of JPEG quality 90" in out and "mean PSNR" in out
