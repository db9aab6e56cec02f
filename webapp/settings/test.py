"""Tests: SQLite unless DATABASE_URL is set (CI sets PostgreSQL); fast password hashing.

Tasks run eagerly in unit tests even when CELERY_BROKER_URL is set, so a unit test never needs a
worker; the end-to-end tests start a real worker with CELERY_TASK_ALWAYS_EAGER=false.
"""

import os
import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env("SECRET_KEY", default="django-insecure-test-key")
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# SQLite: the test database in a file, not Django's default in-memory one with a shared cache. There,
# a table lock between two connections (the live server's threads serving parallel uploads, a
# test's helper thread finishing a job) fails at once with "database table is locked", which made
# browser and push tests flaky on a loaded or fast machine; in a file, a connection that finds the
# database busy waits for it (the timeout). One file per test process, removed by the test run.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(Path(tempfile.gettempdir()) / f"cifar-classifier-test-{os.getpid()}.sqlite3")
    }

CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
CELERY_TASK_EAGER_PROPAGATES = True

# Test-only hook: the worker sleeps this long after marking a job running, so the end-to-end
# tests can kill it "during a task". Read only by classifier.lifecycle, and only defined here.
WORKER_TEST_DELAY_SECONDS = env.float("WORKER_TEST_DELAY_SECONDS", default=0.0)

# Uploads from tests never land in the project's media/ folder; tests that look at files use the
# media_root fixture (a fresh folder per test). The e2e tests pass MEDIA_ROOT on to the worker.
MEDIA_ROOT = env("MEDIA_ROOT", default=str(Path(tempfile.gettempdir()) / "cifar-classifier-test-media"))

# ----------------------------------------------------------------------------- security (helper A2)
# Functional tests all come from 127.0.0.1 and SQLite reuses user ids after a rollback, so real upload
# rates would make them fail at random; tests/security/test_throttling.py sets low rates itself.
from .base import REST_FRAMEWORK  # noqa: E402

REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].update(
    {
        "classification_create": env("API_UPLOAD_RATE", default="100000/min"),
        "classification_create_ip": env("API_UPLOAD_IP_RATE", default="100000/min"),
        "demo_ip": env("DEMO_RATE", default="100000/min"),
    }
)
