"""python -m benchmarks.realtime: see the package docstring."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import benchmarks.realtime as package
from benchmarks.client import DEFAULT_IMAGES, Api, load_images
from benchmarks.realtime import profile as profiler
from benchmarks.realtime.client import BATCH, Phase, load_average, run_phase, wait_for_maps, warm_up
from benchmarks.realtime.report import DEFAULT_OUT, render, write_atomically
from benchmarks.realtime.servers import start_naive, start_product
from benchmarks.services import ROOT, Stack, log


def setting(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> (NAME, VALUE) for ``--product-env``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not name.strip().replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. WORKER_BATCH_SIZE=32), got {text!r}")
    return name.strip(), value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.realtime", description=package.__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per server and level")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per server and level first")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternate the servers this many times per level (requests split between rounds): "
        "the machine's speed drifts over minutes, and interleaving shares the drift",
    )
    parser.add_argument("--wait", type=float, default=30.0, help="the product's ?wait= seconds")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--bundle", default=str(ROOT / "bundles" / "default"))
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres", help="server URL")
    parser.add_argument("--database", default="cifar_realtime_bench", help="dropped and recreated each run")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--web-workers", type=int, default=2, help="product: gunicorn uvicorn workers")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=2,
        help="product: Celery prefork processes (2, as the compose file's CPU worker: while one runs a batch,"
        " the other collects the next)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="product: WORKER_BATCH_SIZE")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="product: WORKER_BATCH_WAIT_MS")
    parser.add_argument("--naive-workers", type=int, default=2)
    parser.add_argument("--naive-threads", type=int, default=4)
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per process of the naive server")
    parser.add_argument(
        "--worker-torch-threads",
        type=int,
        default=None,
        help="product: WORKER_TORCH_THREADS of its one model process (default: --torch-threads)",
    )
    parser.add_argument(
        "--worker-lone-threads",
        type=int,
        default=None,
        help="product: WORKER_LONE_IMAGE_THREADS, torch threads for a forward pass of one image (default: the"
        " machine's CPUs; 0: off)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (Markdown); '-' for none")
    parser.add_argument("--note", action="append", default=[], help="a line for the results file (repeatable)")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--with-heatmaps", action="store_true", help="also a product+maps phase per level (?explain=true)"
    )
    parser.add_argument(
        "--upload-batch",
        type=int,
        default=0,
        metavar="N",
        help=f"also a {BATCH} phase per level: N images per request to the batch endpoint (POST"
        " /api/v1/classifications/batch/?wait=), as many images in all as the other phases send",
    )
    parser.add_argument(
        "--product-env",
        type=setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the product's web and worker processes (repeatable), e.g."
        " WEB_DB_THREADS=0 to compare a setting against its default in back-to-back runs",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample the product's web and worker processes with py-spy (pip install py-spy) and write their"
        " collapsed stacks and DIR/profile.md (the busiest functions); the sampler's CPU shows in the CPU table",
    )
    args = parser.parse_args(argv)
    if args.profile is not None:
        profiler.py_spy()  # fails now, with what to install, rather than after the database is set up
    if args.worker_torch_threads is None:
        args.worker_torch_threads = args.torch_threads
    if args.worker_lone_threads is None:
        args.worker_lone_threads = os.cpu_count() or 1
    if args.requests < 1 or args.rounds < 1 or any(c < 1 for c in args.concurrency):
        parser.error("--requests, --rounds and --concurrency must be positive")
    if args.upload_batch < 0 or args.upload_batch == 1:
        parser.error("--upload-batch takes 2 or more images per request (0: no batch phase)")

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
        f"torch {torch.__version__}, {args.torch_threads} thread(s) per naive process, "
        f"{args.worker_torch_threads} in the product's worker ({args.worker_lone_threads or 'no change'} for a lone"
        f" image); bundle {bundle}",
        f"inputs: {images_note}; {args.warmup} warm-up + {args.requests} measured requests per server and level, "
        f"in {args.rounds} alternating round(s)",
        f"product: gunicorn {args.web_workers} uvicorn workers, Celery prefork x{args.worker_concurrency}, "
        f"WORKER_BATCH_SIZE={args.batch_size}, WORKER_BATCH_WAIT_MS={args.batch_wait_ms:g}, "
        f"PostgreSQL {args.database}, Redis {args.broker}; POST ?wait={args.wait:g}"
        + "".join(f", {name}={value}" for name, value in args.product_env),
        f"naive: gunicorn {args.naive_workers} workers x {args.naive_threads} threads (gthread), "
        "benchmarks.naive_app (model in the request, one image per forward pass)",
    ]
    start_load = os.getloadavg()[0]
    if start_load > (os.cpu_count() or 1):
        meta.append(
            f"**the machine was busy** (load average {start_load:.1f} on {os.cpu_count()} CPUs at the start): "
            "these numbers show that the command works, not what the product does on a quiet machine"
        )
    if args.profile is not None:
        meta.append(
            f"**profiled** (--profile {args.profile}): the product's web and worker ran under py-spy, whose "
            "sampling slows them; read the profile, not these latencies"
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
        apis["product+maps"] = apis[BATCH] = apis["product"]
        servers = ("naive", "product", "product+maps") if args.with_heatmaps else ("naive", "product")
        if args.upload_batch:
            servers += (BATCH,)
        per_request = {server: args.upload_batch if server == BATCH else 1 for server in servers}
        for clients in args.concurrency:
            rounds: dict[str, list[Phase]] = {server: [] for server in servers}
            for r in range(args.rounds):
                images_now = args.requests // args.rounds + (1 if r < args.requests % args.rounds else 0)
                order = servers if r % 2 == 0 else tuple(reversed(servers))  # no server always goes first
                for server in order:
                    stack.check_alive()
                    size = per_request[server]
                    n = -(-images_now // size)  # requests of `size` images: about as many images as the others
                    if r == 0:
                        warm_up(apis[server], server, images, -(-args.warmup // size), args.wait, clients, size)
                    if server == "product+maps":
                        wait_for_maps(apis[server], list(apis[server].all_jobs()))
                    log(f"{server}: {n} requests from {clients} client(s), round {r + 1}/{args.rounds}")
                    phase = run_phase(
                        apis[server],
                        server,
                        clients,
                        images,
                        n,
                        args.wait,
                        offset=sum(len(p.latencies) + sum(p.errors.values()) for p in rounds[server]) * size,
                        groups={name: proc.pid for name, proc in stack.procs},  # each started its own session
                        per_request=size,
                    )
                    if server == "product+maps":
                        phase.maps_s = wait_for_maps(apis[server], phase.job_ids)
                    rounds[server].append(phase)
            for server in servers:
                phase = Phase.merged(rounds[server])
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
        if args.profile is not None:
            log(f"profile: {profiler.summarise(args.profile, ['product-web', 'worker'])}")
        if args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
