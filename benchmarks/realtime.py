"""Real time under load: the product against a naive in-request server, in the same run.

    python -m benchmarks.realtime                                   # 1 and 32 clients, 300 requests each
    python -m benchmarks.realtime --requests 40 --warmup 5          # a quick check
    python -m benchmarks.realtime --concurrency 1 8 32 --out benchmarks/results/realtime.md

It starts both servers itself and sends the same images (CIFAR-10 JPEGs from ``--images``, else
generated PNGs) from the same HTTP client (`benchmarks.load.Api`, one keep-alive connection per
client thread) to each, at each ``--concurrency`` level:

* **product** (services mode, production settings): gunicorn with uvicorn (ASGI) workers,
  PostgreSQL (database ``--database``, dropped and recreated), Redis (``--broker``) for the
  queue and the push, one Celery worker with micro-batching (``--batch-size``,
  ``--batch-wait-ms``). A request is ``POST /api/v1/classifications/?wait=30``; it counts when
  the answer is 202 with the job ``done`` (the answer with the members, agreement, "not sure" and
  OOD; Grad-CAM maps are the API's ``?explain=true``).
* **product+maps** (``--with-heatmaps``): the same server, ``?wait=30&explain=true`` as the web
  form asks: the answer still comes first, the maps are drawn after it by the same worker. The
  next phase starts only when every map is drawn.
* **naive** baseline: `benchmarks.naive_app`, the model inside the request, one image per forward
  pass, under gunicorn ``--naive-workers`` x ``--naive-threads`` (gthread). A request counts when
  it answers 200 with predictions.

For each level and server it prints (and writes to ``--out``, default
benchmarks/results/realtime.md, rewritten after every phase so an interrupted run leaves what
it measured) p50/p95/p99 end-to-end latency, throughput, errors, the ratios product/naive, and
for the product where the time went (queue wait, batch run, web + push; mean batch size) from
the jobs' own timestamps. At the end every accepted job is looked up: lost = accepted - done.
The bundle is ``--bundle`` (default bundles/default). Both servers run torch with one thread per
process (``--torch-threads``). Everything it started is stopped at the end, by process group.

This is a benchmark: it prints numbers and asserts nothing; its exit status is 1 only when
product jobs were lost. The numbers mean nothing without the machine's load, so the load average
is recorded at the start and end of each phase.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from benchmarks.load import (
    DEFAULT_IMAGES,
    ROOT,
    Api,
    Stack,
    free_port,
    load_images,
    log,
    parse_time,
    recreate_database,
    wait_http,
    wait_worker_ready,
)

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "realtime.md"
TARGET_LATENCY_RATIO = 3.0  # one client: product p50 <= 3x the naive server's
TARGET_THROUGHPUT_RATIO = 1.5  # 32 clients: product throughput >= 1.5x the naive server's


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def multipart(name: str, image: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + image + f"\r\n--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"
    }


# ----------------------------------------------------------------------------- servers
def start_product(args: argparse.Namespace, stack: Stack, bundle: Path) -> tuple[str, str]:
    database_url = recreate_database(args.postgres, args.database)
    media = stack.workdir / "media"
    media.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": args.broker,
        "MODEL_BUNDLE": str(bundle),
        "MODEL_DEVICE": "cpu",
        "MEDIA_ROOT": str(media),
        "API_UPLOAD_RATE": "1000000/min",
        "API_UPLOAD_IP_RATE": "1000000/min",
        "WORKER_TORCH_THREADS": str(args.torch_threads),
        "OMP_NUM_THREADS": str(args.torch_threads),
        "WORKER_BATCH_SIZE": str(args.batch_size),
        "WORKER_BATCH_WAIT_MS": str(args.batch_wait_ms),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    log(f"product: database {args.database}, migrating")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    code = (
        "from django.contrib.auth import get_user_model; from rest_framework.authtoken.models import Token; "
        "u = get_user_model().objects.create_user('realtimebench', password=None); "
        "print(Token.objects.create(user=u).key)"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    token = out.stdout.strip().splitlines()[-1]
    port = free_port()
    stack.start(
        "product-web",
        [sys.executable, "-m", "gunicorn", "webapp.asgi:application", "--worker-class", "uvicorn_worker.UvicornWorker",
         "--bind", f"127.0.0.1:{port}", "--workers", str(args.web_workers), "--timeout", "120",
         "--keep-alive", "30", "--graceful-timeout", "5", "--log-level", "warning"],
        env,
    )  # fmt: skip
    stack.start(
        "worker",
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool=prefork",
         f"--concurrency={args.worker_concurrency}", "-n", f"realtime-{port}@%h", "--loglevel=INFO",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    wait_http(f"{base_url}/api/v1/schema/", 120, stack)
    wait_worker_ready(stack, 180)
    return base_url, token


def start_naive(args: argparse.Namespace, stack: Stack, bundle: Path) -> str:
    env = {
        **os.environ,
        "MODEL_BUNDLE": str(bundle),
        "WORKER_TORCH_THREADS": str(args.torch_threads),
        "OMP_NUM_THREADS": str(args.torch_threads),
        "PYTHONPATH": str(ROOT),
    }
    port = free_port()
    stack.start(
        "naive-web",
        [sys.executable, "-m", "gunicorn", "benchmarks.naive_app:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(args.naive_workers), "--threads", str(args.naive_threads), "--worker-class", "gthread",
         "--timeout", "120", "--keep-alive", "30", "--graceful-timeout", "5", "--log-level", "warning"],
        env,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    wait_http(f"{base_url}/", 120, stack)  # answers 404 JSON: up
    return base_url


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

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    def p(self, q: float) -> float:
        return nearest_rank(self.latencies, q) * 1000 if self.latencies else float("nan")


def one_request(api: Api, server: str, name: str, image: bytes, wait: float) -> tuple[bool, str, str | None]:
    """(ok, error, job id) of one classification, end to end."""
    body, headers = multipart(name, image)
    path = "/api/v1/classifications/"
    if server == "product":
        path += f"?wait={wait:g}"
    elif server == "product+maps":
        path += f"?wait={wait:g}&explain=true"
    try:
        status, data = api.request("POST", path, body, headers)
    except Exception as exc:
        return False, f"transport {type(exc).__name__}", None
    job_id = data.get("id") if isinstance(data, dict) else None
    expected = 202 if server.startswith("product") else 200
    if status != expected:
        return False, f"HTTP {status}", job_id
    if not isinstance(data, dict) or data.get("status") != "done" or not data.get("predictions"):
        return False, f"not done: {data.get('status') if isinstance(data, dict) else data!r}", job_id
    return True, "", job_id


def run_phase(
    api: Api, server: str, clients: int, images: list[tuple[str, bytes]], n: int, wait: float, offset: int
) -> Phase:
    phase = Phase(server, clients, load_start=load_average())
    lock = threading.Lock()
    counter = iter(range(n))

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            name, image = images[(offset + i) % len(images)]
            t0 = time.perf_counter()
            ok, error, job_id = one_request(api, server, name, image, wait)
            elapsed = time.perf_counter() - t0
            with lock:
                if job_id:
                    phase.job_ids.append(job_id)
                if ok:
                    phase.latencies.append(elapsed)
                else:
                    phase.errors[error] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall = time.perf_counter() - t0
    phase.load_end = load_average()
    return phase


def warm_up(api: Api, server: str, images: list[tuple[str, bytes]], n: int, wait: float, clients: int) -> None:
    if n > 0:
        run_phase(api, server, clients, images, n, wait, offset=len(images) // 2)


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


# ----------------------------------------------------------------------------- where the product's time went
def breakdown(phase: Phase, jobs: dict[str, dict]) -> str:
    rows = [jobs[i] for i in phase.job_ids if i in jobs and jobs[i]["status"] == "done"]
    if not rows:
        return "n/a"
    queue = [parse_time(r["started_at"]) - parse_time(r["queued_at"]) for r in rows]
    run = [parse_time(r["finished_at"]) - parse_time(r["started_at"]) for r in rows]
    e2e = median(phase.latencies) if phase.latencies else float("nan")
    server = median(q + r for q, r in zip(queue, run, strict=True))
    batch_sizes = Counter(r["started_at"] for r in rows)
    mean_batch = len(rows) / len(batch_sizes)
    return (
        f"median queue wait {median(queue) * 1000:.1f} ms, batch run {median(run) * 1000:.1f} ms, "
        f"web + upload + push {max(e2e - server, 0) * 1000:.1f} ms (client p50 minus queued->finished); "
        f"mean batch {mean_batch:.1f} jobs ({len(batch_sizes)} batches)"
    )


# ----------------------------------------------------------------------------- report
def render(args, meta: list[str], phases: list[Phase], jobs: dict[str, dict] | None, lost: int | None, done: bool):
    lines = ["# Real time under load: product vs naive in-request server", ""]
    if not done:
        lines += ["**Incomplete run** (interrupted or still running): the phases below are what it measured.", ""]
    lines += [f"- {m}" for m in meta] + [""]
    lines += [
        "| clients | server | ok | errors | p50 ms | p95 ms | p99 ms | throughput /s | load avg (start → end) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for ph in phases:
        errors = sum(ph.errors.values())
        detail = f" ({', '.join(f'{k}: {v}' for k, v in ph.errors.most_common(3))})" if errors else ""
        lines.append(
            f"| {ph.clients} | {ph.server} | {ph.ok} | {errors}{detail} | {ph.p(50):.1f} | {ph.p(95):.1f} | "
            f"{ph.p(99):.1f} | {ph.throughput:.1f} | {ph.load_start} → {ph.load_end} |"
        )
    lines += ["", "## Ratios (product / naive)", ""]
    by = {(p.server, p.clients): p for p in phases}
    for clients, server in ((c, s) for c in args.concurrency for s in ("product", "product+maps")):
        prod, naive = by.get((server, clients)), by.get(("naive", clients))
        if not (prod and naive and prod.ok and naive.ok):
            continue
        lat, thr = prod.p(50) / naive.p(50), prod.throughput / naive.throughput
        notes = []
        if clients == 1:
            notes.append(
                f"target p50 ratio ≤ {TARGET_LATENCY_RATIO:g}: {'met' if lat <= TARGET_LATENCY_RATIO else 'missed'}"
            )
        if clients == 32:
            verdict = "met" if thr >= TARGET_THROUGHPUT_RATIO else "missed"
            notes.append(f"target throughput ratio ≥ {TARGET_THROUGHPUT_RATIO:g}: {verdict}")
        lines.append(
            f"- {clients} client(s), {server}: p50 {lat:.2f}x, p95 {prod.p(95) / naive.p(95):.2f}x, "
            f"throughput {thr:.2f}x" + (f" ({'; '.join(notes)})" if notes else "")
        )
    if jobs is not None:
        lines += ["", "## Where the product's time went (from the jobs' timestamps)", ""]
        for ph in phases:
            if ph.server.startswith("product"):
                lines.append(f"- {ph.clients} client(s), {ph.server}: {breakdown(ph, jobs)}")
                if ph.maps_s is not None:
                    lines.append(
                        f"  (the maps of the last answers were all drawn {ph.maps_s:.1f} s after the phase ended)"
                    )
    if lost is not None:
        lines += ["", f"**Lost product jobs: {lost}** (accepted - done, checked against the API after the run)."]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per server and level")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per server and level first")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--wait", type=float, default=30.0, help="the product's ?wait= seconds")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--bundle", default=str(ROOT / "bundles" / "default"))
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres", help="server URL")
    parser.add_argument("--database", default="cifar_realtime_bench", help="dropped and recreated each run")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--web-workers", type=int, default=2, help="product: gunicorn uvicorn workers")
    parser.add_argument("--worker-concurrency", type=int, default=1, help="product: Celery prefork processes")
    parser.add_argument("--batch-size", type=int, default=16, help="product: WORKER_BATCH_SIZE")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="product: WORKER_BATCH_WAIT_MS")
    parser.add_argument("--naive-workers", type=int, default=2)
    parser.add_argument("--naive-threads", type=int, default=4)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (Markdown); '-' for none")
    parser.add_argument("--note", action="append", default=[], help="a line for the results file (repeatable)")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--with-heatmaps", action="store_true", help="also a product+maps phase per level (?explain=true)"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or any(c < 1 for c in args.concurrency):
        parser.error("--requests and --concurrency must be positive")

    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").exists():
        parser.error(f"{bundle} is not a model bundle")
    images, images_note = load_images(args.images, max(args.requests, 500))
    import torch  # only for the record

    command = shlex.join(["python", "-m", "benchmarks.realtime", *(sys.argv[1:] if argv is None else argv)])
    meta = [
        f"command: `{command.strip()}`",
        f"date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average at the start {load_average()}",
        f"torch {torch.__version__}, {args.torch_threads} thread(s) per process; bundle {bundle}",
        f"inputs: {images_note}; {args.warmup} warm-up + {args.requests} measured requests per server and level",
        f"product: gunicorn {args.web_workers} uvicorn workers, Celery prefork x{args.worker_concurrency}, "
        f"WORKER_BATCH_SIZE={args.batch_size}, WORKER_BATCH_WAIT_MS={args.batch_wait_ms:g}, "
        f"PostgreSQL {args.database}, Redis {args.broker}; POST ?wait={args.wait:g}",
        f"naive: gunicorn {args.naive_workers} workers x {args.naive_threads} threads (gthread), "
        "benchmarks.naive_app (model in the request, one image per forward pass)",
    ]
    start_load = os.getloadavg()[0]
    if start_load > (os.cpu_count() or 1):
        meta.append(
            f"**the machine was busy** (load average {start_load:.1f} on {os.cpu_count()} CPUs at the start): "
            "these numbers show that the command works, not what the product does on a quiet machine"
        )
    meta += [f"note: {n}" for n in args.note]
    out = None if str(args.out) == "-" else args.out
    workdir = Path(tempfile.mkdtemp(prefix="cifar-realtime-bench-"))
    stack = Stack(workdir)
    phases: list[Phase] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        product_url, token = start_product(args, stack, bundle)
        naive_url = start_naive(args, stack, bundle)
        log(f"product on {product_url}, naive on {naive_url}; logs in {workdir}")
        apis = {"product": Api(product_url, token, timeout=args.wait + 30), "naive": Api(naive_url, "-", timeout=60)}
        apis["product+maps"] = apis["product"]
        servers = ("naive", "product", "product+maps") if args.with_heatmaps else ("naive", "product")
        for clients in args.concurrency:
            for server in servers:
                stack.check_alive()
                warm_up(apis[server], server, images, args.warmup, args.wait, clients)
                if server == "product+maps":
                    wait_for_maps(apis[server], list(apis[server].all_jobs()))
                log(f"{server}: {args.requests} requests from {clients} client(s)")
                phase = run_phase(apis[server], server, clients, images, args.requests, args.wait, offset=0)
                if server == "product+maps":
                    phase.maps_s = wait_for_maps(apis[server], phase.job_ids)
                phases.append(phase)
                log(
                    f"{server} x{clients}: ok {phase.ok}, errors {sum(phase.errors.values())}, "
                    f"p50 {phase.p(50):.1f} ms, {phase.throughput:.1f}/s"
                )
                if out:
                    write_atomically(out, render(args, meta, phases, None, None, done=False))
        jobs = apis["product"].all_jobs()
        accepted = {i for ph in phases if ph.server.startswith("product") for i in ph.job_ids}
        lost = sum(1 for i in accepted if jobs.get(i, {}).get("status") != "done")
        meta.append(f"load average at the end {load_average()}")
        text = render(args, meta, phases, jobs, lost, done=True)
        print(text)
        if out:
            write_atomically(out, text)
            log(f"results written to {out}")
        return 1 if lost else 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        log("stopping the servers and the worker")
        stack.stop()
        if args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
