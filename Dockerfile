# One image for web, worker and beat (docker-compose.yml picks the command).
# The requirements pin the CPU build of torch; on a GPU host install the CUDA build of the same
# version instead, e.g. --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim

ARG TORCH_INDEX=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
RUN useradd --create-home --uid 1000 app && mkdir -p /data/media && chown app /data/media

COPY requirements.txt .
RUN if [ -n "$TORCH_INDEX" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX"; fi \
    && pip install -r requirements.txt

COPY . .
# Static files are collected at build time and served by whitenoise. collectstatic needs a key
# to import the settings; this one is never used at run time.
RUN SECRET_KEY=build-only ALLOWED_HOSTS=localhost DJANGO_SETTINGS_MODULE=webapp.settings.production \
    python manage.py collectstatic --noinput

USER app
EXPOSE 8000
# ASGI (uvicorn workers): a client waiting on ?wait= or an event stream holds no thread.
CMD ["gunicorn", "webapp.asgi:application", "--worker-class", "uvicorn_worker.UvicornWorker", "--bind", "0.0.0.0:8000", "--workers", "3"]
