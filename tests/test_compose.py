"""docker-compose.yml, checked without a Docker engine: valid against the compose-spec JSON schema
(tests/data/compose_spec.json, see tests/data/README.md) and wired the way the service needs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose_spec.json").read_text())
# The file declares draft 2019-09 (with a trailing "#" that jsonschema does not map by itself).
Validator = jsonschema.Draft201909Validator


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # resolves the <<: merge keys


def test_valid_against_the_compose_spec_schema(compose):
    Validator.check_schema(SCHEMA)
    errors = sorted(Validator(SCHEMA).iter_errors(compose), key=lambda e: list(e.path))
    assert errors == [], "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_rejects_a_broken_file(compose):
    # the check above can fail: a typo in a service key is caught
    broken = json.loads(json.dumps(compose))
    broken["services"]["web"]["helthcheck"] = broken["services"]["web"].pop("healthcheck")
    assert list(Validator(SCHEMA).iter_errors(broken))


WORKERS = ("worker-gpu", "worker-cpu")


def test_services_and_health_checks(compose):
    services = compose["services"]
    assert {"postgres", "redis", "web", *WORKERS} <= set(services)
    for name in ("postgres", "redis", "web", *WORKERS):
        assert services[name]["healthcheck"]["test"], f"{name} has no health check"
    assert "gunicorn webapp.asgi:application --worker-class uvicorn_worker.UvicornWorker" in services["web"]["command"]
    for name in WORKERS:
        assert services[name]["command"][:4] == ["celery", "-A", "worker", "worker"]
    for name in ("web", *WORKERS):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy"
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379")
        assert env["DJANGO_SETTINGS_MODULE"] == "webapp.settings.production"


def test_the_gpu_worker_reserves_a_gpu_and_the_cpu_workers_do_not(compose):
    gpu = compose["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert gpu["environment"]["MODEL_DEVICE"] == "cuda"
    cpu = compose["services"]["worker-cpu"]
    assert "resources" not in cpu.get("deploy", {}) and cpu["environment"]["MODEL_DEVICE"] == "cpu"
    assert cpu["deploy"]["replicas"] >= 2  # several workers share one Redis and PostgreSQL


def queues(service: dict) -> set[str]:
    command = service["command"]
    return set(command[command.index("-Q") + 1].split(","))


def test_uploads_and_frames_are_routed_to_separate_queues(compose):
    services = compose["services"]
    env = services["web"]["environment"]
    classify_queue = env["CLASSIFY_QUEUE"].split(":-")[-1].rstrip("}")  # ${CLASSIFY_QUEUE:-gpu} -> gpu
    frame_queue = env["FRAME_QUEUE"].split(":-")[-1].rstrip("}")
    assert classify_queue != frame_queue
    assert classify_queue in queues(services["worker-gpu"])
    assert frame_queue in queues(services["worker-cpu"]) and "celery" in queues(services["worker-cpu"])  # + sweeper
    assert classify_queue not in queues(services["worker-cpu"])
    # each worker's health check pings its own node name
    for name, node in (("worker-gpu", "gpu@"), ("worker-cpu", "cpu@")):
        command = services[name]["command"]
        assert command[command.index("-n") + 1].startswith(node)
        assert f"--destination {node}$$HOSTNAME" in services[name]["healthcheck"]["test"][1]


def test_routing_settings_send_each_task_to_its_queue():
    import os
    import subprocess
    import sys

    code = (
        "from worker.celery import app; r = app.amqp.router.route; "
        "print(r({}, 'worker.tasks.classify')['queue'].name, r({}, 'worker.tasks.classify_frame')['queue'].name, "
        "r({}, 'worker.tasks.requeue_stuck')['queue'].name)"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings.test",
        "CLASSIFY_QUEUE": "gpu",
        "FRAME_QUEUE": "cpu",
    }
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["gpu", "cpu", "celery"]
    env.pop("CLASSIFY_QUEUE"), env.pop("FRAME_QUEUE")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["celery", "celery", "celery"], out.stderr


def test_web_and_worker_share_the_media_volume(compose):
    assert "media" in compose["volumes"]
    for name in ("web", *WORKERS):
        assert "media:/data/media" in compose["services"][name]["volumes"]
        assert compose["services"][name]["environment"]["MEDIA_ROOT"] == "/data/media"
