"""Write a copy of an image folder whose images went through more JPEG compression: the dose side
of the experiment that measures what the JPEG copy of CIFAR-10 costs the fast recipe.

    python -m ml recompress ../shared/datasets/cifar10-jpeg/train runs/data/q75x1 --quality 75 --passes 1
    python -m ml speedrun seeds=0 epochs=5 data=runs/data/q75x1 name=jpeg-b-q75x1

The official CIFAR-10 pixels are not on these machines, only their JPEG copy (quality about 75,
4:2:0 chroma), so the cost of that one compression cannot be measured against the originals.
What can be measured is the cost of each further compression of the same kind: train the same
recipe and seed on the copy as it is, with one more pass and with two, and read the accuracy per
pass (README, "The fast net").

A further pass at the same quality on the same block grid changes almost nothing (JPEG re-encoding
is close to idempotent there), so each pass first moves the image by ``offset`` pixels (3 by
default: odd, so the 2x2 chroma grid moves too, and not a multiple of 8, so the 8x8 DCT blocks
straddle the old ones) inside a canvas padded by reflection to a multiple of 16, compresses it with
Pillow (baseline, 4:2:0, the given quality), decodes it and cuts the image back out. Pass k uses
offset k x ``offset`` modulo 8, so two passes are both misaligned with the first compression.
The result is stored as PNG (lossless), so the folder holds exactly the pixels of that compression;
train and validation images come from the same folder, so both sides of the split carry it, as
the product's own uploads and the independent test set carry the original one.

It prints the number of images and the mean PSNR (dB) of the result against the source pixels.
"""

from __future__ import annotations

import argparse
import io
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ml.data.folders import _folder_files


def jpeg_pass(pixels: np.ndarray, quality: int, offset: int) -> np.ndarray:
    """One JPEG compression of an H x W x 3 uint8 image whose block grid starts ``offset`` pixels
    before the image's (reflection padding around it), decoded and cut back to H x W."""
    h, w, _ = pixels.shape
    grid = 16  # 8x8 luma blocks of 2x2-subsampled chroma: the MCU of 4:2:0 is 16x16
    pad_h = (-(h + offset)) % grid
    pad_w = (-(w + offset)) % grid
    canvas = np.pad(pixels, ((offset, pad_h), (offset, pad_w), (0, 0)), mode="reflect")
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False)
    buffer.seek(0)
    with Image.open(buffer) as im:
        decoded = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return decoded[offset : offset + h, offset : offset + w]


def recompress(pixels: np.ndarray, quality: int, passes: int, offset: int) -> np.ndarray:
    for k in range(1, passes + 1):
        pixels = jpeg_pass(pixels, quality, (k * offset) % 8)
    return pixels


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _one(job: tuple[Path, Path, int, int, int]) -> float:
    src, dst, quality, passes, offset = job
    with Image.open(src) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.uint8)
    out = recompress(pixels, quality, passes, offset)
    Image.fromarray(out).save(dst, format="PNG")
    return psnr(pixels, out)


def recompress_folder(
    src: Path, out: Path, quality: int, passes: int = 1, offset: int = 3, workers: int = 0
) -> dict[str, float]:
    """Write ``out/<class>/<stem>.png`` for every image of ``src/<class>/``; returns the count and
    the mean PSNR against the source pixels. ``out`` must not exist yet (no half-written mixes)."""
    if passes < 1 or not 1 <= quality <= 95:
        raise ValueError("need passes >= 1 and 1 <= quality <= 95")
    if offset % 8 == 0:
        raise ValueError("an offset that is a multiple of 8 keeps the block grid: the pass would change little")
    classes, files = _folder_files(src)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another folder")
    tmp = out.with_name(out.name + ".partial")
    for name in classes:
        (tmp / name).mkdir(parents=True, exist_ok=True)
    jobs = [(path, tmp / classes[label] / (path.stem + ".png"), quality, passes, offset) for path, label in files]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        values = list(pool.map(_one, jobs, chunksize=500))
    tmp.rename(out)
    finite = [v for v in values if math.isfinite(v)]
    return {"images": len(values), "mean_psnr_db": float(np.mean(finite)) if finite else math.inf}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ml recompress", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="image folder: src/<class>/*.jpg|png")
    parser.add_argument("out", type=Path, help="new folder for the result (PNG files)")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality of each pass (default 75)")
    parser.add_argument("--passes", type=int, default=1, help="compressions in a row (default 1)")
    parser.add_argument("--offset", type=int, default=3, help="grid offset of pass k: k x offset mod 8 (default 3)")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU core)")
    args = parser.parse_args(argv)
    try:
        summary = recompress_folder(args.src, args.out, args.quality, args.passes, args.offset, args.workers)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        parser.exit(2, f"python -m ml recompress: {exc}\n")
    print(
        f"{args.out}: {summary['images']} images, {args.passes} pass(es) of JPEG quality {args.quality}"
        f" (offset {args.offset}), mean PSNR {summary['mean_psnr_db']:.2f} dB against {args.src}"
    )


if __name__ == "__main__":
    main()
