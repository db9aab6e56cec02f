"""Load without loss: N uploads through the real API with a real worker; count every job.

    python -m benchmarks.load --uploads 10000 --concurrency 8
    python -m benchmarks.load --uploads 1000 --concurrency 8 --web-workers 2 --worker-concurrency 2
    python -m benchmarks.load --base-url http://127.0.0.1:8000 --token <key> --uploads 500

Unless ``--base-url`` is given, it starts everything itself: a fresh PostgreSQL database
(``--database``, default ``cifar_load_bench``: dropped, created and migrated, so neither tests nor
development data are touched), gunicorn serving ``webapp.wsgi`` under the production settings
(plain HTTP on 127.0.0.1, upload throttle lifted), and a Celery worker on a Redis database of its
own (``--broker``, default ``redis://127.0.0.1:6379/13``) with the model bundle ``--bundle``
(default ``bundles/default``; when that does not exist a random-init ResNet-20 is exported with
ml.export into a temporary folder: same architecture and compute as the trained one, and the
output says so). It creates a user and token, uploads ``--uploads`` small images (CIFAR-10 JPEGs
from ``--images`` when that folder exists, by default ``../shared/datasets/cifar10-jpeg/train``
beside the checkout, else generated PNGs) from ``--concurrency`` threads,
then polls the API until every accepted job is done or failed, or ``--deadline`` seconds after
the start have passed. Every process it started is stopped at the end, by its own process group.

It prints: submitted, accepted (202), rejected by status and error code, transport errors,
completed, failed, still queued/running, lost (accepted - completed - failed - still pending:
an accepted upload with no row, must be 0), rows nobody was told about, upload throughput, end-to-end
throughput, and latency percentiles for submitting (client side) and for completion (the job's
queued_at to finished_at, server side). The final counts come from listing every job through the
API, matched by id against the ids the 202 responses gave.

This is a benchmark: it prints numbers and asserts nothing; its exit status is 1 only when jobs
were lost.

Measured on the 2-CPU dev machine shared with a CPU training job (load average 5-11), defaults
(gunicorn 2 x 4 threads, Celery prefork x 2, 8 client threads), random-init ResNet-20 bundle:
10,000 uploads, 10,000 accepted, 10,000 done, 0 failed, 0 lost; 30.5 uploads/s, 23.4 jobs/s end
to end; submit p50 243 ms, p99 530 ms; 7 min 43 s wall for the whole command.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from benchmarks import services
from benchmarks.client import DEFAULT_IMAGES, Api, load_images, parse_time, percentiles
from benchmarks.services import (
    Stack,
    create_token,
    free_port,
    log,
    product_env,
    recreate_database,
    wait_http,
    wait_worker_ready,
    worker_command,
)

FINISHED = ("done", "failed")
PENDING = ("queued", "running")


# ----------------------------------------------------------------------------- services
def start_stack(args: argparse.Namespace, stack: Stack) -> tuple[str, str]:
    """Database, bundle, gunicorn, worker, user + token. Returns (base_url, token)."""
    database_url = recreate_database(args.postgres, args.database)
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").exists():
        from benchmarks.runtime import random_bundle  # imports torch: only when no bundle is there

        bundle = random_bundle(stack.workdir, "resnet20")  # the shipped architecture and cost
        stack.notes.append(
            f"{args.bundle} does not exist: used a random-init ResNet-20 exported with ml.export to {bundle}"
        )
    media = stack.workdir / "media"
    media.mkdir()
    env = product_env(
        database_url=database_url,
        broker=args.broker,
        bundle=bundle,
        media=media,
        WORKER_TORCH_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    log(f"database {args.database}: migrating")
    token = create_token(env, "loadbench")

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    gunicorn = [
        sys.executable, "-m", "gunicorn", "webapp.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", str(args.web_workers), "--threads", str(args.web_threads), "--worker-class", "gthread",
        "--timeout", "120", "--keep-alive", "30", "--log-level", "warning",
    ]  # fmt: skip
    stack.start("gunicorn", gunicorn, env)
    stack.start("worker", worker_command(args.worker_concurrency, f"loadbench-{port}"), env)
    wait_http(f"{base_url}/api/v1/schema/", 120, stack)
    wait_worker_ready(stack, 180)
    log(f"gunicorn on {base_url} ({args.web_workers} workers x {args.web_threads} threads), "
        f"celery worker (prefork x {args.worker_concurrency}), logs in {stack.workdir}")  # fmt: skip
    return base_url, token


# ----------------------------------------------------------------------------- the run
@dataclass
class Submission:
    name: str
    started: float  # time.time()
    seconds: float
    status: int | None  # None: no HTTP response (connection error)
    job_id: str | None = None
    error_code: str = ""


def submit_all(api: Api, images: list[tuple[str, bytes]], n: int, concurrency: int, deadline: float):
    results: list[Submission] = []
    lock = threading.Lock()
    next_index = iter(range(n))

    def run() -> None:
        while time.monotonic() < deadline:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            name, data = images[i % len(images)]
            started, t0 = time.time(), time.perf_counter()
            try:
                status, body = api.upload(name, data)
            except Exception as exc:  # no HTTP answer: counted, never retried (it may have been stored)
                sub = Submission(name, started, time.perf_counter() - t0, None, error_code=type(exc).__name__)
            else:
                sub = Submission(name, started, time.perf_counter() - t0, status)
                if status == 202 and body:
                    sub.job_id = body["id"]
                elif body and isinstance(body.get("error"), dict):
                    sub.error_code = body["error"].get("code", "")
            with lock:
                results.append(sub)
                done = len(results)
            if done % max(1, n // 10) == 0:
                log(f"submitted {done}/{n}")

    threads = [threading.Thread(target=run, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic() + 120))
    return results


def poll_until_settled(api: Api, accepted: int, deadline: float, stack: Stack | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    last_log = 0.0
    while True:
        if stack is not None:
            stack.check_alive()
        counts = {s: api.count(s) for s in ("queued", "running", "done", "failed")}
        finished = counts["done"] + counts["failed"]
        if time.monotonic() - last_log > 10:
            log(f"jobs: {counts}")
            last_log = time.monotonic()
        if finished >= accepted and counts["queued"] + counts["running"] == 0:
            return counts
        if time.monotonic() > deadline:
            log("deadline reached while jobs were still pending")
            return counts
        time.sleep(2.0)


def report(
    args: argparse.Namespace,
    subs: list[Submission],
    jobs: dict[str, dict],
    upload_wall: float,
    t_start: float,
    notes: list[str],
    images_note: str,
) -> int:
    accepted_ids = {s.job_id for s in subs if s.job_id}
    statuses = Counter(jobs[i]["status"] if i in jobs else "missing" for i in accepted_ids)
    completed, failed = statuses["done"], statuses["failed"]
    pending = statuses["queued"] + statuses["running"]
    lost = len(accepted_ids) - completed - failed - pending
    unknown = len(set(jobs) - accepted_ids)
    rejected = Counter(f"{s.status} {s.error_code}".strip() for s in subs if s.status is not None and s.status != 202)
    transport = Counter(s.error_code for s in subs if s.status is None)

    finished_at = [parse_time(jobs[i]["finished_at"]) for i in accepted_ids if i in jobs and jobs[i]["finished_at"]]
    completion = [
        parse_time(jobs[i]["finished_at"]) - parse_time(jobs[i]["queued_at"])
        for i in accepted_ids
        if i in jobs and jobs[i]["status"] in FINISHED and jobs[i]["finished_at"]
    ]
    e2e_wall = (max(finished_at) - t_start) if finished_at else float("nan")
    errors = Counter(jobs[i]["error"][:80] for i in accepted_ids if i in jobs and jobs[i]["status"] == "failed")

    load = os.getloadavg()
    print("=" * 72)
    print(f"benchmarks.load  {datetime.now().isoformat(timespec='seconds')}")
    print(f"command: python -m benchmarks.load {' '.join(sys.argv[1:])}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(f"inputs: {images_note}")
    for note in notes:
        print(f"note: {note}")
    print("-" * 72)
    print(f"submitted            {len(subs)}")
    print(f"accepted (202)       {len(accepted_ids)}")
    print(f"rejected (4xx/5xx)   {sum(rejected.values())}  {dict(rejected) if rejected else ''}")
    print(f"transport errors     {sum(transport.values())}  {dict(transport) if transport else ''}")
    print(f"completed (done)     {completed}")
    print(f"failed               {failed}  {dict(errors) if errors else ''}")
    print(f"still queued/running {statuses['queued']}/{statuses['running']}")
    print(f"lost                 {lost}   (accepted - completed - failed - still pending)")
    print(f"rows not accepted    {unknown}   (jobs in the database that no 202 reported)")
    print("-" * 72)
    print(f"upload throughput    {len(subs) / upload_wall:.1f} req/s  ({len(subs)} requests in {upload_wall:.1f} s)")
    print(
        f"end-to-end           {(completed + failed) / e2e_wall:.1f} jobs/s  "
        f"({completed + failed} jobs finished {e2e_wall:.1f} s after the first upload)"
    )
    print(f"submit latency       {percentiles([s.seconds for s in subs])}")
    print(f"completion latency   {percentiles(completion, 's')}  (queued_at -> finished_at)")
    print("=" * 72)
    return 1 if lost else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8, help="client threads uploading at once")
    parser.add_argument("--deadline", type=float, default=3600.0, help="seconds from the start; then it stops")
    parser.add_argument("--base-url", help="use a running server instead of starting one (needs --token)")
    parser.add_argument("--token", help="API token for --base-url")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="CIFAR-10 JPEG tree (default: %(default)s)")
    services.add_product_arguments(parser, database="cifar_load_bench", broker="redis://127.0.0.1:6379/13")
    parser.add_argument("--web-threads", type=int, default=4)
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary folder with the logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.uploads < 1 or args.concurrency < 1:
        parser.error("--uploads and --concurrency must be positive")
    if args.base_url and not args.token:
        parser.error("--base-url needs --token")

    t0 = time.monotonic()
    deadline = t0 + args.deadline
    images, images_note = load_images(args.images, args.uploads)
    stack: Stack | None = None
    workdir = Path(tempfile.mkdtemp(prefix="cifar-load-bench-"))
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if args.base_url:
            base_url, token = args.base_url.rstrip("/"), args.token
        else:
            stack = Stack(workdir)
            base_url, token = start_stack(args, stack)
        api = Api(base_url, token)
        log(f"uploading {args.uploads} images with {args.concurrency} threads")
        t_start, t_up = time.time(), time.perf_counter()
        subs = submit_all(api, images, args.uploads, args.concurrency, deadline)
        upload_wall = time.perf_counter() - t_up
        accepted = sum(1 for s in subs if s.job_id)
        log(f"uploads finished in {upload_wall:.1f} s: {accepted} accepted; waiting for the jobs")
        poll_until_settled(api, accepted, deadline, stack)
        jobs = api.all_jobs()
        notes = list(stack.notes) if stack else [f"server {base_url} started elsewhere"]
        if stack:
            notes.append(
                f"gunicorn {args.web_workers}x{args.web_threads} threads, celery prefork x{args.worker_concurrency}, "
                f"PostgreSQL db {args.database}, broker {args.broker}, production settings, throttle lifted"
            )
        return report(args, subs, jobs, upload_wall, t_start, notes, images_note)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if stack is not None:
            log("stopping gunicorn and the worker")
            stack.stop()
        if args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
