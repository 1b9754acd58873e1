"""What the hardening tests share: a sentinel app, a raw WSGI call, and the contract's checks.

The middleware is called as a plain WSGI callable with a hand-built environ, so a test can
send what no HTTP client would (bad Content-Length, latin-1 paths, NUL in headers) and see
exactly what reaches ``start_response``.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from conftest import (
    API_HEADERS,
    API_SECRET,
    GRANTS,
    ORG_TOKEN,
    OTHER_SERVICE,
    OTHER_TOKEN,
    SERVICE,
    SERVICE_TOKEN,
)
from conftest import basic as basic_header

from ciba_middleware import BackchannelFailMiddleware, StaticTokenVerifier
from ciba_middleware.stores.memory import MemoryTicketStore

SUFFIX = "/backchannel/authentication/fail"
STATUSES = {200, 400, 401, 403, 405, 413, 415, 500}
# Ours, and Authlete's own where it shows one: A001202 (no Authorization header), A001101.
RESULT_CODE = re.compile(r"A185001|A1851[0-9]{2}|A1852[0-9]{2}|A001202|A001101")
ACTIONS = {"INTERNAL_SERVER_ERROR", "BAD_REQUEST", "FORBIDDEN"}
CONTRACT_HEADERS = API_HEADERS
# PEP 3333 / RFC 9110: a header value is latin-1 text without CR, LF, NUL or other controls.
_HEADER_VALUE = re.compile(r"[\x20-\x7e\x80-\xff\t]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

BEARER_OWN = f"Bearer {SERVICE_TOKEN}"
BEARER_OTHER = f"Bearer {OTHER_TOKEN}"
BEARER_ORG = f"Bearer {ORG_TOKEN}"


def basic(key: str, secret: str) -> str:
    """The Basic header's value alone: these tests build environs, not requests."""
    return basic_header(key, secret)["Authorization"]


BASIC_OWN = basic(SERVICE, API_SECRET)
BASIC_OTHER = basic(OTHER_SERVICE, "api-secret-42")


def is_route(path: str, prefix: str = "") -> bool:
    """The contract's two routes, written independently of the middleware's matcher."""
    if not path.startswith(prefix + "/api/") or not path.endswith(SUFFIX):
        return False
    middle = path[len(prefix) + len("/api") : -len(SUFFIX)]
    return middle == "" or (middle.startswith("/") and len(middle) > 1 and "/" not in middle[1:])


class SentinelApp:
    """A wrapped app that records what reached it and returns an iterable it can recognise."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], Any]] = []
        self.returned: list[object] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls.append((environ, start_response))
        start_response("299 Sentinel", [("X-Sentinel", "yes")])
        result = [b"sentinel"]
        self.returned.append(result)
        return result


def middleware(app: Any = None, *, store: Any = None, prefix: str = "", **options: Any) -> BackchannelFailMiddleware:
    return BackchannelFailMiddleware(
        app if app is not None else SentinelApp(),
        store=store if store is not None else MemoryTicketStore(),
        verifier=StaticTokenVerifier(GRANTS),
        prefix=prefix,
        **options,
    )


def environ(
    method: str = "POST",
    path: str = f"/api/{SERVICE}{SUFFIX}",
    *,
    body: bytes = b"",
    content_type: str | None = "application/json",
    authorization: str | None = BEARER_OWN,
    content_length: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if content_type is not None:
        env["CONTENT_TYPE"] = content_type
    env["CONTENT_LENGTH"] = str(len(body)) if content_length is None else content_length
    if authorization is not None:
        env["HTTP_AUTHORIZATION"] = authorization
    env.update(extra or {})
    return env


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    result: Iterable[bytes] = field(repr=False, default=())
    start_response: Any = field(repr=False, default=None)

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, f"header {name} sent {len(values)} times: {self.headers}"
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def call(app: Any, env: dict[str, Any]) -> Answer:
    """Call a WSGI app the way a server does: start_response once, iterate, close."""
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        assert not started or exc_info is not None, "start_response called twice without exc_info"
        started.append((status, headers))
        return lambda data: None

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    assert len(started) == 1, f"start_response called {len(started)} times"
    status, headers = started[0]
    return Answer(int(status.split(" ", 1)[0]), list(headers), body, result, start_response)


def check_contract(answer: Answer, method: str = "POST") -> dict[str, Any]:
    """Everything the contract says about any answer of the middleware's routes."""
    assert answer.status in STATUSES, answer
    for name, value in answer.headers:
        assert type(name) is str
        assert _HEADER_NAME.fullmatch(name), f"bad header name {name!r}"
        assert type(value) is str
        assert _HEADER_VALUE.fullmatch(value), f"bad header value {name}: {value!r}"
    for name, value in CONTRACT_HEADERS.items():
        assert answer.header(name) == value, (name, answer.headers)
    request_id = answer.header("Request-Id")
    assert request_id is not None
    assert re.fullmatch(r"[A-Za-z0-9._:\-]{1,128}", request_id), request_id
    length = answer.header("Content-Length")
    assert length is not None
    assert length.isdigit()
    if method == "HEAD":
        assert answer.body == b""
        return {}
    assert int(length) == len(answer.body)
    data = json.loads(answer.body.decode("ascii"))
    assert isinstance(data, dict)
    code = data["resultCode"]
    assert RESULT_CODE.fullmatch(code), code
    assert data["resultMessage"].startswith(f"[{code}] ")
    assert (code == "A185001") == (answer.status == 200)
    if answer.status == 401:
        challenge = answer.header("WWW-Authenticate")
        assert challenge is not None
        assert challenge.split(" ", 1)[0] in ("Bearer", "Basic", "DPoP")
    else:
        assert answer.header("WWW-Authenticate") is None
    if answer.status == 405:
        assert answer.header("Allow") == "POST"
    if "action" in data:
        assert data["action"] in ACTIONS
        content = json.loads(data["responseContent"])
        assert isinstance(content, dict)
        assert isinstance(content["error"], str)
        assert set(data) == {"resultCode", "resultMessage", "action", "responseContent"}
    else:
        assert answer.status in (401, 403, 405), answer
        assert set(data) == {"resultCode", "resultMessage"}
    return data


# -- stores under test ----------------------------------------------------------------

STORE_KINDS = ["sqlite", "redis", "postgresql"]


def report(name: str, **figures: Any) -> None:
    """Append one JSON line of figures to ``$CIBA_HARDENING_REPORT`` when it is set.

    ``benchmarks/hardening/run.py`` sets it to collect the figures of docs/reliability.md;
    a plain test run writes nothing.
    """
    target = os.environ.get("CIBA_HARDENING_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": name, **figures}, sort_keys=True) + "\n")
