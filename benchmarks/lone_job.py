"""python -m benchmarks.lone_job: a lone job's path through the real worker, without the web.

`benchmarks.realtime` measures what a client sees, and a lone job's time there is shared between
the web server, the worker, PostgreSQL and Redis, on a machine whose speed drifts. This benchmark
leaves the web out so that a change to the worker can be A/B'd against less noise. A client process
(Django, the product's settings) creates jobs one at a time with the upload service
(``services.classification_create``: validate, store, insert, commit, enqueue to the real broker;
no Grad-CAM maps, so that nothing runs after an answer). It waits for each job's final push
(Redis), then reads the job's own timestamps. The worker is the product's Celery worker, started
as the compose file's CPU worker runs (prefork, micro-batching) on a fresh database.

For each job:

* **upload**: the service call in the client, from the bytes to the job on the queue
* **to start**: from then to the job's ``started_at`` (the broker, the pool process, the start
  transaction's SELECT)
* **run**: ``started_at`` to ``finished_at`` (start commit, image read and decode, the forward
  pass)
* **finish + push**: ``finished_at`` to the push reaching the client (the finish transaction, its
  commit, the publish)
* **total**: from the bytes to the answer

``--compare NAME=VALUE`` (repeatable) adds a second worker configuration, the same with those
settings. The two alternate, ``--rounds`` times each, each round on a fresh worker. The report
gives both and the ratio of their medians, so the baseline is measured in the same run. Example
(the short OpenMP spin of worker/celery.py against none)::

    python -m benchmarks.lone_job --jobs 100 --rounds 3 --compare GOMP_SPINCOUNT=0

Needs PostgreSQL and Redis (the defaults are the local ones); the database ``--database`` is
dropped and recreated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.client import DEFAULT_IMAGES, nearest_rank
from benchmarks.services import (
    ROOT,
    Stack,
    add_product_arguments,
    create_token,
    log,
    product_env,
    publish,
    recreate_database,
    run_header,
    wait_worker_ready,
    worker_command,
    worker_settings,
)

PHASES = ("upload", "to start", "run", "finish + push", "total")
USERNAME = "lonejob"
BASELINE = "worker defaults"


def setting(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> (NAME, VALUE) for ``--compare``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not name.strip().replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. GOMP_SPINCOUNT=0), got {text!r}")
    return name.strip(), value


def phases_of(t0: float, t1: float, started: float, finished: float, answered: float) -> dict[str, float]:
    """A job's phases in ms from the client's clock (``t0`` before the upload, ``t1`` after it,
    ``answered`` when the final push arrived) and the job's timestamps (all epoch seconds)."""
    return {
        "upload": (t1 - t0) * 1000,
        "to start": (started - t1) * 1000,
        "run": (finished - started) * 1000,
        "finish + push": (answered - finished) * 1000,
        "total": (answered - t0) * 1000,
    }


@dataclass
class Config:
    name: str
    settings: list[tuple[str, str]] = field(default_factory=list)
    rounds: list[list[dict[str, float]]] = field(default_factory=list)  # per round, per job: its phases
    errors: int = 0

    def values(self, phase: str) -> list[float]:
        return [job[phase] for jobs in self.rounds for job in jobs]

    def median(self, phase: str) -> float:
        values = self.values(phase)
        return statistics.median(values) if values else float("nan")


def render(meta: list[str], configs: list[Config]) -> str:
    """The results in Markdown: the run's facts, each configuration's medians (p90) per phase, the
    per-round medians of the total, and the ratio of each configuration to the first."""
    lines = ["# A lone job through the worker (`python -m benchmarks.lone_job`)", ""]
    lines += [f"- {m}" for m in meta]
    lines += ["", "Median (p90) per job, ms:", ""]
    lines += ["| worker | jobs | errors | " + " | ".join(PHASES) + " |", "|---|---:|---:|" + "---:|" * len(PHASES)]
    for config in configs:
        cells = [f"{config.median(p):.2f} ({nearest_rank(config.values(p), 90):.2f})" for p in PHASES]
        lines.append(f"| {config.name} | {len(config.values('total'))} | {config.errors} | " + " | ".join(cells) + " |")
    lines += ["", "Median total per round, ms (rounds alternate between the configurations):", ""]
    for config in configs:
        per_round = ", ".join(f"{statistics.median(j['total'] for j in jobs):.2f}" for jobs in config.rounds if jobs)
        lines.append(f"- {config.name}: {per_round}")
    if len(configs) > 1:
        base = configs[0]
        lines += ["", f"Ratio of the medians to {base.name} (below 1: faster):", ""]
        for config in configs[1:]:
            ratios = ", ".join(f"{p} {config.median(p) / base.median(p):.2f}x" for p in PHASES if base.median(p))
            lines.append(f"- {config.name}: {ratios}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the client process
def client(jobs: int, warmup: int, images_dir: Path, timeout: float) -> int:
    """Inside the product's environment: create ``warmup + jobs`` jobs one at a time, wait for each
    answer, print one JSON line per measured job (its phases, or {"error": ...})."""
    import django

    django.setup()
    import redis
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile

    from benchmarks.client import load_images
    from classifier import push, services
    from classifier.models import Classification

    owner = get_user_model().objects.get(username=USERNAME)
    pubsub = redis.Redis.from_url(push.push_url()).pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(push.CHANNEL_PREFIX + "*")
    while pubsub.get_message(timeout=1.0) is not None:  # the subscription is confirmed
        pass
    images, _ = load_images(images_dir, jobs + warmup)
    for i in range(jobs + warmup):
        name, data = images[i % len(images)]
        t0 = time.time()
        job = services.classification_create(
            owner=owner, upload=SimpleUploadedFile(name, data, "image/jpeg"), heatmaps=False
        )
        t1 = time.time()
        channel, answered = push.CHANNEL_PREFIX + str(job.id), None
        while answered is None and time.time() < t1 + timeout:
            message = pubsub.get_message(timeout=1.0)
            if message and message["channel"].decode() == channel and message["data"].decode() in ("done", "failed"):
                answered = time.time()
        row = Classification.objects.get(id=job.id)
        if i < warmup:
            continue
        if answered is None or row.status != Classification.Status.DONE:
            print(json.dumps({"error": f"job {job.id}: {row.status} {row.error}".strip()}), flush=True)
            continue
        timings = phases_of(t0, t1, row.started_at.timestamp(), row.finished_at.timestamp(), answered)
        print(json.dumps(timings), flush=True)
    return 0


# ----------------------------------------------------------------------------- the run
def run_round(config: Config, args: argparse.Namespace, env: dict[str, str]) -> None:
    """One round of ``config``: a fresh worker, ``args.jobs`` measured jobs, the worker stopped."""
    env = {**env, **dict(config.settings)}
    workdir = Path(tempfile.mkdtemp(prefix="cifar-lonejob-bench-"))
    stack = Stack(workdir)
    try:
        stack.start("worker", worker_command(args.worker_concurrency, f"lonejob-{os.getpid()}"), env)
        wait_worker_ready(stack, 180)
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.lone_job", "--client", "--jobs", str(args.jobs),
             "--warmup", str(args.warmup), "--images", str(args.images), "--timeout", str(args.timeout)],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        jobs = []
        for line in out.stdout.splitlines():
            record = json.loads(line)
            if "error" in record:
                config.errors += 1
                log(record["error"])
            else:
                jobs.append(record)
        config.rounds.append(jobs)
        total = statistics.median(j["total"] for j in jobs) if jobs else float("nan")
        log(f"{config.name}: {len(jobs)} jobs, median total {total:.2f} ms")
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lone_job", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100, help="measured jobs per round and configuration")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured jobs first, each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--compare", type=setting, action="append", default=[], metavar="NAME=VALUE",
        help="a second worker configuration: the defaults with these settings (repeatable)",
    )  # fmt: skip
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer")
    add_product_arguments(parser, database="cifar_lonejob_bench", broker="redis://127.0.0.1:6379/14")
    parser.add_argument("--batch-size", type=int, default=16, help="WORKER_BATCH_SIZE")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="WORKER_BATCH_WAIT_MS")
    parser.add_argument("--worker-torch-threads", type=int, default=1, help="WORKER_TORCH_THREADS")
    parser.add_argument(
        "--worker-lone-threads", type=int, default=os.cpu_count() or 1,
        help="WORKER_LONE_IMAGE_THREADS (default: the machine's CPUs, as benchmarks.realtime)",
    )  # fmt: skip
    parser.add_argument("--out", default="-", help="results file (Markdown); '-' (the default) for none")
    parser.add_argument("--note", action="append", default=[], help="a line for the results file (repeatable)")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)  # the client process
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.rounds < 1 or args.warmup < 0 or args.timeout <= 0:
        parser.error("--jobs, --rounds and --timeout must be positive, --warmup not negative")
    if args.client:
        return client(args.jobs, args.warmup, args.images, args.timeout)
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").exists():
        parser.error(f"{bundle} is not a model bundle")

    database_url = recreate_database(args.postgres, args.database)
    media = Path(tempfile.mkdtemp(prefix="cifar-lonejob-media-"))
    env = product_env(
        database_url=database_url,
        broker=args.broker,
        bundle=bundle,
        media=media,
        **worker_settings(args),
    )
    log(f"database {args.database}: migrating")
    create_token(env, USERNAME)
    configs = [Config(BASELINE)]
    if args.compare:
        configs.append(Config(", ".join(f"{n}={v}" for n, v in args.compare), list(args.compare)))
    command = shlex.join(["python", "-m", "benchmarks.lone_job", *(sys.argv[1:] if argv is None else argv)])
    meta = run_header(
        command,
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average at the start {os.getloadavg()[0]:.2f}",
        f"worker: Celery prefork x{args.worker_concurrency}, WORKER_BATCH_SIZE={args.batch_size}, "
        f"WORKER_BATCH_WAIT_MS={args.batch_wait_ms:g}, WORKER_TORCH_THREADS={args.worker_torch_threads}, "
        f"WORKER_LONE_IMAGE_THREADS={args.worker_lone_threads}; bundle {bundle}; PostgreSQL {args.database}, "
        f"Redis {args.broker}",
        f"jobs: {args.warmup} warm-up + {args.jobs} measured per round and configuration, {args.rounds} round(s), "
        f"images from {args.images}",
        notes=args.note,
    )
    try:
        for _ in range(args.rounds):
            for config in configs:
                run_round(config, args, env)
    finally:
        shutil.rmtree(media, ignore_errors=True)
    meta.append(f"load average at the end {os.getloadavg()[0]:.2f}")
    return publish(render(meta, configs), None if args.out == "-" else Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
