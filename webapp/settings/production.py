"""Production: SECRET_KEY and ALLOWED_HOSTS must come from the environment; HTTPS-aware."""

from .base import *  # noqa: F403
from .base import MIDDLEWARE, STORAGES, env

DEBUG = False
SECRET_KEY = env("SECRET_KEY")  # no default: refuse to start without one
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True

# gunicorn serves static files itself through whitenoise (collected at image build time), by its
# async-capable subclass: the whole stack then runs on the event loop under ASGI.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "classifier.middleware.StaticFilesMiddleware"
)
STORAGES["staticfiles"] = {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}

# ----------------------------------------------------------------------------- security (helper A2)
# HTTPS only: `manage.py check --deploy` is clean with these defaults (tests/security/test_deploy.py).
# HSTS for a year, subdomains included, eligible for browser preload lists (the header alone does not
# submit the site; set SECURE_HSTS_PRELOAD=false if the domain must never be preloaded).
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
# Plain-HTTP requests are redirected to HTTPS (the proxy says which is which, SECURE_PROXY_SSL_HEADER),
# except the container health check, which fetches the schema over HTTP inside the compose network.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = env.list("SECURE_REDIRECT_EXEMPT", default=[r"^api/v1/schema/$"])
