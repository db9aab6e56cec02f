"""ml.download against a local HTTP server serving generated official-format archives."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ml.data import load_source
from ml.download import DownloadError, download, main
from tests.ml.fakedata import md5_of


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(make_cifar) -> Iterator[tuple[str, Path]]:
    """(base URL, archive path) of a generated cifar-10-python.tar.gz served on 127.0.0.1."""
    archive = make_cifar("cifar10", archive=True)
    handler = functools.partial(QuietHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", archive
    finally:
        server.shutdown()
        server.server_close()


def test_downloads_verifies_and_loads(served, tmp_path: Path) -> None:
    base, archive = served
    md5 = md5_of(archive)
    path = download("cifar10", tmp_path / "data", url=f"{base}/{archive.name}", expected_md5=md5, progress=False)
    assert path == tmp_path / "data" / "cifar-10-python.tar.gz"
    assert path.read_bytes() == archive.read_bytes()
    assert not list((tmp_path / "data").glob("*.part"))
    data = load_source(path, expected_md5=md5)
    assert len(data) == 40 and len(data.classes) == 10


def test_wrong_checksum_is_refused_and_deleted(served, tmp_path: Path) -> None:
    base, archive = served
    with pytest.raises(DownloadError, match="does not match") as err:
        download("cifar10", tmp_path / "data", url=f"{base}/{archive.name}", expected_md5="0" * 32, progress=False)
    assert md5_of(archive) in str(err.value)
    assert list((tmp_path / "data").iterdir()) == []


def test_official_checksum_is_the_default(served, tmp_path: Path) -> None:
    base, archive = served
    with pytest.raises(DownloadError, match="c58f30108f718f92721af3b95e74349a"):
        download("cifar10", tmp_path, url=f"{base}/{archive.name}", progress=False)
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()


def test_present_valid_file_is_not_downloaded_again(served, tmp_path: Path, capsys) -> None:
    _base, archive = served
    (tmp_path / archive.name).write_bytes(archive.read_bytes())
    # An unreachable URL proves no request is made.
    path = download("cifar10", tmp_path, url="http://127.0.0.1:9/nothing", expected_md5=md5_of(archive), progress=False)
    assert path.read_bytes() == archive.read_bytes()
    assert "skipping" in capsys.readouterr().out


def test_present_corrupt_file_is_replaced(served, tmp_path: Path) -> None:
    base, archive = served
    (tmp_path / archive.name).write_bytes(b"truncated")
    download("cifar10", tmp_path, url=f"{base}/{archive.name}", expected_md5=md5_of(archive), progress=False)
    assert md5_of(tmp_path / archive.name) == md5_of(archive)


def test_http_error_is_clear(served, tmp_path: Path) -> None:
    base, _archive = served
    with pytest.raises(DownloadError, match="could not download .*404"):
        download("cifar10", tmp_path / "data", url=f"{base}/missing.tar.gz", progress=False)
    assert list((tmp_path / "data").iterdir()) == []


def test_cli(served, tmp_path: Path) -> None:
    base, archive = served
    main(
        [
            "cifar10",
            "--dest",
            str(tmp_path),
            "--url",
            f"{base}/{archive.name}",
            "--md5",
            md5_of(archive),
            "--no-progress",
        ]
    )
    data = load_source(tmp_path / archive.name, expected_md5=md5_of(archive))
    assert np.bincount(data.labels).tolist() == [4] * 10
    with pytest.raises(SystemExit, match="does not match"):
        main(
            [
                "cifar10",
                "--dest",
                str(tmp_path / "b"),
                "--url",
                f"{base}/{archive.name}",
                "--md5",
                "1" * 32,
                "--no-progress",
            ]
        )


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown data set"):
        download("mnist")
