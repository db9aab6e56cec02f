"""python -m benchmarks.cold_start: the first uploads after the worker starts, with and without its warm-up.

A TorchScript module's first two calls of each method cost about ten times a normal one (the
profiling executor: `worker/runtime/warmup.py`). Each Celery pool process warms the bundle up when
it starts unless ``WORKER_WARM_UP=false``. This benchmark measures what users see either way.

It starts the product in services mode, as `benchmarks.realtime` does (gunicorn with uvicorn
workers, a Celery worker, PostgreSQL, Redis, the shipped bundle on the CPU), waits until the worker
is ready and ``--settle`` seconds more, and uploads ``--jobs`` images one after the other
(``POST ...?wait=30``). Then it stops everything and starts again with the other setting: ``--rounds``
times each, alternating which goes first. After the uploads a visitor without an account tries the
home page's demo ``--demos`` times (``GET /`` for the CSRF cookie, ``POST /demo/``). It prints, per
setting and per request (1st, 2nd, ...), the median over the rounds of the end-to-end latency
(this client's clock), of the uploaded job's inference time (its ``started_at`` to
``finished_at``) and of the demo's latency, the first requests' ratio to the later ones, and the
web processes' memory (RSS) at the end. ``--out FILE`` also writes them as Markdown.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import services
from benchmarks.client import DEFAULT_IMAGES, Api, load_images, multipart, parse_time
from benchmarks.realtime.servers import start_product, worker_defaults
from benchmarks.services import Stack, log

SETTINGS = {"warm-up": "true", "no warm-up": "false"}
FIRST = 3  # the uploads shown one by one; the later ones are "steady"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="starts of the product per setting")
    parser.add_argument("--jobs", type=int, default=10, help="uploads after each start, one at a time")
    parser.add_argument("--demos", type=int, default=6, help="demo requests after the uploads, one at a time")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds between the worker's 'ready' and the first upload"
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    services.add_product_arguments(parser, database="cifar_cold_start_bench", broker="redis://127.0.0.1:6379/12")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here (Markdown)")
    parser.add_argument("--note", action="append", default=[], help="a line for the results file (repeatable)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.jobs <= FIRST or args.demos <= FIRST or args.settle < 0:
        parser.error(f"--rounds must be positive, --jobs and --demos above {FIRST}, --settle not negative")
    return worker_defaults(args)


@dataclass
class Start:
    """What one start of the product measured."""

    uploads: list[tuple[float, float]]  # (end-to-end ms, inference ms) per upload
    demos: list[float]  # end-to-end ms per demo request
    web_rss_mb: list[float]  # each web process's RSS at the end


def demo_request(base_url: str, name: str, data: bytes) -> float:
    """A visitor's demo: ``GET /`` for the CSRF cookie, then ``POST /demo/``; the POST's milliseconds."""
    port = int(base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/")
        page = conn.getresponse()
        page.read()
        cookie = next(c.split(";")[0] for c in page.headers.get_all("Set-Cookie") or [] if c.startswith("csrftoken="))
        body, headers = multipart(name, data)
        headers.update({"Cookie": cookie, "Referer": base_url + "/", "X-CSRFToken": cookie.split("=", 1)[1]})
        start = time.perf_counter()
        conn.request("POST", "/demo/", body, headers)
        response = conn.getresponse()
        html = response.read().decode(errors="replace")
        elapsed = (time.perf_counter() - start) * 1e3
    finally:
        conn.close()
    if response.status != 200 or not re.search(r'class="prediction-label"', html):
        raise RuntimeError(f"the demo of {name} answered {response.status}")
    return elapsed


def web_rss_mb(stack: Stack) -> list[float]:
    """The RSS of the gunicorn workers (the web processes) of this stack, in MB."""
    [master] = [proc.pid for name, proc in stack.procs if name == "product-web"]
    out = subprocess.run(["ps", "-o", "rss=", "--ppid", str(master)], capture_output=True, text=True).stdout
    return [int(line) / 1024 for line in out.split()]


def one_start(args: argparse.Namespace, warm_up: str, images: list[tuple[str, bytes]]) -> Start:
    """Start the product with WORKER_WARM_UP=``warm_up``, upload, try the demo, stop it."""
    stack = Stack(Path(tempfile.mkdtemp(prefix="cifar-cold-start-bench-")))
    try:
        args.product_env = [
            *services.pages_over_http(stack.workdir / "static"),
            ("WORKER_WARM_UP", warm_up),
            ("DEMO_RATE", "1000000/min"),
        ]
        base_url, token = start_product(args, stack, Path(args.bundle))
        time.sleep(args.settle)
        api = Api(base_url, token, timeout=60)
        uploads = []
        for name, data in images[: args.jobs]:
            body, headers = multipart(name, data)
            start = time.perf_counter()
            code, job = api.request("POST", "/api/v1/classifications/?wait=30", body, headers)
            e2e = (time.perf_counter() - start) * 1e3
            if code not in (200, 202) or job.get("status") != "done":
                raise RuntimeError(f"upload {name} answered {code}: {job}")
            inference = (parse_time(job["finished_at"]) - parse_time(job["started_at"])) * 1e3
            uploads.append((e2e, inference))
        demos = [demo_request(base_url, *images[i % len(images)]) for i in range(args.demos)]
        return Start(uploads=uploads, demos=demos, web_rss_mb=web_rss_mb(stack))
    finally:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)


def render(meta: list[str], results: dict[str, list[Start]]) -> str:
    med = statistics.median
    series = (
        ("uploads, end-to-end latency (ms)", "upload", lambda start: [e2e for e2e, _ in start.uploads]),
        ("uploads, inference time: started_at to finished_at (ms)", "upload", lambda start: [i for _, i in start.uploads]),
        ("the demo (a visitor, no account), end-to-end latency (ms)", "demo", lambda start: start.demos),
    )  # fmt: skip
    lines = ["# Cold start: the first requests after the product starts", "", *[f"- {m}" for m in meta], ""]
    for label, what, values in series:
        heads = [f"{what} {i + 1}" for i in range(FIRST)] + [f"{what}s {FIRST + 1}+ (steady)", f"{what} 1 / steady"]
        lines += [f"**{label}**, median over the starts", "", "| setting | " + " | ".join(heads) + " |"]
        lines.append("|---|" + "---:|" * len(heads))
        for setting, starts in results.items():
            firsts = [med([values(start)[i] for start in starts]) for i in range(FIRST)]
            steady = med([v for start in starts for v in values(start)[FIRST:]])
            cells = [f"{v:.1f}" for v in firsts] + [f"{steady:.1f}", f"{firsts[0] / steady:.2f}x"]
            lines.append(f"| {setting} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("**web processes' memory (RSS) at the end, MB**, each process, every start")
    lines.append("")
    for setting, starts in results.items():
        lines.append(f"- {setting}: " + "; ".join(", ".join(f"{mb:.0f}" for mb in s.web_rss_mb) for s in starts))
    first = {s: med([start.uploads[0][0] for start in starts]) for s, starts in results.items()}
    lines += [
        "",
        f"First upload end to end: {first['warm-up']:.1f} ms with the warm-up against {first['no warm-up']:.1f} ms "
        f"without ({first['no warm-up'] / first['warm-up']:.2f}x).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (Path(args.bundle) / "manifest.json").exists():
        raise SystemExit(f"{args.bundle} is not a model bundle")
    command = shlex.join(["python", "-m", "benchmarks.cold_start", *(sys.argv[1:] if argv is None else argv)])
    images, images_note = load_images(args.images, args.jobs)
    import torch  # only for the record

    results: dict[str, list[Start]] = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
        for setting in order:
            log(f"round {r + 1}/{args.rounds}: {setting}")
            start = one_start(args, SETTINGS[setting], images)
            log("  uploads " + ", ".join(f"{e2e:.0f}/{inf:.0f}" for e2e, inf in start.uploads) + " ms (end to end /"
                " inference); demos " + ", ".join(f"{ms:.0f}" for ms in start.demos) + " ms")  # fmt: skip
            results[setting].append(start)
    meta = services.run_header(
        command,
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average at the end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"torch {torch.__version__}; bundle {args.bundle}; inputs: {images_note}",
        f"product: gunicorn {args.web_workers} uvicorn workers, Celery prefork x{args.worker_concurrency} "
        f"({args.worker_torch_threads} torch thread, {args.worker_lone_threads} for a lone image), PostgreSQL, Redis; "
        f"{args.settle:g} s between the worker's 'ready' and the first upload; {args.rounds} start(s) per setting",
        notes=args.note,
    )
    return services.publish(render(meta, results), args.out)


if __name__ == "__main__":
    sys.exit(main())
