"""One way to send raw requests, in process (WebTest) or over HTTP (requests), so the same
table of cases runs against both."""

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
    headers: dict[str, str]
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
        return Answer(response.status_int, dict(response.headers), response.body)


class OverHTTP:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Answer:
        response = self.session.request(
            method, self.base_url + path, headers=dict(headers or {}), data=body, timeout=10
        )
        return Answer(response.status_code, dict(response.headers), response.content)
