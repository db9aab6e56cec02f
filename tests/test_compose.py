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


def test_services_and_health_checks(compose):
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker"} <= set(services)
    for name in ("postgres", "redis", "web", "worker"):
        assert services[name]["healthcheck"]["test"], f"{name} has no health check"
    assert "gunicorn webapp.wsgi" in services["web"]["command"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "worker", "worker"]
    for name in ("web", "worker"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy"
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379")
        assert env["DJANGO_SETTINGS_MODULE"] == "webapp.settings.production"


def test_worker_reserves_a_gpu(compose):
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_web_and_worker_share_the_media_volume(compose):
    assert "media" in compose["volumes"]
    for name in ("web", "worker"):
        assert "media:/data/media" in compose["services"][name]["volumes"]
        assert compose["services"][name]["environment"]["MEDIA_ROOT"] == "/data/media"
