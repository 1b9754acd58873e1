"""Every adapter-level promise, through every adapter, on real servers.

One table of servers (:data:`KINDS`: WSGI under gunicorn, ASGI under uvicorn and hypercorn,
Django under gunicorn and uvicorn, Flask under gunicorn) and one test per promise, each
parametrised over all of them: a promise kept by one adapter only fails here. The rules
themselves live once, in :mod:`ciba_middleware.adapter` and :mod:`ciba_middleware.core`.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _dpop import BOUND_TOKEN, RSA, proof
from conftest import GRANTS, SERVICE, SERVICE_TOKEN, LiveServer

from ciba_middleware import sha256_hex
from ciba_middleware.stores import store_from_url

FAIL = "/backchannel/authentication/fail"
V3 = f"/api/{SERVICE}{FAIL}"
BEARER = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
METRICS_TOKEN = "metrics-token-for-the-adapter-suite"
#: A service whose ID is not ASCII, and a DPoP-bound token covering it and SERVICE.
UNICODE_SERVICE = "ü1"
DPOP_GRANT = {
    "organization": "dpop-org",
    "services": [SERVICE, UNICODE_SERVICE],
    "token_sha256": sha256_hex(BOUND_TOKEN),
    "dpop_jkt": RSA.thumbprint(),
}

#: kind -> (app, server). Django's settings come from the same CIBA_* environment.
KINDS = {
    "wsgi-gunicorn": ("_adapter_apps:wsgi", "gunicorn"),
    "asgi-uvicorn": ("_asgi_apps:application", "uvicorn"),
    "asgi-hypercorn": ("_asgi_apps:application", "hypercorn"),
    "django-gunicorn": ("djangoproject.wsgi:application", "gunicorn"),
    "django-uvicorn": ("djangoproject.asgi:application", "uvicorn"),
    "flask-gunicorn": ("_adapter_apps:flask_app", "gunicorn"),
}


def environment(folder: Path, **extra: str) -> dict[str, str]:
    return {
        "CIBA_STORE_URL": f"sqlite:///{folder / 'tickets.sqlite3'}",
        "CIBA_TOKENS": json.dumps([*GRANTS, DPOP_GRANT]),
        "CIBA_SERVICE_ID": SERVICE,
        "CIBA_AUDIT_LOG": "off",
        "CIBA_HEALTH_PATH": "/healthz",
        "CIBA_METRICS_PATH": "/metrics",
        "CIBA_METRICS_TOKEN_SHA256": sha256_hex(METRICS_TOKEN),
        "DJANGO_SETTINGS_MODULE": "djangoproject.settings",
        **extra,
    }


@pytest.fixture(scope="module", params=list(KINDS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    app, server = KINDS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    live = LiveServer(app, environment(folder), server=server)
    live.store_url = environment(folder)["CIBA_STORE_URL"]  # type: ignore[attr-defined]
    live.kind = request.param  # type: ignore[attr-defined]
    yield live
    live.stop()


def fail_call(base: str, path: str = V3, headers: dict[str, str] | None = None, **body: Any) -> requests.Response:
    return requests.post(base + path, json=body, headers={**BEARER, **(headers or {})}, timeout=10)


# -- the promises -------------------------------------------------------------------------------


def test_the_routes_answer_and_everything_else_passes_through_untouched(served: LiveServer) -> None:
    answer = fail_call(served.url, reason="ACCESS_DENIED")
    assert (answer.status_code, answer.json()["action"]) == (200, "FORBIDDEN")
    assert requests.post(served.url + f"/api{FAIL}", json={}, headers=BEARER, timeout=10).status_code == 200  # v2
    passed = requests.post(served.url + "/echo", data=b"a=1", headers=BEARER, timeout=10)
    assert passed.status_code == 200
    assert "Request-Id" not in passed.headers
    assert passed.json()["body"] == "a=1"


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        pytest.param({"Request-Id": "caller-1"}, "caller-1", id="request-id"),
        pytest.param({"X-Request-Id": "proxy-1"}, "proxy-1", id="x-request-id"),
        pytest.param({"Request-Id": "bad id!", "X-Request-Id": "proxy-2"}, "proxy-2", id="first-well-formed"),
        pytest.param({}, None, id="new"),
    ],
)
def test_every_answer_carries_the_request_id(served: LiveServer, sent: dict[str, str], expected: str | None) -> None:
    refused = requests.post(served.url + V3, json={}, headers=sent, timeout=10)
    for answer in (fail_call(served.url, headers=sent), refused):
        got = answer.headers["Request-Id"]
        assert got == expected if expected is not None else re.fullmatch(r"[0-9a-f]{32}", got)
    assert refused.status_code == 401


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"/api/%C3%BC1{FAIL}", id="utf-8-service"),
        pytest.param(f"/api/%37%31%35948317{FAIL}", id="encoded-digits"),
        pytest.param(V3, id="plain"),
    ],
)
def test_a_dpop_proof_for_the_url_sent_is_accepted(served: LiveServer, path: str) -> None:
    """The proof's htu is exactly the URL the client sent, percent-escapes and all."""
    url = served.url + path
    headers = {"Authorization": f"DPoP {BOUND_TOKEN}", "DPoP": proof(RSA, url)}
    answer = requests.post(url, json={}, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    headers = {"Authorization": f"DPoP {BOUND_TOKEN}", "DPoP": proof(RSA, url.replace("/api/", "/apix/"))}
    assert requests.post(url, json={}, headers=headers, timeout=10).status_code == 401


def test_an_unauthenticated_body_that_never_ends_gets_401_at_once(served: LiveServer) -> None:
    if served.kind == "django-uvicorn":  # type: ignore[attr-defined]
        pytest.xfail("Django's ASGI handler reads the whole body before any middleware runs (docs/django.md)")
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(
            f"POST {V3} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong-token\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            "1\r\n{\r\n".encode()
        )
        started = time.monotonic()
        head = sock.recv(64)
    assert head.startswith(b"HTTP/1.1 401"), head
    assert time.monotonic() - started < 3


def test_health_is_served(served: LiveServer) -> None:
    answer = requests.get(served.url + "/healthz", timeout=10)
    assert (answer.status_code, answer.json(), answer.headers["Cache-Control"]) == (200, {"store": "ok"}, "no-store")
    assert requests.post(served.url + "/healthz", timeout=10).status_code == 405


def test_metrics_are_served_behind_their_token(served: LiveServer) -> None:
    fail_call(served.url, reason="ACCESS_DENIED")
    scrape = requests.get(served.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert scrape.status_code == 200
    assert 'ciba_fail_calls_total{action="FORBIDDEN"' in scrape.text
    assert requests.get(served.url + "/metrics", headers=BEARER, timeout=10).status_code == 401


def test_a_views_backchannel_fail_is_the_clients_answer(served: LiveServer) -> None:
    ticket = requests.post(served.url + "/issue", timeout=10).text
    store = store_from_url(served.store_url)  # type: ignore[attr-defined]
    try:
        assert store.exists(SERVICE, ticket)
        answer = requests.post(served.url + "/reject", data={"reason": "ACCESS_DENIED", "ticket": ticket}, timeout=10)
        assert (answer.status_code, answer.json()) == (403, {"error": "access_denied"})
        assert answer.headers["Cache-Control"] == "no-store"
        assert not store.exists(SERVICE, ticket)
    finally:
        store.close()


# -- settings, each through a server of its own --------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_public_url_and_the_prefix_are_every_adapters(tmp_path: Path, kind: str) -> None:
    app, server = KINDS[kind]
    env = environment(tmp_path, CIBA_PUBLIC_URL="https://as.example.com", CIBA_PATH_PREFIX="/authlete")
    live = LiveServer(app, env, server=server)
    try:
        path = f"/authlete{V3}"
        public = {"Authorization": f"DPoP {BOUND_TOKEN}", "DPoP": proof(RSA, "https://as.example.com" + path)}
        assert requests.post(live.url + path, json={}, headers=public, timeout=10).status_code == 200
        # A proof for the URL the Host header names is for another server now.
        local = {"Authorization": f"DPoP {BOUND_TOKEN}", "DPoP": proof(RSA, live.url + path)}
        assert requests.post(live.url + path, json={}, headers=local, timeout=10).status_code == 401
        # Without the prefix, the path is the app's.
        assert "Request-Id" not in requests.post(live.url + V3, json={}, headers=BEARER, timeout=10).headers
    finally:
        live.stop()


# -- in process: what reaches the core, and the answer of a fail API that is not configured ------

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _wsgi_client(observer: Any) -> Any:
    from _client import InProcess

    from ciba_middleware import BackchannelFailMiddleware, StaticTokenVerifier

    app = BackchannelFailMiddleware(
        lambda environ, start_response: [], store=store_from_url("memory://"), verifier=StaticTokenVerifier(GRANTS)
    )
    app.api.observers = (observer,)
    return InProcess(app)


def _flask_client(observer: Any) -> Any:
    from _client import InProcess
    from flask import Flask

    from ciba_middleware.flask import CibaMiddleware

    app = Flask(__name__)
    app.config.update(CIBA_STORE_URL="memory://", CIBA_TOKENS=GRANTS, CIBA_SERVICE_ID=SERVICE, CIBA_AUDIT_LOG="off")
    CibaMiddleware(app, observers=[observer])
    return InProcess(app)


def _asgi_client(observer: Any) -> Any:
    from _client import Answer
    from test_asgi import call, http_scope

    from ciba_middleware import StaticTokenVerifier
    from ciba_middleware.asgi import BackchannelFailMiddleware, not_found_app

    middleware = BackchannelFailMiddleware(
        not_found_app, store=store_from_url("memory://"), verifier=StaticTokenVerifier(GRANTS), observers=[observer]
    )

    class Client:
        def request(self, method: str, path: str, *, headers: dict[str, str], body: bytes) -> Answer:
            scope = http_scope(path, method, {**headers, "Content-Length": str(len(body))}, client=("10.0.0.1", 5))
            sent = call(middleware, scope, [body])
            head = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
            return Answer(sent[0]["status"], head, sent[1]["body"])

    return Client()


def _django_client(observer: Any) -> Any:
    from _client import DjangoTestClient

    from ciba_middleware.django import state

    client = DjangoTestClient({"STORE_URL": "memory://", "TOKENS": GRANTS, "SERVICE_ID": SERVICE, "AUDIT_LOG": "off"})
    state().api.observers = (observer,)
    return client


IN_PROCESS = {"wsgi": _wsgi_client, "asgi": _asgi_client, "django": _django_client, "flask": _flask_client}


@pytest.mark.parametrize("kind", list(IN_PROCESS))
def test_what_every_adapter_hands_the_core(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request ID and the caller's traceparent reach the call's event."""
    for name in [n for n in __import__("os").environ if n.startswith("CIBA_")]:
        monkeypatch.delenv(name)
    events: list[Any] = []
    client = IN_PROCESS[kind](events.append)
    try:
        headers = {**BEARER, "Content-Type": "application/json", "Request-Id": "r-1", "traceparent": TRACEPARENT}
        answer = client.request("POST", V3, headers=headers, body=b'{"reason":"ACCESS_DENIED"}')
    finally:
        getattr(client, "close", lambda: None)()
    assert answer.status == 200
    (event,) = events
    assert (event.request_id, event.traceparent, event.method, event.route) == ("r-1", TRACEPARENT, "POST", "v3")


def test_a_fail_api_that_is_not_configured_answers_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Django (a bad CIBA_MIDDLEWARE) and ASGI (built without a lifespan): the same clean 500,
    and every other path served."""
    from _client import DjangoTestClient
    from test_asgi import call, http_scope

    from ciba_middleware.adapter import unconfigured
    from ciba_middleware.asgi import _Application

    for name in [n for n in __import__("os").environ if n.startswith("CIBA_")]:
        monkeypatch.delenv(name)
    expected = unconfigured()
    django = DjangoTestClient({"TOKENS": "[]"})
    try:
        answer = django.request("POST", V3, headers={**BEARER, "Content-Type": "application/json"}, body=b"{}")
        assert (answer.status, answer.body) == (500, expected.body)
        assert django.request("GET", "/echo").status == 200
    finally:
        django.close()
    monkeypatch.setenv("CIBA_TOKENS", "[]")
    sent = call(_Application(), http_scope(V3, headers=BEARER))
    assert (sent[0]["status"], sent[1]["body"]) == (500, expected.body)


# -- the rules of the base, one by one ------------------------------------------------------------


def _request(**fields: Any) -> Any:
    from ciba_middleware.core import Request, Route
    from ciba_middleware.request import Body

    return Request(Route("v3", SERVICE), "POST", "", Body("", "", lambda n: b""), **fields)


@pytest.mark.parametrize(
    ("fields", "public_url", "url"),
    [
        pytest.param({"host": "as.example:8443", "path": V3}, "", f"http://as.example:8443{V3}", id="host"),
        pytest.param({"server": ("srv", "80"), "path": V3}, "", f"http://srv{V3}", id="default-port"),
        pytest.param({"server": ("srv", 443), "scheme": "https", "path": V3}, "", f"https://srv{V3}", id="https"),
        pytest.param({"server": ("srv", 8000), "path": V3}, "", f"http://srv:8000{V3}", id="other-port"),
        pytest.param({"host": "h", "root": "/m", "path": "/api/\xc3\xbc1"}, "", "http://h/m/api/%C3%BC1", id="bytes"),
        pytest.param({"host": "evil.example", "path": V3}, "https://as.example.com", f"https://as.example.com{V3}",
                     id="public-url"),
    ],
)  # fmt: skip
def test_request_url_is_one_rule(fields: dict[str, Any], public_url: str, url: str) -> None:
    from ciba_middleware.core import request_url

    assert request_url(_request(**fields), public_url) == url


@pytest.mark.parametrize(
    "value",
    ["as.example.com", "ftp://as.example.com", "https://as.example.com/", "https://as.example.com?x=1",
     "https://as.example.com#f", "https://user@as.example.com", "https://as.example.com:99999", "https://"],
)  # fmt: skip
def test_a_public_url_that_cannot_be_one_is_refused(value: str) -> None:
    from ciba_middleware import ConfigurationError, Settings

    with pytest.raises(
        ConfigurationError, match="^" + re.escape("CIBA_PUBLIC_URL must look like https://as.example.com")
    ):
        Settings.from_mapping({"CIBA_TOKENS": json.dumps(GRANTS), "CIBA_PUBLIC_URL": value})


def test_flask_refuses_a_ciba_key_that_is_not_a_setting() -> None:
    from flask import Flask

    from ciba_middleware import ConfigurationError
    from ciba_middleware.flask import EXTENSION_KEY, CibaMiddleware

    app = Flask(__name__)
    app.config.update(CIBA_TOKENS=GRANTS, CIBA_SERVICE_ID=SERVICE, CIBA_TOKEN="typo")
    with pytest.raises(
        ConfigurationError, match=re.escape("app.config has CIBA_* keys that are not settings: CIBA_TOKEN")
    ):
        CibaMiddleware(app)
    assert EXTENSION_KEY not in app.extensions
