"""A minimal Django project for the tests: the middleware first, a few views of its own.

``CIBA_MIDDLEWARE`` comes from ``CIBA_TEST_DJANGO_SETTINGS`` (JSON) when set; whatever it
leaves out is read from the ``CIBA_*`` environment, as in a deployment.
"""

from __future__ import annotations

import json
import os

SECRET_KEY = "test-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djangoproject.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "ciba_middleware.django",
]
MIDDLEWARE = [
    "ciba_middleware.django.CibaMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
DATABASES: dict[str, dict[str, str]] = {}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
USE_TZ = True
WSGI_APPLICATION = "djangoproject.wsgi.application"
CIBA_MIDDLEWARE = json.loads(os.environ.get("CIBA_TEST_DJANGO_SETTINGS", "{}"))
LOGGING = {"version": 1, "disable_existing_loggers": False}
