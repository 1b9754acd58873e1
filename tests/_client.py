"""One way to send raw requests, in process (WebTest, Django's test client) or over HTTP
(requests), so the same table of cases runs against each. Header names are looked up
case-insensitively, as HTTP has them (an ASGI server sends them in lower case)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import webtest


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class InProcess:
    def __init__(self, app: Any) -> None:
        self.app = webtest.TestApp(app, lint=False)

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Answer:
        response = self.app.request(
            path,
            method=method,
            headers=dict(headers or {}),
            body=body,
            expect_errors=True,
        )
        return Answer(response.status_int, response.headers, response.body)


class OverHTTP:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Answer:
        response = self.session.request(
            method, self.base_url + path, headers=dict(headers or {}), data=body, timeout=10
        )
        return Answer(response.status_code, response.headers, response.content)


class DjangoTestClient:
    """Django's test client on the test project (tests/djangoproject), with ``CIBA_MIDDLEWARE`` given."""

    def __init__(self, ciba_settings: Mapping[str, Any]) -> None:
        import os

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproject.settings")
        import django
        from django.test import Client
        from django.test.utils import override_settings

        django.setup()
        self.override = override_settings(CIBA_MIDDLEWARE=dict(ciba_settings))
        self.override.enable()
        # CSRF enforced, as in a real request: the fail API must not depend on it.
        self.client = Client(enforce_csrf_checks=True, raise_request_exception=False)

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Answer:
        headers = dict(headers or {})
        content_type = headers.pop("Content-Type", "")
        # Django's client sets CONTENT_TYPE only with a body: set it for an empty one too.
        extra = {"CONTENT_TYPE": content_type} if content_type else {}
        response = self.client.generic(method, path, data=body, content_type=content_type, headers=headers, **extra)
        return Answer(response.status_code, response.headers, response.content)

    def close(self) -> None:
        self.override.disable()
