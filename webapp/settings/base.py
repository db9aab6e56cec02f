"""Settings shared by every environment. Values come from the environment (django-environ).

A ``.env`` file in the project root is read only when ``DJANGO_READ_DOT_ENV_FILE=true``, so a
stray file never changes what runs. ``local``, ``test`` and ``production`` refine this module.
"""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if env.bool("DJANGO_READ_DOT_ENV_FILE", default=False):
    env.read_env(str(BASE_DIR / ".env"))

# ----------------------------------------------------------------------------- core
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default=None)  # local/test give a development default; production requires it
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"
ASGI_APPLICATION = "webapp.asgi.application"  # what gunicorn serves (uvicorn workers): async waits
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served from our static files, no CDN
    "classifier",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# ----------------------------------------------------------------------------- database
# SQLite next to manage.py unless DATABASE_URL says otherwise (postgres://user@host:5432/name).
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Connections are re-checked before reuse, so a restarted PostgreSQL does not break a long-lived worker.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default runs the web's threads and the in-process tasks on one SQLite file. A
    # transaction that reads and then writes (a job's start, its answer) begins DEFERRED by default,
    # and SQLite fails it at once with "database is locked" when another connection started
    # writing meanwhile (it cannot wait there without a deadlock). IMMEDIATE takes the write lock
    # at BEGIN, so a second writer waits (up to the timeout) instead; readers outside transactions
    # are not held up.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})
# The Celery worker's processes keep their connection this long (seconds) across tasks: a fresh
# PostgreSQL connection costs about 4 ms here, more than a batch's queries. (The web processes keep
# CONN_MAX_AGE: under ASGI each request runs its sync code on its own thread, whose connection
# would outlive it.)
WORKER_CONN_MAX_AGE = env.int("WORKER_CONN_MAX_AGE", default=300)
# Under ASGI the API's waiting views (upload with ?wait=, item, event streams) do their database
# work on this many threads per web process, each keeping its connection WEB_CONN_MAX_AGE seconds
# (classifier/db_threads.py). 0 for either: the request's own thread and connection, as elsewhere.
WEB_DB_THREADS = env.int("WEB_DB_THREADS", default=4)
WEB_CONN_MAX_AGE = env.int("WEB_CONN_MAX_AGE", default=60)

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

# ----------------------------------------------------------------------------- auth
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# ----------------------------------------------------------------------------- static and media files
STATIC_URL = "/static/"
STATIC_ROOT = env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = env("MEDIA_ROOT", default=str(BASE_DIR / "media"))

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# S3 (or any S3-compatible store) through django-storages when a bucket is configured.
AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME", default="")
if AWS_STORAGE_BUCKET_NAME:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "access_key": env("AWS_ACCESS_KEY_ID", default=None),
            "secret_key": env("AWS_SECRET_ACCESS_KEY", default=None),
            "region_name": env("AWS_S3_REGION_NAME", default=None),
            "endpoint_url": env("AWS_S3_ENDPOINT_URL", default=None),
            "location": env("AWS_LOCATION", default="media"),
            "default_acl": "private",  # images are served only through authenticated views
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }

# ----------------------------------------------------------------------------- uploads
MAX_UPLOAD_BYTES = env.int("MAX_UPLOAD_BYTES", default=10 * 1024 * 1024)
MAX_IMAGE_PIXELS = env.int("MAX_IMAGE_PIXELS", default=40_000_000)  # refuses decompression bombs
THUMBNAIL_SIZE = 128
# Files above this go to a temporary file instead of memory; form fields are capped separately.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_NUMBER_FILES = 20

# ----------------------------------------------------------------------------- model bundle
MODEL_BUNDLE = env("MODEL_BUNDLE", default=str(BASE_DIR / "bundles" / "default"))
MODEL_DEVICE = env("MODEL_DEVICE", default=None)  # None: CUDA when present, else CPU
# Each worker pool process loads MODEL_BUNDLE when it starts and warms it up (worker/celery.py);
# false: on its first task instead (the first jobs then pay about half a second more).
WORKER_WARM_UP = env.bool("WORKER_WARM_UP", default=True)
PREDICTION_TOP_K = 5
# ----------------------------------------------------------------------------- evaluation (classifier.evaluation)
# A second bundle run on the same uploads after the champion answered; its predictions are stored
# for staff, never shown to users. Its task goes to its own queue, so a worker that serves users
# never spends time on it: run `make worker-challenger` (celery -Q CHALLENGER_QUEUE) beside it.
MODEL_BUNDLE_CHALLENGER = env("MODEL_BUNDLE_CHALLENGER", default="")
CHALLENGER_QUEUE = env("CHALLENGER_QUEUE", default="challenger")
# Drift warnings per day: population stability index of the predicted-class mix (or of the
# confidence histogram) at or above DRIFT_PSI_THRESHOLD, or a mean confidence that moved by more
# than DRIFT_CONFIDENCE_DELTA from the offline validation set; days with fewer predictions than
# DRIFT_MIN_PREDICTIONS are shown but never flagged.
DRIFT_PSI_THRESHOLD = env.float("DRIFT_PSI_THRESHOLD", default=0.2)
DRIFT_CONFIDENCE_DELTA = env.float("DRIFT_CONFIDENCE_DELTA", default=0.1)
DRIFT_MIN_PREDICTIONS = env.int("DRIFT_MIN_PREDICTIONS", default=30)

# ----------------------------------------------------------------------------- jobs
API_MAX_WAIT_SECONDS = env.float("API_MAX_WAIT_SECONDS", default=30.0)
# Waiters (?wait=, the pages' event streams) wake on push (classifier/push.py); this slow re-check
# only covers a notification lost while Redis was down.
API_WAIT_POLL_SECONDS = env.float("API_WAIT_POLL_SECONDS", default=2.0)
# Push transport: Redis pub/sub on the broker's Redis by default; empty = in-process (no broker).
_broker = env("CELERY_BROKER_URL", default="")
PUSH_REDIS_URL = env("PUSH_REDIS_URL", default=_broker if _broker.startswith(("redis://", "rediss://")) else "")
LIVE_STREAM_SECONDS = env.float("LIVE_STREAM_SECONDS", default=55.0)  # one event stream, then EventSource reconnects
LIVE_RETRY_MS = 2000  # EventSource's reconnect delay
# Live camera frames (classifier/frames.py): never stored; the worker's answer is awaited this long.
FRAME_TIMEOUT_SECONDS = env.float("FRAME_TIMEOUT_SECONDS", default=5.0)
FRAME_MAX_BYTES = env.int("FRAME_MAX_BYTES", default=1024 * 1024)
CLASSIFICATION_MAX_ATTEMPTS = env.int("CLASSIFICATION_MAX_ATTEMPTS", default=3)
# A job queued or running for longer than this is re-queued by the sweeper (requeue_stuck).
CLASSIFICATION_STUCK_AFTER_SECONDS = env.int("CLASSIFICATION_STUCK_AFTER_SECONDS", default=600)
CLASSIFY_SOFT_TIME_LIMIT = env.int("CLASSIFY_SOFT_TIME_LIMIT", default=60)
CLASSIFY_TIME_LIMIT = env.int("CLASSIFY_TIME_LIMIT", default=90)
# Grad-CAM maps follow the answer (classifier/explanations/heatmaps.py); maps still pending after
# this long (a worker died between the answer and the maps) are asked for again by the sweeper.
HEATMAPS_STALE_SECONDS = env.int("HEATMAPS_STALE_SECONDS", default=120)
# Micro-batching (worker/batch_queue.py): a task takes up to this many queued jobs and runs one
# forward pass; a lone job runs at once, and once a second one was queued the batch waits at most
# WORKER_BATCH_WAIT_MS for more. 1 turns batching off.
WORKER_BATCH_SIZE = env.int("WORKER_BATCH_SIZE", default=16)
WORKER_BATCH_WAIT_MS = env.float("WORKER_BATCH_WAIT_MS", default=2.0)

# ----------------------------------------------------------------------------- Celery
# Without a broker, tasks run in-process (eager): the one-command development mode.
CELERY_TASK_ALWAYS_EAGER = not env("CELERY_BROKER_URL", default="")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="") or "memory://"
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Celery's Django fixup closes the database connections around every task unless this is set; then
# it closes them only every this many tasks, and worker.celery.recycle_database_connections
# applies WORKER_CONN_MAX_AGE and the health checks instead. 0 keeps Celery's close-per-task.
CELERY_DB_REUSE_MAX = 10_000 if WORKER_CONN_MAX_AGE > 0 else None
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing gives up after about a second when the broker is down: the upload still gets its 202
# (the job is committed as queued) and the sweeper sends it once the broker is back.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# A message delivered to a worker that dies without acking is redelivered after this many seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
}
# Routing (docker-compose.yml): uploads to CLASSIFY_QUEUE (e.g. "gpu"), live frames to FRAME_QUEUE
# (e.g. "cpu"); unset, everything goes to the default queue ("celery").
CELERY_TASK_ROUTES = {
    task: {"queue": queue}
    for task, queue in (
        ("worker.tasks.classify", env("CLASSIFY_QUEUE", default="")),
        ("worker.tasks.explain", env("CLASSIFY_QUEUE", default="")),  # the same model, so the same workers
        ("worker.tasks.classify_frame", env("FRAME_QUEUE", default="")),
    )
    if queue
}
CELERY_BEAT_SCHEDULE = {
    "requeue-stuck-classifications": {
        "task": "worker.tasks.requeue_stuck",
        "schedule": env.float("REQUEUE_STUCK_EVERY_SECONDS", default=60.0),
    },
}

# ----------------------------------------------------------------------------- REST API
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes anonymous requests 401 rather than 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "classifier.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "classification_create": env("API_UPLOAD_RATE", default="120/min"),
        "token_obtain": env("API_TOKEN_RATE", default="30/min"),
        "frame": env("API_FRAME_RATE", default="1200/min"),  # live camera: up to 20 frames/s per client
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "CIFAR image classifier API",
    "DESCRIPTION": "Upload an image, get the top-5 CIFAR classes from the current model bundle.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# ----------------------------------------------------------------------------- logging
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}

# ----------------------------------------------------------------------------- security (helper A2)
# Content-Security-Policy on every response (classifier/middleware.py): same-origin only, no inline
# scripts; the admin and Swagger UI additionally get inline styles and data: images.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "classifier.middleware.ContentSecurityPolicyMiddleware",
)
# Every error under /api/ in the API's JSON error shape, also with DEBUG on (classifier/errors.py).
MIDDLEWARE.insert(
    MIDDLEWARE.index("classifier.middleware.ContentSecurityPolicyMiddleware") + 1,
    "classifier.errors.ApiErrorShapeMiddleware",
)
CSRF_FAILURE_VIEW = "classifier.errors.csrf_failure"
# Django's defaults, stated so a test and a reader can rely on them.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
# Upload throttles (classifier/throttling.py): per user ("classification_create", above) and per client IP,
# shared by the API and the HTML upload form.
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["classification_create_ip"] = env("API_UPLOAD_IP_RATE", default="300/min")
# The client IP is REMOTE_ADDR, or NUM_PROXIES hops back in X-Forwarded-For behind that many trusted proxies.
# DRF's default (None) trusts the whole header, which a client can forge to dodge the per-IP throttle.
REST_FRAMEWORK["NUM_PROXIES"] = env.int("NUM_PROXIES", default=0)
# The demo on the home page (classifier/demo.py): classifications per client IP, no account needed.
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["demo_ip"] = env("DEMO_RATE", default="10/min")
# Swagger UI must not send our schema to the public validator (and the CSP would block its badge).
SPECTACULAR_SETTINGS["SWAGGER_UI_SETTINGS"] = {"deepLinking": True, "validatorUrl": None}
