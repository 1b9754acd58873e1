"""The applications the benchmarks compare, each importable by gunicorn.

``application`` is chosen by ``BENCH_APP`` (one of :data:`APPS`), so every variant runs
under the same server with the same settings::

    BENCH_APP=floor gunicorn benchmarks.apps:application

The variants:

``flask_bare`` / ``flask_wrapped``
    A minimal Flask app, alone and with the middleware in front (``app.wsgi_app =
    BackchannelFailMiddleware(app.wsgi_app, ...)``, as the docs recommend). Requests to
    ``/hello`` pass through: the cost measured is the middleware's pass-through check.
``floor``
    A raw WSGI app that reads the same JSON body, parses it and returns a fixed JSON answer
    with the same headers: what any Python implementation of the endpoint costs at least.
``defaults``
    What a user runs: ``from_env()`` (``ciba_middleware.wsgi:application``), configured
    only by the ``CIBA_*`` variables of the environment: the audit log on (its lines go
    to the server's stderr, the log file of the run), the store of ``CIBA_STORE_URL``.
``fail``
    The fail API (:class:`BackchannelFailMiddleware` around a 404 app, no observers) with
    the store named by ``CIBA_STORE_URL`` (``memory://`` by default).
``flask_route``
    The same endpoint written by hand as a plain Flask route, with the same checks
    (bearer token by digest, content type, JSON object, field types, reason, RFC 6749
    characters in errorDescription / errorUri, ticket deleted from the same kind of store).
``floor_redis`` / ``floor_postgresql``
    References, not products: the raw floor plus the one round trip a fail call makes to
    its store, done the cheapest way there is and nothing else: for Redis the store's own
    Lua delete, pre-packed, over a bare socket; for PostgreSQL the store's own DELETE,
    prepared, on one psycopg connection (no pool, no watchdog). The store is named by
    ``BENCH_STORE_URL``, in the form of the store's URL. How close these come to the floor
    is the ceiling, on this machine, of any fail API that waits for its store's answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request

from ciba_middleware import BackchannelFailMiddleware, StaticTokenVerifier, from_env, sha256_hex
from ciba_middleware.config import not_found_app
from ciba_middleware.stores import TicketStore, store_from_url

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SERVICE = "715948317"
#: A bench-only token, never a real secret.
TOKEN = "bench-token-715948317-Zq3x"
GRANTS = [{"service": SERVICE, "token_sha256": sha256_hex(TOKEN)}]
FAIL_PATH = f"/api/{SERVICE}/backchannel/authentication/fail"
HEALTH_PATH = "/healthz"


def defaults_env(store_url: str, **more: str) -> dict[str, str]:
    """The environment of a user who set only CIBA_TOKENS (and the store), plus ``more``."""
    return {"CIBA_TOKENS": json.dumps(GRANTS), "CIBA_STORE_URL": store_url, **more}


HELLO_PATH = "/hello"

_HEADERS = [
    ("Content-Type", "application/json;charset=UTF-8"),
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
]


def flask_hello() -> Flask:
    """The minimal Flask app of the pass-through comparison."""
    app = Flask("bench_hello")

    @app.get(HELLO_PATH)
    def hello() -> str:
        return "Hello, World!"

    @app.get("/__ready__")
    def ready() -> str:
        return "ok"

    return app


def flask_wrapped(store: TicketStore | None = None) -> Flask:
    app = flask_hello()
    app.wsgi_app = BackchannelFailMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        store=store or store_from_url("memory://"),
        verifier=StaticTokenVerifier(GRANTS),
    )
    return app


_SUCCESS = "[A185001] Successfully generated an error response for the backchannel authentication request."
_FLOOR_BODY = json.dumps(
    {
        "resultCode": "A185001",
        "resultMessage": _SUCCESS,
        "action": "FORBIDDEN",
        "responseContent": '{"error":"access_denied"}',
    },
    separators=(",", ":"),
).encode()
_FLOOR_HEADERS = [*_HEADERS, ("Content-Length", str(len(_FLOOR_BODY)))]


def floor(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Parse the JSON body, answer a fixed JSON: the least any implementation does."""
    length = environ.get("CONTENT_LENGTH")
    if length:
        json.loads(environ["wsgi.input"].read(int(length)))
    start_response("200 OK", _FLOOR_HEADERS)
    return [_FLOOR_BODY]


def _floor_answer(start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", _FLOOR_HEADERS)
    return [_FLOOR_BODY]


def floor_redis() -> WSGIApplication:
    """The floor plus one EVALSHA of the Redis store's delete script, over a bare socket."""
    import socket
    from urllib.parse import parse_qs, unquote, urlsplit

    from ciba_middleware.stores.redis import _DELETE_SCRIPT, DEFAULT_KEY_PREFIX

    url = urlsplit(os.environ["BENCH_STORE_URL"])
    prefix = parse_qs(url.query).get("key_prefix", [DEFAULT_KEY_PREFIX])[0].encode()
    service = SERVICE.encode()
    state: dict[str, Any] = {}

    def command(*parts: bytes) -> bytes:
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

    def call(sock: socket.socket, data: bytes) -> bytes:
        sock.sendall(data)
        reply = sock.recv(4096)
        while not reply.endswith(b"\r\n"):
            reply += sock.recv(4096)
        if reply[:1] == b"-":
            raise RuntimeError(reply.decode())
        return reply

    def connect() -> tuple[socket.socket, bytes]:
        # After the fork: each worker has its own connection, as the store's pool would.
        sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if url.password:
            user = [unquote(url.username).encode()] if url.username else []
            call(sock, command(b"AUTH", *user, unquote(url.password).encode()))
        call(sock, command(b"SELECT", (url.path.strip("/") or "0").encode()))
        sha = call(sock, command(b"SCRIPT", b"LOAD", _DELETE_SCRIPT.encode())).split(b"\r\n")[1]
        state["pid"] = os.getpid()
        return sock, sha

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if state.get("pid") != os.getpid():
            state["sock"], state["sha"] = connect()
        fields = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        key = prefix + fields["ticket"].encode()
        call(state["sock"], command(b"EVALSHA", state["sha"], b"1", key, service))
        return _floor_answer(start_response)

    return app


def floor_postgresql() -> WSGIApplication:
    """The floor plus the PostgreSQL store's DELETE, prepared, on one psycopg connection."""
    from urllib.parse import parse_qs, urlsplit

    import psycopg

    url = urlsplit(os.environ["BENCH_STORE_URL"])
    table = parse_qs(url.query).get("table", ["ciba_tickets"])[0]
    # The store's own statement (stores/postgresql.py), on the bench's own table.
    delete = f'DELETE FROM "{table}" WHERE ticket = %s AND service = %s AND expires_at > now()'.encode()
    conninfo = f"postgresql://{url.netloc}{url.path}"
    state: dict[str, Any] = {}

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if state.get("pid") != os.getpid():
            state["conn"] = psycopg.connect(conninfo, autocommit=True)
            state["pid"] = os.getpid()
        fields = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        state["conn"].execute(delete, (fields["ticket"], SERVICE), prepare=True)
        return _floor_answer(start_response)

    return app


def fail_api_around(app: WSGIApplication, store: TicketStore | None = None) -> BackchannelFailMiddleware:
    return BackchannelFailMiddleware(
        app, store=store or store_from_url("memory://"), verifier=StaticTokenVerifier(GRANTS)
    )


def fail_api(store: TicketStore | None = None) -> BackchannelFailMiddleware:
    return BackchannelFailMiddleware(
        not_found_app,
        store=store or store_from_url(os.environ.get("CIBA_STORE_URL", "memory://")),
        verifier=StaticTokenVerifier(GRANTS),
    )


# -- the endpoint written by hand as a Flask route ----------------------------------------

_REASONS = {
    "ACCESS_DENIED": "FORBIDDEN",
    "EXPIRED_LOGIN_HINT_TOKEN": "BAD_REQUEST",
    "INVALID_BINDING_MESSAGE": "BAD_REQUEST",
    "INVALID_TARGET": "BAD_REQUEST",
    "INVALID_USER_CODE": "BAD_REQUEST",
    "MISSING_USER_CODE": "BAD_REQUEST",
    "SERVER_ERROR": "INTERNAL_SERVER_ERROR",
    "UNAUTHORIZED_CLIENT": "BAD_REQUEST",
    "UNKNOWN_USER_ID": "BAD_REQUEST",
}
_DESCRIPTION = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")
_URI = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_TICKET = re.compile(r"[A-Za-z0-9_-]{32,128}")
_TOKENS = {hashlib.sha256(TOKEN.encode()).digest(): {SERVICE}}


def flask_route(store: TicketStore | None = None) -> Flask:
    """The fail endpoint as a user would write it in Flask, with the same checks."""
    app = Flask("bench_route")
    tickets = store or store_from_url(os.environ.get("CIBA_STORE_URL", "memory://"))

    def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        body = {"resultCode": code, "resultMessage": f"[{code}] {message}"}
        response = Response(json.dumps(body), status, headers, content_type="application/json;charset=UTF-8")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    @app.post("/api/<service>/backchannel/authentication/fail")
    def fail(service: str) -> Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        services = _TOKENS.get(hashlib.sha256(token.encode()).digest()) if scheme.lower() == "bearer" else None
        if services is None:
            return error(401, "A185211", "the access token is not valid.", {"WWW-Authenticate": "Bearer"})
        if not any(hmac.compare_digest(service, s) for s in services):
            return error(403, "A185212", "the credentials do not cover the service.")
        if request.mimetype != "application/json":
            return error(415, "A185203", "use application/json.")
        data: Any = request.get_json(silent=True)
        if not isinstance(data, dict):
            return error(400, "A185201", "the body must be a JSON object.")
        fields = {}
        for name in ("ticket", "reason", "errorDescription", "errorUri"):
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                return error(400, "A185202", f"'{name}' must be a string or null.")
            fields[name] = value
        reason = fields["reason"] or "SERVER_ERROR"
        action = _REASONS.get(reason)
        if action is None:
            return error(400, "A185202", "'reason' is not a known reason.")
        description, uri = fields["errorDescription"], fields["errorUri"]
        if description is not None and not _DESCRIPTION.fullmatch(description):
            return error(400, "A185202", "'errorDescription' has characters RFC 6749 does not allow.")
        if uri is not None and not _URI.fullmatch(uri):
            return error(400, "A185202", "'errorUri' has characters RFC 6749 does not allow.")
        ticket = fields["ticket"]
        if ticket and _TICKET.fullmatch(ticket):
            tickets.delete(service, ticket)
        content = {"error": reason.lower()}
        if description is not None:
            content["error_description"] = description
        if uri is not None:
            content["error_uri"] = uri
        body = {
            "resultCode": "A185001",
            "resultMessage": _SUCCESS,
            "action": action,
            "responseContent": json.dumps(content, separators=(",", ":")),
        }
        response = Response(json.dumps(body, separators=(",", ":")), 200, content_type="application/json;charset=UTF-8")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    @app.get("/__ready__")
    def ready() -> str:
        return "ok"

    return app


APPS: dict[str, Callable[[], WSGIApplication]] = {
    "flask_bare": flask_hello,
    "flask_wrapped": flask_wrapped,
    "floor": lambda: floor,
    "fail": fail_api,
    "defaults": lambda: from_env(),
    "flask_route": flask_route,
    "floor_redis": floor_redis,
    "floor_postgresql": floor_postgresql,
}


def _from_env() -> WSGIApplication | None:
    name = os.environ.get("BENCH_APP")
    # Not one of these: a variant of benchmarks.asgi_apps or django_apps, which import this module.
    if not name or name not in APPS:
        return None
    return APPS[name]()


application = _from_env()


# -- a reference: the same work, written flat ---------------------------------------------


def flat_checks(store: TicketStore | None = None) -> WSGIApplication:
    """The fail API's work for the benchmark's requests, in one flat function.

    Not a product path and not a baseline: a reference for docs/performance.md. It does
    the same per-call work as the middleware on the happy path (route, method, Bearer
    format, token digest lookup, service covered, media type, Content-Length, body, JSON
    with the duplicate-member hook, field types, reason, errorDescription characters,
    ticket format, store delete, pre-encoded answer) and skips everything else (errors,
    observers, API v2, errorUri, structure). How close it gets to the raw floor is the
    ceiling of any structured implementation of these checks in Python.
    """
    from ciba_middleware import request as checks
    from ciba_middleware import response
    from ciba_middleware.reasons import Reason
    from ciba_middleware.stores.base import well_formed

    tickets = store or store_from_url("memory://")
    token_re = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
    digests = {hashlib.sha256(TOKEN.encode()).digest(): frozenset((SERVICE,))}
    routes = {FAIL_PATH: SERVICE}
    plain = {
        r: ((*_HEADERS, ("Content-Length", str(len(response.success_json(r))))), response.success_json(r))
        for r in Reason
    }
    media_type = checks._media_type
    scan = checks._scan_json
    reasons = checks._REASONS
    description_re = checks._DESCRIPTION
    sha256 = hashlib.sha256

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        service = routes[environ["PATH_INFO"]]
        if environ.get("REQUEST_METHOD") != "POST":
            raise ValueError("not POST")
        scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme != "Bearer" or not token_re.fullmatch(credentials):
            raise ValueError("not a bearer token")
        services = digests.get(sha256(credentials.encode("utf-8", "surrogatepass")).digest())
        if services is None or service not in services:
            raise ValueError("not allowed")
        is_json, charset = media_type(environ.get("CONTENT_TYPE", ""))
        length = environ.get("CONTENT_LENGTH", "")
        if not is_json or not length.isdigit() or int(length) > 16384:
            raise ValueError("not a JSON body")
        body = environ["wsgi.input"].read(int(length))
        text = body.decode(charset)
        fields, end = scan(text, 0)
        if end != len(text) or text[:1] != "{":
            raise ValueError("not one JSON object")
        get = fields.get
        ticket, reason, description = get("ticket"), get("reason"), get("errorDescription")
        if ticket is not None and type(ticket) is not str:
            raise ValueError("ticket")
        found = reasons[reason] if reason is not None else Reason.SERVER_ERROR
        if description is not None and (type(description) is not str or not description_re.fullmatch(description)):
            raise ValueError("errorDescription")
        if ticket and well_formed(ticket):
            tickets.delete(service, ticket)
        if description is None:
            headers, answer = plain[found]
            start_response("200 OK", list(headers))
            return [answer]
        answer = response.success_json(found, description)
        start_response("200 OK", [*_HEADERS, ("Content-Length", str(len(answer)))])
        return [answer]

    return app
