"""ciba/mount.py: each framework's view hands the endpoint the headers and body, and answers its response."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from typing import Any

from conftest import ROOT

from ciba_middleware.ciba.endpoints import ClientResponse, EndpointRequest
from ciba_middleware.ciba.mount import flask_view, starlette_endpoint

FORM = "application/x-www-form-urlencoded"


def echo(request: EndpointRequest) -> ClientResponse:
    """An endpoint that answers what it was given, with a status and headers of its own."""
    body = {"authorization": request.authorization, "content_type": request.content_type, "body": request.body.decode()}
    return ClientResponse(401, [("Content-Type", "application/json"), ("WWW-Authenticate", "Basic")], json.dumps(body))


EXPECTED = {"authorization": "Basic YTpi", "content_type": FORM, "body": "grant_type=x&a=%C3%A9"}


def test_flask() -> None:
    from flask import Flask

    app = Flask("mounted")
    app.add_url_rule("/token", view_func=flask_view(echo), methods=["POST"])
    answer = app.test_client().post(
        "/token", data=b"grant_type=x&a=%C3%A9", headers={"Authorization": "Basic YTpi", "Content-Type": FORM}
    )
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Basic"
    assert answer.get_json() == EXPECTED
    assert app.test_client().get("/token").status_code == 405


def test_flask_views_get_distinct_names() -> None:
    assert flask_view(echo).__name__ == "ciba_echo"
    assert flask_view(echo, "token").__name__ == "token"


def test_starlette() -> None:
    from starlette.applications import Starlette

    app = Starlette()
    app.add_route("/token", starlette_endpoint(echo), methods=["POST"])
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": b"grant_type=x&a=%C3%A9", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/token",
        "raw_path": b"/token",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", b"Basic YTpi"), (b"content-type", FORM.encode())],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    assert start["status"] == 401
    assert (b"www-authenticate", b"Basic") in start["headers"]
    assert json.loads(body) == EXPECTED


def test_django() -> None:
    # In a process of its own: Django's settings are process-wide.
    script = textwrap.dedent(
        """
        import json, sys
        import django
        from django.conf import settings
        settings.configure(ALLOWED_HOSTS=["testserver"], ROOT_URLCONF=__name__, MIDDLEWARE=[
            "django.middleware.csrf.CsrfViewMiddleware"])
        django.setup()
        from django.test import Client
        from django.urls import path
        from ciba_middleware.ciba.mount import django_view
        sys.path.insert(0, "tests/ciba")
        from test_mount import echo
        urlpatterns = [path("token", django_view(echo))]
        client = Client(enforce_csrf_checks=True)
        answer = client.post("/token", data=b"grant_type=x&a=%C3%A9", content_type="application/x-www-form-urlencoded",
                             HTTP_AUTHORIZATION="Basic YTpi")
        print(json.dumps([answer.status_code, answer["WWW-Authenticate"], json.loads(answer.content),
                          client.get("/token").status_code]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [401, "Basic", EXPECTED, 405]
