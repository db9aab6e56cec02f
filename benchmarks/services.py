"""The benchmarks' server side: the processes a run starts and stops, its database, waiting for
them, and the environment and API token of the product (services mode, production settings).

* `Stack`: each process in its own process group, logged to ``<workdir>/<name>.log``; ``stop``
  ends every group (SIGTERM, then SIGKILL after 20 s); ``check_alive`` raises with a log tail.
* `recreate_database`, `wait_http`, `wait_worker_ready`, `free_port`, `log`.
* `add_product_arguments`, `product_env`, `worker_settings`, `worker_command` and `create_token`: what `benchmarks.load` and `benchmarks.realtime` both start
  the product with (throttles lifted, plain HTTP on the loopback), and its user's token.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- small helpers
def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_header(command: str, *lines: str, notes: list[str] = ()) -> list[str]:
    """A results file's list of facts: the command as typed, the date, ``lines``, then the notes."""
    from datetime import UTC, datetime

    date = datetime.now(UTC).isoformat(timespec="seconds")
    return [f"command: `{command.strip()}`", f"date: {date}", *lines, *[f"note: {n}" for n in notes]]


def publish(text: str, out: Path | None) -> int:
    """Print a benchmark's results and, when ``out`` is given, write them there too; 0 (an exit status)."""
    print(text)
    if out:
        out.write_text(text)
        log(f"results written to {out}")
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- processes
@dataclass
class Stack:
    """The database, web server and worker this run started (nothing when --base-url is given)."""

    workdir: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stop_signals: dict[str, int] = field(default_factory=dict)

    def start(
        self, name: str, cmd: list[str], env: dict[str, str], *, stop_signal: int = signal.SIGTERM
    ) -> subprocess.Popen:
        """Start ``cmd`` in its own session (log in ``<workdir>/<name>.log``); `stop` sends its
        process group ``stop_signal`` (SIGINT for a command under a profiler that writes on Ctrl-C)."""
        out = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc))
        self.stop_signals[name] = stop_signal
        return proc

    def stop(self) -> None:
        """Signal each process group we started (SIGTERM unless `start` was told otherwise),
        SIGKILL what is left after 20 s."""
        for name, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, self.stop_signals.get(name, signal.SIGTERM))
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for name, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop on SIGTERM; SIGKILL")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}; log tail:\n{tail}")


def recreate_database(server_url: str, name: str) -> str:
    import psycopg2

    conn = psycopg2.connect(server_url.rsplit("/", 1)[0] + "/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def wait_http(url: str, timeout: float, stack: Stack) -> None:
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
            conn.request("GET", parts.path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def wait_worker_ready(stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        if "ready." in (stack.workdir / "worker.log").read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the Celery worker was not ready within {timeout:.0f} s")


# ----------------------------------------------------------------------------- the product
def add_product_arguments(parser, *, database: str, broker: str) -> None:
    """The options that say where and how a benchmark starts the product: the bundle, the PostgreSQL
    server and the database (dropped and recreated each run), the Redis broker, the processes."""
    parser.add_argument("--bundle", default=str(ROOT / "bundles" / "default"))
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres", help="server URL")
    parser.add_argument("--database", default=database, help="dropped and recreated each run")
    parser.add_argument("--broker", default=broker)
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="Celery prefork processes")


def product_env(*, database_url: str, broker: str, bundle: Path, media: Path, **settings: str) -> dict[str, str]:
    """The environment of the product's web and worker processes: production settings, plain HTTP
    on 127.0.0.1, the upload throttles lifted (they would otherwise be what is measured), the
    model on the CPU; ``settings`` add to it or override it (e.g. WORKER_TORCH_THREADS)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",  # plain HTTP on the loopback; no proxy in front
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker,
        "MODEL_BUNDLE": str(bundle),
        "MODEL_DEVICE": "cpu",
        "MEDIA_ROOT": str(media),
        "API_UPLOAD_RATE": "1000000/min",
        "API_UPLOAD_IP_RATE": "1000000/min",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **settings,
    }


def worker_settings(args) -> dict[str, str]:
    """The micro-batching worker's settings from a benchmark's options (``worker_torch_threads``,
    ``worker_lone_threads``, ``batch_size``, ``batch_wait_ms``), for `product_env`."""
    return {
        "WORKER_TORCH_THREADS": str(args.worker_torch_threads),
        "OMP_NUM_THREADS": str(args.worker_torch_threads),
        "WORKER_LONE_IMAGE_THREADS": str(args.worker_lone_threads or ""),
        "WORKER_BATCH_SIZE": str(args.batch_size),
        "WORKER_BATCH_WAIT_MS": str(args.batch_wait_ms),
    }


def worker_command(concurrency: int, name: str) -> list[str]:
    """The product's Celery worker as the compose file's CPU worker runs it (prefork), named ``name``."""
    return [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool=prefork",
            f"--concurrency={concurrency}", "-n", f"{name}@%h", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip


def pages_over_http(static_root: Path) -> list[tuple[str, str]]:
    """For a benchmark that loads the product's pages: fill ``static_root`` (the production settings
    serve static files from STATIC_ROOT with WhiteNoise) and return the settings to start the
    product with: STATIC_ROOT, and session and CSRF cookies that plain HTTP on the loopback keeps."""
    env = product_env(
        database_url="sqlite:///:memory:",
        broker="",
        bundle=ROOT,
        media=static_root.parent / "media",
        STATIC_ROOT=str(static_root),
    )
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    return [("STATIC_ROOT", str(static_root)), ("SESSION_COOKIE_SECURE", "false"), ("CSRF_COOKIE_SECURE", "false")]


def create_token(env: dict[str, str], username: str) -> str:
    """Migrate the product's database, create ``username`` and return its API token."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    code = (
        "from django.contrib.auth import get_user_model; from rest_framework.authtoken.models import Token; "
        f"u = get_user_model().objects.create_user({username!r}, password=None); "
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
    return out.stdout.strip().splitlines()[-1]  # the shell may print a banner first
