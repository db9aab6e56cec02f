"""The client side: one request, a phase of concurrent clients, warm-up, waiting for heatmaps."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from benchmarks.client import Api, multipart, multipart_files, nearest_rank
from benchmarks.realtime import cpu


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------- the client
@dataclass
class Phase:
    server: str
    clients: int
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    job_ids: list[str] = field(default_factory=list)
    wall: float = 0.0
    load_start: str = ""
    load_end: str = ""
    maps_s: float | None = None  # product+maps: how long after the phase the last map was drawn
    rounds: list[Phase] = field(default_factory=list)  # the rounds it pools (benchmarks.realtime --rounds)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by component (benchmarks.realtime.cpu)
    per_request: int = 1  # images per request (the product's batch upload: --upload-batch)

    @property
    def ok(self) -> int:
        """Requests answered in full."""
        return len(self.latencies)

    @property
    def images(self) -> int:
        """Images answered in full."""
        return self.ok * self.per_request

    @property
    def throughput(self) -> float:
        """Images answered per second."""
        return self.images / self.wall if self.wall else 0.0

    def p(self, q: float) -> float:
        return nearest_rank(self.latencies, q) * 1000 if self.latencies else float("nan")

    @classmethod
    def merged(cls, rounds: list[Phase]) -> Phase:
        """One phase from the rounds of a server at a level (their requests pooled; walls summed)."""
        first = rounds[0]
        phase = cls(
            first.server,
            first.clients,
            load_start=first.load_start,
            load_end=rounds[-1].load_end,
            per_request=first.per_request,
        )
        for r in rounds:
            phase.latencies += r.latencies
            phase.errors += r.errors
            phase.job_ids += r.job_ids
            phase.wall += r.wall
            for component, seconds in r.cpu.items():
                phase.cpu[component] = phase.cpu.get(component, 0.0) + seconds
        maps = [r.maps_s for r in rounds if r.maps_s is not None]
        phase.maps_s = max(maps) if maps else None
        phase.rounds = rounds
        return phase


BATCH = "product-batch"  # the product's batch upload (POST .../batch/?wait=), several images per request


def one_request(api: Api, server: str, files: list[tuple[str, bytes]], wait: float) -> tuple[bool, str, list[str]]:
    """(ok, error, job ids) of one request, end to end: one image, or several for ``BATCH``."""
    path = "/api/v1/classifications/"
    if server == BATCH:
        body, headers = multipart_files(files, field="images")
        path += f"batch/?wait={wait:g}"
    else:
        body, headers = multipart(*files[0])
        if server == "product":
            path += f"?wait={wait:g}"
        elif server == "product+maps":
            path += f"?wait={wait:g}&explain=true"
    try:
        status, data = api.request("POST", path, body, headers)
    except Exception as exc:
        return False, f"transport {type(exc).__name__}", []
    if server == BATCH:
        results = data.get("results") if isinstance(data, dict) else None
        jobs = [r.get("classification") or {} for r in results or []]
        job_ids = [j["id"] for j in jobs if j.get("id")]
        if status != 202 or len(jobs) != len(files):
            return False, f"HTTP {status}", job_ids
        if any(j.get("status") != "done" or not j.get("predictions") for j in jobs):
            return False, "not all done", job_ids
        return True, "", job_ids
    job_id = data.get("id") if isinstance(data, dict) else None
    job_ids = [job_id] if job_id else []
    expected = 202 if server.startswith("product") else 200
    if status != expected:
        return False, f"HTTP {status}", job_ids
    if not isinstance(data, dict) or data.get("status") != "done" or not data.get("predictions"):
        return False, f"not done: {data.get('status') if isinstance(data, dict) else data!r}", job_ids
    return True, "", job_ids


def run_phase(
    api: Api,
    server: str,
    clients: int,
    images: list[tuple[str, bytes]],
    n: int,
    wait: float,
    offset: int,
    groups: dict[str, int] | None = None,
    per_request: int = 1,
) -> Phase:
    """``n`` requests of ``per_request`` images each from ``clients`` threads; ``groups`` (name ->
    process group): also the CPU each component used meanwhile (benchmarks.realtime.cpu)."""
    phase = Phase(server, clients, load_start=load_average(), per_request=per_request)
    lock = threading.Lock()
    counter = iter(range(n))

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            first = offset + i * per_request
            files = [images[(first + k) % len(images)] for k in range(per_request)]
            t0 = time.perf_counter()
            ok, error, job_ids = one_request(api, server, files, wait)
            elapsed = time.perf_counter() - t0
            with lock:
                phase.job_ids += job_ids
                if ok:
                    phase.latencies.append(elapsed)
                else:
                    phase.errors[error] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    before = cpu.snapshot(groups or {})
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall = time.perf_counter() - t0
    phase.cpu = cpu.spent(before, cpu.snapshot(groups or {}))
    phase.load_end = load_average()
    return phase


def warm_up(
    api: Api, server: str, images: list[tuple[str, bytes]], n: int, wait: float, clients: int, per_request: int = 1
) -> None:
    if n > 0:
        run_phase(api, server, clients, images, n, wait, offset=len(images) // 2, per_request=per_request)


def wait_for_maps(api: Api, ids: list[str], timeout: float = 600.0) -> float:
    """Seconds until no job among ``ids`` has heatmaps pending (the worker is idle again)."""
    t0 = time.perf_counter()
    wanted = set(ids)
    while time.perf_counter() - t0 < timeout:
        jobs = api.all_jobs()
        pending = [
            i for i in wanted if ((jobs.get(i) or {}).get("explanation") or {}).get("heatmaps_status") == "pending"
        ]
        if not pending:
            break
        time.sleep(0.5)
    return time.perf_counter() - t0
