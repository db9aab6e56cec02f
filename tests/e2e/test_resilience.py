"""No lost uploads (issue 5, part 1), against real processes on private services.

Each test drives a real stack through HTTP: gunicorn (the web app), a Celery worker, Celery beat
(running the requeue_stuck sweeper every second), a private redis-server and a private
PostgreSQL cluster, all on free ports in tmp folders, so stopping and restarting them never
touches the machine's shared services. The model is the real tiny TorchScript bundle on the CPU.

Deadlines are shortened for the tests (the system check keeps their order): soft/hard task time
limits 20/24 s, a job is "stuck" after 26 s. ``WORKER_TEST_DELAY_SECONDS`` (a test-only setting)
makes the worker pause after marking a job running, so a test can kill it "during a task".

  (a) kill -9 the worker during a task -> the job completes after a restart, exactly one result
  (b) Redis down while uploading -> 202s, and every job completes once Redis is back
  (c) PostgreSQL restarted under a running worker -> the job in flight and later jobs complete
  (d) a job that kills its worker every time ends failed, with its reason, after 3 attempts
  (e) kill -9 the worker in the middle of a micro-batch -> every job of the batch completes
      after a restart, each exactly once

The web app runs as in production: gunicorn with uvicorn (ASGI) workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import make_image_bytes
from tests.e2e.procs import ROOT, PrivatePostgres, PrivateRedis, Worker, free_port, port_open, stop_group, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

STUCK_AFTER = 26
MAX_ATTEMPTS = 3


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    pg: PrivatePostgres
    redis: PrivateRedis
    base_url: str
    token: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    # ---- processes
    def worker(self, delay: float = 0.0) -> Worker:
        env = {**self.env, "WORKER_TEST_DELAY_SECONDS": str(delay)}
        return Worker(env, self.root / "worker.log", "celery").start()

    # ---- HTTP
    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def upload(self, name: str = "cat.jpg") -> dict:
        response = requests.post(
            f"{self.base_url}/api/v1/classifications/",
            files={"image": (name, make_image_bytes("jpg", size=(48, 40)))},
            headers=self.headers,
            timeout=30,
        )
        assert response.status_code == 202, response.text
        return response.json()

    def get(self, job_id: str) -> dict:
        response = requests.get(f"{self.base_url}/api/v1/classifications/{job_id}/", headers=self.headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for(self, job_id: str, predicate, timeout: float, what: str, worker: Worker | None = None) -> dict:
        try:
            return wait_until(lambda: (lambda b: b if predicate(b) else None)(self.get(job_id)), timeout, what, 0.3)
        except TimeoutError as exc:
            log = worker.tail() if worker else ""
            raise AssertionError(f"{exc}; job is {self.get(job_id)}\n--- worker log ---\n{log}") from None

    def wait_finished(self, job_id: str, timeout: float = 120, worker: Worker | None = None) -> dict:
        return self.wait_for(job_id, lambda b: b["status"] in ("done", "failed"), timeout, f"job {job_id}", worker)


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def stack(tiny_bundle) -> Stack:
    reason = PrivateRedis.available()
    # The cluster lives in a folder of its own under /tmp: pytest's tmp folders are private to
    # root, and PostgreSQL runs as the postgres OS user.
    workdir = Path(tempfile.mkdtemp(prefix="cifar-e2e-"))
    pg = PrivatePostgres(workdir / "pg")
    reason = reason or pg.available()
    if reason:
        pytest.skip(f"cannot start private services: {reason}")
    redis = PrivateRedis(workdir / "redis")
    procs: list[subprocess.Popen] = []
    try:
        pg.init().start()
        redis.start()
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "webapp.settings.test",
            "DATABASE_URL": pg.url,
            "CELERY_BROKER_URL": redis.url,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "MEDIA_ROOT": str(workdir / "media"),
            "MODEL_BUNDLE": str(tiny_bundle),
            "MODEL_DEVICE": "cpu",
            "WORKER_TORCH_THREADS": "1",
            "CLASSIFY_SOFT_TIME_LIMIT": "20",
            "CLASSIFY_TIME_LIMIT": "24",
            "CLASSIFICATION_STUCK_AFTER_SECONDS": str(STUCK_AFTER),
            "CLASSIFICATION_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "REQUEUE_STUCK_EVERY_SECONDS": "1",
            "API_UPLOAD_RATE": "10000/min",
            "WORKER_BATCH_SIZE": "8",
            "WORKER_BATCH_WAIT_MS": "5",
        }
        _manage(env, "migrate", "--noinput")
        token = _manage(
            env,
            "shell",
            "-c",
            "from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token; "
            "u = User.objects.create_user('e2e', password='e2e-pass-123'); print(Token.objects.create(user=u).key)",
        ).split()[-1]  # the key is the last word printed (Django's shell may print a banner first)
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        web_log = open(workdir / "web.log", "a")
        procs.append(
            subprocess.Popen(
                [gunicorn, "webapp.asgi:application", "--worker-class", "uvicorn_worker.UvicornWorker",
                 "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                cwd=ROOT, env=env, stdout=web_log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        )  # fmt: skip
        celery = str(Path(sys.executable).with_name("celery"))
        procs.append(
            subprocess.Popen(
                [celery, "-A", "worker", "beat", "--loglevel=INFO", "-s", str(workdir / "beat-schedule")],
                cwd=ROOT, env=env, stdout=open(workdir / "beat.log", "a"), stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )  # fmt: skip
        wait_until(lambda: port_open(port), 60, "gunicorn")
        yield Stack(workdir, env, pg, redis, f"http://127.0.0.1:{port}", token, procs)
    finally:
        for proc in procs:
            stop_group(proc)
        redis.stop()
        pg.stop("immediate")
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


@pytest.fixture
def workers(stack):
    """Collects the workers a test starts and stops them afterwards, even if the test fails."""
    started: list[Worker] = []

    def start(delay: float = 0.0) -> Worker:
        worker = stack.worker(delay)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def pool_children(parent_pid: int) -> list[int]:
    """Pids whose parent is ``parent_pid`` (the prefork pool processes of a worker)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent_pid:
            children.append(int(stat.parent.name))
    return children


def test_a_kill_9_during_a_task_then_restart_completes_exactly_once(stack, workers):
    worker = workers(delay=8)
    job = stack.upload()
    stack.wait_for(job["id"], lambda b: b["status"] == "running", 60, "the job to start", worker)
    worker.kill9()
    assert stack.get(job["id"])["status"] == "running"  # nobody finished it

    restarted = workers(delay=0)
    body = stack.wait_finished(job["id"], 120, restarted)
    assert body["status"] == "done", body
    assert len(body["predictions"]) == 5 and body["model_version"] == "tiny-test-0"
    assert body["attempts"] >= 2  # the killed attempt counted
    # Exactly one result: whatever else is still delivered (the sweeper's copy, a restored
    # message) leaves the finished job as it is.
    time.sleep(3)
    later = stack.get(job["id"])
    assert (later["finished_at"], later["predictions"], later["attempts"]) == (
        body["finished_at"],
        body["predictions"],
        body["attempts"],
    )


def test_b_uploads_while_redis_is_down_complete_when_it_is_back(stack, workers):
    worker = workers()
    stack.redis.stop()
    jobs = [stack.upload(f"outage-{i}.jpg") for i in range(3)]  # each still gets its 202
    assert [stack.get(j["id"])["status"] for j in jobs] == ["queued"] * 3
    stack.redis.start()  # same port, empty: the jobs exist only in PostgreSQL now
    for job in jobs:
        body = stack.wait_finished(job["id"], 150, worker)
        assert body["status"] == "done", body
        assert body["attempts"] == 1


def test_c_postgres_restart_under_a_running_worker(stack, workers):
    worker = workers(delay=3)
    before = stack.upload()
    body = stack.wait_finished(before["id"], 90, worker)
    assert body["status"] == "done", body

    in_flight = stack.upload()
    stack.wait_for(in_flight["id"], lambda b: b["status"] == "running", 60, "the job to start", worker)
    stack.pg.restart()  # drops every connection, including the worker's
    after = stack.upload()

    for job in (in_flight, after):
        body = stack.wait_finished(job["id"], 150, worker)
        assert body["status"] == "done", body
    assert worker.proc.poll() is None  # the same worker process recovered


def test_d_a_job_that_keeps_killing_its_worker_fails_after_bounded_attempts(stack, workers):
    worker = workers(delay=8)
    job = stack.upload()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        stack.wait_for(
            job["id"],
            lambda b, n=attempt: b["status"] == "running" and b["attempts"] == n,
            90,
            f"attempt {attempt}",
            worker,
        )
        # What an out-of-memory kill looks like: the pool process dies, the worker survives.
        for pid in pool_children(worker.proc.pid):
            os.kill(pid, signal.SIGKILL)

    body = stack.wait_finished(job["id"], 90, worker)
    assert body["status"] == "failed", body
    assert body["attempts"] == MAX_ATTEMPTS
    assert f"Gave up after {MAX_ATTEMPTS} attempts" in body["error"]
    assert "worker process stopped" in body["error"]
    assert worker.proc.poll() is None  # no crash loop took the worker down


def test_e_kill_9_in_the_middle_of_a_batch_loses_no_job(stack, workers):
    # Queue six jobs with no worker running, so the first task finds the other five waiting.
    jobs = [stack.upload(f"batch-{i}.jpg") for i in range(6)]
    worker = workers(delay=8)
    ids = [job["id"] for job in jobs]

    def batch_running():
        # A batch in flight: at least two jobs running, started together (one pool process,
        # concurrency 1). How many messages the first task finds waiting depends on the broker's
        # prefetch, so the test does not insist on all six.
        bodies = [stack.get(i) for i in ids]
        running = [b for b in bodies if b["status"] == "running"]
        return running if len(running) >= 2 and len({b["started_at"] for b in running}) == 1 else None

    try:
        running = wait_until(batch_running, 60, "a batch of at least two jobs to be running", 0.3)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {[stack.get(i)['status'] for i in ids]}\n{worker.tail()}") from None
    worker.kill9()
    killed = {b["id"] for b in running}
    assert all(stack.get(i)["status"] == "running" for i in killed)  # nobody finished them

    restarted = workers(delay=0)
    done = [stack.wait_finished(i, 150, restarted) for i in ids]
    assert [b["status"] for b in done] == ["done"] * 6, done
    assert all(len(b["predictions"]) == 5 for b in done)
    assert all(b["attempts"] >= 2 for b in done if b["id"] in killed)  # the killed batch ran again
    time.sleep(3)  # whatever is still delivered (sweeper copies, restored messages) changes nothing
    again = [stack.get(i) for i in ids]
    assert [(b["finished_at"], b["predictions"]) for b in again] == [(b["finished_at"], b["predictions"]) for b in done]


def test_f_wait_is_woken_by_the_worker_through_asgi(stack, workers):
    workers(delay=0)
    response = requests.post(
        f"{stack.base_url}/api/v1/classifications/?wait=30",
        files={"image": ("w.jpg", make_image_bytes("jpg", size=(48, 40)))},
        headers=stack.headers,
        timeout=60,
    )
    assert response.status_code == 202
    assert response.json()["status"] == "done"  # answered when the worker published, within the wait
