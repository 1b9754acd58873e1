"""The Django project of section 5, importable by gunicorn: a minimal project, bare or wrapped.

``BENCH_APP=django_bare`` serves ``GET /hello`` from one view, with Django's usual
middleware (security, sessions, common, CSRF, authentication, messages, clickjacking);
``django_wrapped`` is the same project with ``ciba_middleware.django.CibaMiddleware``
first in ``MIDDLEWARE``, as docs/django.md says. The cost measured is the middleware's
pass-through check inside Django's own stack::

    BENCH_APP=django_wrapped gunicorn benchmarks.django_apps:application
"""

from __future__ import annotations

import os

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import path

from .apps import GRANTS, HELLO_PATH, SERVICE


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello, World!", content_type="text/plain; charset=utf-8")


urlpatterns = [path(HELLO_PATH.lstrip("/"), hello), path("__ready__", hello)]

_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]


def configure(wrapped: bool) -> None:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only-not-a-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            *(["ciba_middleware.django"] if wrapped else []),
        ],
        MIDDLEWARE=(["ciba_middleware.django.CibaMiddleware"] if wrapped else []) + _MIDDLEWARE,
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        MESSAGE_STORAGE="django.contrib.messages.storage.cookie.CookieStorage",
        CIBA_MIDDLEWARE={
            "STORE_URL": os.environ.get("CIBA_STORE_URL", "memory://"),
            "TOKENS": list(GRANTS),
            "SERVICE_ID": SERVICE,
        },
    )
    django.setup()


_name = os.environ.get("BENCH_APP", "")
if _name in ("django_bare", "django_wrapped"):
    configure(_name == "django_wrapped")
    application = get_wsgi_application()
