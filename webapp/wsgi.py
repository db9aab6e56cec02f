"""WSGI entry point (gunicorn webapp.wsgi). Production settings unless DJANGO_SETTINGS_MODULE says otherwise."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.production")

application = get_wsgi_application()

# With no broker (in-process mode) this process runs the tasks: load the model before the first upload.
from worker.preload import preload_model_if_in_process  # noqa: E402

preload_model_if_in_process()
