# One-command workflows. Every target is idempotent: the virtualenv is created once and
# requirements are reinstalled only when a requirements file changes (stamp files in .venv/).
#
#   make run        development server on 127.0.0.1:8000 (SQLite, tasks in-process, shipped bundle)
#   make serve      the production server: gunicorn with uvicorn (ASGI) workers on 127.0.0.1:8000
#   make worker     Celery worker (needs CELERY_BROKER_URL and usually DATABASE_URL)
#   make beat       Celery beat: runs the requeue_stuck sweeper periodically
#   make worker-challenger  Celery worker for the challenger queue (when MODEL_BUNDLE_CHALLENGER is set)
#   make test       install test tools (and Chromium for browser tests if apt works), run pytest
#   make lint       ruff check + format check
#   make superuser  create a staff user interactively

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MANAGE := $(PY) manage.py
PYTEST_ARGS ?=

.PHONY: run serve worker worker-challenger beat test lint format migrate superuser browsers clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.runtime-installed: requirements.txt | $(VENV)/bin/python
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PIP) install -r requirements-dev.txt
	touch $@ $(VENV)/.runtime-installed

migrate: $(VENV)/.runtime-installed
	$(MANAGE) migrate --noinput

run: migrate
	$(MANAGE) runserver 127.0.0.1:8000

# ASGI: ?wait= and the pages' event streams await a push instead of holding a thread.
# Static files need collectstatic first (whitenoise); production settings need SECRET_KEY/ALLOWED_HOSTS.
serve: migrate
	$(MANAGE) collectstatic --noinput -v 0
	$(VENV)/bin/gunicorn webapp.asgi:application --worker-class uvicorn_worker.UvicornWorker \
		--bind 127.0.0.1:8000 --workers $${WEB_WORKERS:-2} --timeout 60

worker: $(VENV)/.runtime-installed
	$(VENV)/bin/celery -A worker worker --loglevel=INFO --pool=prefork --concurrency=$${WORKER_CONCURRENCY:-1}

# The challenger (MODEL_BUNDLE_CHALLENGER) has its own queue, so the workers that answer users never run it
# (and it does not warm up MODEL_BUNDLE, which it never runs).
worker-challenger: $(VENV)/.runtime-installed
	WORKER_WARM_UP=false $(VENV)/bin/celery -A worker worker --loglevel=INFO --pool=prefork --concurrency=1 -Q $${CHALLENGER_QUEUE:-challenger} -n challenger@%h

beat: $(VENV)/.runtime-installed
	$(VENV)/bin/celery -A worker beat --loglevel=INFO

superuser: migrate
	$(MANAGE) createsuperuser

# Browser tests need Debian's chromium and chromium-driver. Install them when missing and apt
# can be used (root, or passwordless sudo); otherwise those tests skip with a reason.
browsers:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "chromium and chromedriver present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
			|| echo "could not install chromium; browser tests will be skipped"; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		(sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
			|| echo "could not install chromium; browser tests will be skipped"; \
	else \
		echo "not root and no sudo: skipping chromium install; browser tests will be skipped"; \
	fi

test: $(VENV)/.dev-installed browsers
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev-installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
