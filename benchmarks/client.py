"""The benchmarks' client side: the HTTP client of the API, the images they send, small statistics.

* `Api`: one keep-alive connection per thread, token-authenticated (``request``, ``upload``,
  ``count``, ``all_jobs``); a POST is never sent twice.
* `load_images`: CIFAR-10 JPEGs from a folder (by default the shared data set beside the
  checkout, `DEFAULT_IMAGES`), else generated PNGs.
* `multipart`: the body and headers of one upload.
* `nearest_rank`, `percentiles`, `parse_time`: nearest-rank percentiles; the API's timestamps as
  epoch seconds.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import uuid
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
# The CIFAR-10 JPEGs in the shared/ folder beside the checkout, wherever the checkout is.
DEFAULT_IMAGES = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg" / "train"


# ----------------------------------------------------------------------------- small statistics
def nearest_rank(values: list[float], p: float) -> float:
    """The ``p``-th percentile of ``values`` by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


def percentiles(values: list[float], unit: str = "ms") -> str:
    """p50 / p90 / p99 / max by nearest rank, in ``unit`` (ms or s)."""
    if not values:
        return "n/a"
    scale = 1000.0 if unit == "ms" else 1.0
    parts = [f"p{p}={nearest_rank(values, p) * scale:.1f}" for p in (50, 90, 99)] + [f"max={max(values) * scale:.1f}"]
    return f"{' '.join(parts)} {unit} (n={len(values)})"


def multipart(name: str, image: bytes) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a multipart/form-data upload of ``image`` as the field ``image``."""
    return multipart_files([(name, image)], field="image")


def multipart_files(files: list[tuple[str, bytes]], field: str) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a multipart/form-data upload of each (name, bytes) under ``field``."""
    boundary = uuid.uuid4().hex
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + image
        + b"\r\n"
        for name, image in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"
    }


def parse_time(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


# ----------------------------------------------------------------------------- HTTP client
class Api:
    """One keep-alive connection per thread to the API, token-authenticated."""

    def __init__(self, base_url: str, token: str, timeout: float = 60.0):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return conn

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, parsed JSON or None). A broken keep-alive connection is reopened once, but a
        POST is never sent twice: if its connection breaks, the error is raised to the caller."""
        headers = {"Authorization": f"Token {self.token}", **(headers or {})}
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(method, self.prefix + path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if method != "GET" or attempt == 2:
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                self.local.conn = None
            try:
                return response.status, json.loads(data) if data else None
            except ValueError:
                return response.status, None
        raise AssertionError("unreachable")

    def upload(self, name: str, image: bytes):
        body, headers = multipart(name, image)
        return self.request("POST", "/api/v1/classifications/", body, headers)

    def count(self, status: str) -> int:
        code, body = self.request("GET", "/api/v1/classifications/?" + urlencode({"status": status, "page_size": 1}))
        if code != 200:
            raise RuntimeError(f"listing {status} jobs answered {code}: {body}")
        return int(body["count"])

    def all_jobs(self) -> dict[str, dict]:
        jobs: dict[str, dict] = {}
        page = 1
        while True:
            code, body = self.request("GET", f"/api/v1/classifications/?page_size=100&page={page}")
            if code != 200:
                raise RuntimeError(f"listing page {page} answered {code}: {body}")
            for item in body["results"]:
                jobs[item["id"]] = item
            if not body.get("next"):
                return jobs
            page += 1


# ----------------------------------------------------------------------------- inputs
def load_images(folder: Path, n: int) -> tuple[list[tuple[str, bytes]], str]:
    """Up to n distinct images, round-robin over the class folders; generated PNGs if no folder."""
    if folder.is_dir():
        classes = sorted(p for p in folder.iterdir() if p.is_dir())
        lists = [sorted(c.glob("*.jpg")) for c in classes]
        chosen: list[Path] = []
        for i in range(max((len(x) for x in lists), default=0)):
            chosen += [x[i] for x in lists if i < len(x)]
            if len(chosen) >= n:
                break
        if chosen:
            images = [(p.name, p.read_bytes()) for p in chosen[:n]]
            return images, f"{len(images)} CIFAR-10 JPEGs from {folder}"
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for i in range(min(n, 2000)):  # repeated beyond 2000; each upload is still its own job
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
        images.append((f"gen-{i}.png", buf.getvalue()))
    return images, f"{len(images)} generated 32x32 PNGs"
