"""python -m benchmarks.cold_start: the first uploads after the worker starts, with and without its warm-up.

A TorchScript module's first two calls of each method cost about ten times a normal one (the
profiling executor: `worker/runtime/warmup.py`). Each Celery pool process warms the bundle up when
it starts unless ``WORKER_WARM_UP=false``. This benchmark measures what users see either way.

It starts the product in services mode, as `benchmarks.realtime` does (gunicorn with uvicorn
workers, a Celery worker, PostgreSQL, Redis, the shipped bundle on the CPU), waits until the worker
is ready and ``--settle`` seconds more, and uploads ``--jobs`` images one after the other
(``POST ...?wait=30``). Then it stops everything and starts again with the other setting: ``--rounds``
times each, alternating which goes first. It prints, per setting and per upload (1st, 2nd, ...),
the median over the rounds of the end-to-end latency (this client's clock) and of the job's
inference time (its ``started_at`` to ``finished_at``), and the first uploads' ratio to the
later ones. ``--out FILE`` also writes them as Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
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
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds between the worker's 'ready' and the first upload"
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    services.add_product_arguments(parser, database="cifar_cold_start_bench", broker="redis://127.0.0.1:6379/12")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here (Markdown)")
    parser.add_argument("--note", action="append", default=[], help="a line for the results file (repeatable)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.jobs <= FIRST or args.settle < 0:
        parser.error(f"--rounds must be positive, --jobs above {FIRST}, --settle not negative")
    return worker_defaults(args)


def one_start(args: argparse.Namespace, warm_up: str, images: list[tuple[str, bytes]]) -> list[tuple[float, float]]:
    """Start the product with WORKER_WARM_UP=``warm_up``; (end-to-end ms, inference ms) per upload."""
    args.product_env = [("WORKER_WARM_UP", warm_up)]
    stack = Stack(Path(tempfile.mkdtemp(prefix="cifar-cold-start-bench-")))
    try:
        base_url, token = start_product(args, stack, Path(args.bundle))
        time.sleep(args.settle)
        api = Api(base_url, token, timeout=60)
        timings = []
        for name, data in images[: args.jobs]:
            body, headers = multipart(name, data)
            start = time.perf_counter()
            code, job = api.request("POST", "/api/v1/classifications/?wait=30", body, headers)
            e2e = (time.perf_counter() - start) * 1e3
            if code not in (200, 202) or job.get("status") != "done":
                raise RuntimeError(f"upload {name} answered {code}: {job}")
            inference = (parse_time(job["finished_at"]) - parse_time(job["started_at"])) * 1e3
            timings.append((e2e, inference))
        return timings
    finally:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)


def render(meta: list[str], results: dict[str, list[list[tuple[float, float]]]]) -> str:
    def med(values):
        return statistics.median(values)

    lines = ["# Cold start: the first uploads after the worker starts", "", *[f"- {m}" for m in meta], ""]
    for column, label in ((0, "end-to-end latency (ms)"), (1, "inference time, started_at to finished_at (ms)")):
        heads = [f"upload {i + 1}" for i in range(FIRST)] + [f"uploads {FIRST + 1}+ (steady)", "upload 1 / steady"]
        lines += [f"**{label}**, median over the starts", "", "| setting | " + " | ".join(heads) + " |"]
        lines.append("|---|" + "---:|" * len(heads))
        for setting, starts in results.items():
            firsts = [med([start[i][column] for start in starts]) for i in range(FIRST)]
            steady = med([t[column] for start in starts for t in start[FIRST:]])
            cells = [f"{v:.1f}" for v in firsts] + [f"{steady:.1f}", f"{firsts[0] / steady:.2f}x"]
            lines.append(f"| {setting} | " + " | ".join(cells) + " |")
        lines.append("")
    first = {s: med([start[0][0] for start in starts]) for s, starts in results.items()}
    lines.append(
        f"First upload end to end: {first['warm-up']:.1f} ms with the warm-up against {first['no warm-up']:.1f} ms "
        f"without ({first['no warm-up'] / first['warm-up']:.2f}x)."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (Path(args.bundle) / "manifest.json").exists():
        raise SystemExit(f"{args.bundle} is not a model bundle")
    command = shlex.join(["python", "-m", "benchmarks.cold_start", *(sys.argv[1:] if argv is None else argv)])
    images, images_note = load_images(args.images, args.jobs)
    import torch  # only for the record

    results: dict[str, list[list[tuple[float, float]]]] = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
        for setting in order:
            log(f"round {r + 1}/{args.rounds}: {setting}")
            timings = one_start(args, SETTINGS[setting], images)
            log("  " + ", ".join(f"{e2e:.0f}/{inf:.0f}" for e2e, inf in timings) + " ms (end to end / inference)")
            results[setting].append(timings)
    meta = [
        f"command: `{command.strip()}`",
        f"date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average at the end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"torch {torch.__version__}; bundle {args.bundle}; inputs: {images_note}",
        f"product: gunicorn {args.web_workers} uvicorn workers, Celery prefork x{args.worker_concurrency} "
        f"({args.worker_torch_threads} torch thread, {args.worker_lone_threads} for a lone image), PostgreSQL, Redis; "
        f"{args.settle:g} s between the worker's 'ready' and the first upload; {args.rounds} start(s) per setting",
        *[f"note: {n}" for n in args.note],
    ]
    text = render(meta, results)
    print(text)
    if args.out:
        args.out.write_text(text)
        log(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
