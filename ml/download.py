"""Fetch the official CIFAR python-version archives, md5-checked.

    python -m ml download cifar10 --dest data/
    python -m ml download cifar100 --dest data/ --url https://mirror.example/cifar-100-python.tar.gz

Streams to ``<dest>/<archive>.part``, checks the md5 (the official one unless ``--md5`` is given),
then renames to ``<dest>/cifar-10-python.tar.gz`` (or ``cifar-100-python.tar.gz``). A file that is
already there with the right md5 is kept; a wrong one is deleted, never kept. Training reads the
archive in place (``data=data/cifar-10-python.tar.gz`` or ``data=cifar10``); no extraction needed.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from ml.data import CIFAR, md5_file

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    pass


def download(
    name: str,
    dest: str | Path = "data",
    *,
    url: str | None = None,
    expected_md5: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download CIFAR archive ``name`` ("cifar10" or "cifar100") into ``dest``; returns its path."""
    if name not in CIFAR:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(CIFAR)}")
    spec = CIFAR[name]
    url = url or spec.url
    expected = (expected_md5 or spec.md5).lower()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / spec.archive
    if target.is_file():
        actual = md5_file(target)
        if actual == expected:
            print(f"{target} already present, md5 {actual} ok; skipping")
            return target
        print(f"{target} exists but its md5 is {actual}, not {expected}; downloading again")
        target.unlink()

    part = target.with_name(target.name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=spec.archive, leave=False)
            while block := response.read(CHUNK):
                out.write(block)
                digest.update(block)
                if bar is not None:
                    bar.update(len(block))
            if bar is not None:
                bar.close()
    except (urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {url}: {exc}. Without internet, copy {spec.archive} into {dest}/ "
            "by hand, or pass --url for a reachable mirror."
        ) from exc

    actual = digest.hexdigest()
    if actual != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"refused {url}: md5 {actual} does not match the expected {expected}; the partial file was deleted. "
            "The download is corrupt or the mirror serves a different file."
        )
    os.replace(part, target)
    print(f"{target}: md5 {actual} ok")
    return target


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ml download", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="+", choices=sorted(CIFAR), metavar="{cifar10,cifar100}")
    parser.add_argument("--dest", default="data", help="folder for the archives (default: data/)")
    parser.add_argument("--url", help="download from this URL instead of the official one (one data set only)")
    parser.add_argument("--md5", help="expected md5 instead of the official one")
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if (args.url or args.md5) and len(args.names) > 1:
        parser.error("--url and --md5 apply to one data set; name only one")
    try:
        for name in args.names:
            download(
                name,
                args.dest,
                url=args.url,
                expected_md5=args.md5,
                timeout=args.timeout,
                progress=not args.no_progress,
            )
    except (DownloadError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
