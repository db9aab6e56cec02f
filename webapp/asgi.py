"""ASGI entry point. Production settings unless DJANGO_SETTINGS_MODULE says otherwise."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.production")

application = get_asgi_application()

# Import what the first upload needs and start the push listener; with no broker (in-process mode)
# this process runs the tasks: load the model and warm it up too (worker/preload.py).
from worker.preload import preload  # noqa: E402

preload()
