"""Real processes for end-to-end tests: a Celery worker, and private Redis / PostgreSQL servers.

Every process is started in its own session (process group) and stopped by its pid, so a test
never signals anything it did not start. The private servers listen on free ports in a tmp
folder, so tests can stop and restart them without touching the machine's shared services.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from glob import glob
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def redis_ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except Exception:
        return False


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Signal the process group we started (start_new_session=True), escalate to SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


class Worker:
    """``celery -A worker worker`` as a subprocess, logging to a file."""

    def __init__(
        self, env: dict[str, str], log: Path, queue: str, *, pool: str = "prefork", extra: list[str] | None = None
    ):
        self.env = env
        self.log = log
        self.queue = queue
        self.pool = pool
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, wait_ready: bool = True) -> Worker:
        self.starts += 1
        cmd = [
            CELERY, "-A", "worker", "worker", f"--pool={self.pool}", "--concurrency=1", "-Q", self.queue,
            "-n", f"{self.queue}-{self.starts}@%h", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat", *self.extra,
        ]  # fmt: skip
        with open(self.log, "a") as out:
            out.write(f"\n===== start {self.starts}: {' '.join(cmd)}\n")
            out.flush()
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        if wait_ready:
            marker = f"{self.queue}-{self.starts}@"
            wait_until(lambda: self._ready(marker), 90, "the Celery worker to be ready")
        return self

    def _ready(self, marker: str) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
        text = self.log.read_text(errors="replace")
        return any(marker in line and "ready." in line for line in text.splitlines())

    def kill9(self) -> None:
        """SIGKILL the whole worker (parent and pool processes): no warm shutdown, no ack."""
        assert self.proc is not None
        stop_group(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, signal.SIGTERM, timeout=20)

    def tail(self, n: int = 60) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])


class PrivateRedis:
    """A redis-server on a free port with no persistence, in ``workdir``."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> str | None:
        return None if shutil.which("redis-server") else "redis-server is not installed"

    def start(self) -> PrivateRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=open(self.workdir / "redis.log", "a"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_until(lambda: redis_ping(self.url), 20, "private redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, signal.SIGTERM)
            self.proc = None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free port, run as the ``postgres``
    OS user when this process is root (initdb refuses to run as root)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.datadir = workdir / "pgdata"
        self.port = free_port()
        bins = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
        self.bindir = Path(bins[-1]).parent if bins else None

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def available(self) -> str | None:
        """None when a private cluster can be made here, else the reason it cannot."""
        if self.bindir is None:
            return "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) are not installed"
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                return "running as root and runuser is missing (initdb refuses root)"
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no 'postgres' OS user to run initdb as"
        return None

    def _run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def init(self) -> PrivatePostgres:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # the postgres user must be able to reach its folder
            for parent in self.workdir.parents:
                if parent == Path(tempfile.gettempdir()) or parent == Path("/"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o711)
            shutil.chown(self.workdir, "postgres")
            os.chmod(self.workdir, 0o700)
        self._run(["initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
        return self

    def start(self) -> PrivatePostgres:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.workdir} -c fsync=off"
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.datadir),
                "-l",
                str(self.workdir / "pg.log"),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        wait_until(lambda: port_open(self.port), 30, "private PostgreSQL")
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.datadir.exists():
            try:
                self._run(["pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"])
            except subprocess.CalledProcessError:
                pass  # not running

    def restart(self) -> None:
        self.stop("fast")
        self.start()
