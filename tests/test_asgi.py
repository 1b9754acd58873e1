"""The native ASGI middleware: pass-through, bodies, the event loop, views, configuration.

The contract's tables run through it under uvicorn in test_contract.py; here, what is
particular to ASGI, in process (plain coroutines, no framework) and under real uvicorn.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from _dpop import BOUND_TOKEN, RSA, proof
from _dpop import grants as dpop_grants
from conftest import GRANTS, ROOT, SERVICE, SERVICE_TOKEN, LiveServer, unique_name
from test_passthrough import PASSED_THROUGH
from test_request_id import REQUEST_ID_CASES

from ciba_middleware import BackchannelFail, ConfigurationError, FailEvent, StaticTokenVerifier, StoreError
from ciba_middleware.asgi import BackchannelFailMiddleware, from_env, not_found_app
from ciba_middleware.core import FailApi, Request, Route
from ciba_middleware.request import Body
from ciba_middleware.stores import store_from_url
from ciba_middleware.stores.memory import MemoryTicketStore

V3 = f"/api/{SERVICE}/backchannel/authentication/fail"
BEARER = f"Bearer {SERVICE_TOKEN}"


class RecordingApp:
    """An ASGI app that records what it was called with and answers 418."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], Any, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append((scope, receive, send))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 418, "headers": []})
            await send({"type": "http.response.body", "body": b"teapot"})


def wrap(app: Any, **options: Any) -> BackchannelFailMiddleware:
    options.setdefault("store", store_from_url("memory://"))
    return BackchannelFailMiddleware(app, verifier=StaticTokenVerifier(GRANTS), **options)


def http_scope(path: str, method: str = "POST", headers: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    raw = [(name.lower().encode(), value.encode("latin-1")) for name, value in (headers or {}).items()]
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": raw, **extra}


def call(middleware: Any, scope: dict[str, Any], chunks: list[bytes] | None = None) -> list[dict[str, Any]]:
    """Run one request; ``chunks`` are the body's http.request messages (default: none)."""
    chunks = chunks or [b""]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


def answer(sent: list[dict[str, Any]]) -> tuple[int, dict[bytes, bytes], Any]:
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    return sent[0]["status"], dict(sent[0]["headers"]), json.loads(sent[1]["body"])


# -- pass-through -----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), PASSED_THROUGH)
def test_other_requests_reach_the_app_untouched(method: str, path: str) -> None:
    app = RecordingApp()
    scope = http_scope(path, method, {"Authorization": "Bearer x"})
    snapshot = json.dumps(scope, default=repr)
    sent = call(wrap(app), scope)
    assert len(app.calls) == 1
    assert app.calls[0][0] is scope
    assert json.dumps(scope, default=repr) == snapshot
    assert sent[0]["status"] == 418


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
def test_other_scopes_reach_the_app_untouched(kind: str) -> None:
    app = RecordingApp()
    scope = {"type": kind, "path": V3, "headers": []}

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: dict[str, Any]) -> None:
        pass

    asyncio.run(wrap(app)(scope, receive, send))
    assert app.calls == [(scope, receive, send)]
    assert app.calls[0][0] is scope


def test_root_path_is_respected() -> None:
    """Mounted under /authlete, the routes are matched below it; the app sees the rest as it came."""
    app = RecordingApp()
    middleware = wrap(app)
    headers = {"Authorization": BEARER, "Content-Type": "application/json"}
    scope = http_scope(f"/authlete{V3}", headers=headers, root_path="/authlete")
    status, _, body = answer(call(middleware, scope, [b'{"reason":"ACCESS_DENIED"}']))
    assert (status, body["action"]) == (200, "FORBIDDEN")
    # A server that leaves root_path out of path (before ASGI said otherwise) works too.
    status, _, body = answer(call(middleware, http_scope(V3, headers=headers, root_path="/authlete"), [b"{}"]))
    assert status == 200
    # /authletex is not under /authlete.
    call(middleware, http_scope(f"/authletex{V3}", headers=headers, root_path="/authlete"))
    assert len(app.calls) == 1
    assert not wrap(app, prefix="/authlete").api.route("/api/backchannel/authentication/fail")


def test_a_non_ascii_service_id_is_matched_as_wsgi_would() -> None:
    store = MemoryTicketStore()
    middleware = BackchannelFailMiddleware(
        RecordingApp(), store=store, verifier=StaticTokenVerifier([{"service": "caf\u00e9", "token": "t" * 32}])
    )
    ticket = store.issue("caf\u00e9")
    headers = {"Authorization": "Bearer " + "t" * 32, "Content-Type": "application/json"}
    sent = call(middleware, http_scope("/api/caf\u00e9/backchannel/authentication/fail", headers=headers),
                [json.dumps({"ticket": ticket}).encode()])  # fmt: skip
    assert answer(sent)[0] == 200
    assert not store.exists("caf\u00e9", ticket)


# -- bodies -----------------------------------------------------------------------------------


def test_a_chunked_body_is_read_to_its_end() -> None:
    store = MemoryTicketStore()
    ticket = store.issue(SERVICE)
    body = json.dumps({"ticket": ticket, "reason": "UNKNOWN_USER_ID"}).encode()
    headers = {"Authorization": BEARER, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    sent = call(wrap(RecordingApp(), store=store), http_scope(V3, headers=headers), [body[:5], b"", body[5:]])
    assert answer(sent)[2]["action"] == "BAD_REQUEST"
    assert not store.exists(SERVICE, ticket)


def test_a_chunked_body_over_the_limit_is_413_and_not_read_past_it() -> None:
    middleware = wrap(RecordingApp(), max_body_bytes=100)
    chunks = [b"x" * 60] * 10
    headers = {"Authorization": BEARER, "Content-Type": "application/json"}
    sent = call(middleware, http_scope(V3, headers=headers), chunks)
    status, _, body = answer(sent)
    assert (status, body["resultCode"]) == (413, "A185204")
    assert body["resultMessage"].endswith("the body is over the limit of 100 bytes.")


def test_a_content_length_over_the_limit_is_413_without_reading() -> None:
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        received.append(1)
        return {"type": "http.request", "body": b"x" * 200}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = http_scope(
        V3, headers={"Authorization": BEARER, "Content-Type": "application/json", "Content-Length": "200"}
    )
    asyncio.run(wrap(RecordingApp(), max_body_bytes=100)(scope, receive, send))
    assert received == []
    assert answer(sent)[0] == 413


def test_a_client_that_leaves_gets_nothing_and_deletes_nothing() -> None:
    store = MemoryTicketStore()
    ticket = store.issue(SERVICE)
    scope = http_scope(V3, headers={"Authorization": BEARER, "Content-Type": "application/json"})
    messages = [{"type": "http.request", "body": json.dumps({"ticket": ticket}).encode()[:10], "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(wrap(RecordingApp(), store=store)(scope, receive, send))
    assert sent == []
    assert store.exists(SERVICE, ticket)


def test_repeated_headers_are_joined_as_wsgi_joins_them() -> None:
    scope = http_scope(V3, headers={"Authorization": BEARER, "Content-Type": "application/json"})
    scope["headers"].append((b"content-length", b"2"))
    scope["headers"].append((b"content-length", b"2"))
    status, _, body = answer(call(wrap(RecordingApp()), scope, [b"{}"]))
    assert (status, body["resultCode"]) == (400, "A185201")
    assert "Content-Length '2,2' is not a number of bytes." in body["resultMessage"]


@pytest.mark.parametrize("container", [tuple, iter], ids=["tuple", "iterator"])
def test_headers_may_be_any_iterable(container: Any) -> None:
    scope = http_scope(V3, headers={"Authorization": BEARER, "Content-Type": "application/json"})
    scope["headers"] = container(scope["headers"])
    status, _, body = answer(call(wrap(RecordingApp()), scope, [b'{"reason":"ACCESS_DENIED"}']))
    assert (status, body["action"]) == (200, "FORBIDDEN")


def test_a_repeated_header_the_api_does_not_read_changes_nothing() -> None:
    scope = http_scope(V3, headers={"Authorization": BEARER, "Content-Type": "application/json"})
    scope["headers"] += [(b"accept", b"application/json"), (b"accept", b"*/*")]
    status, _, body = answer(call(wrap(RecordingApp()), scope, [b'{"reason":"ACCESS_DENIED"}']))
    assert (status, body["action"]) == (200, "FORBIDDEN")


@pytest.mark.parametrize(
    ("length", "read"),
    [("100", True), ("99", True), ("050", True), ("101", False), ("0101", False), ("9" * 30, False)],
)
def test_a_content_length_is_compared_with_the_limit_before_the_body_is_read(length: str, read: bool) -> None:
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        received.append(1)
        return {"type": "http.request", "body": b"{}"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = {"Authorization": BEARER, "Content-Type": "application/json", "Content-Length": length}
    asyncio.run(wrap(RecordingApp(), max_body_bytes=100)(http_scope(V3, headers=headers), receive, send))
    assert received == ([1] if read else [])
    status, _, body = answer(sent)
    # Within the limit, the 2 bytes sent are fewer than announced: a 400 of its own.
    assert status == (400 if read else 413), body


# -- what is sent back ------------------------------------------------------------------------

# Requests of every kind of answer: each reason's fixed answer, one with a description (a
# Content-Length of its own), errors with and without a WWW-Authenticate or Allow header.
ANSWERS = [
    pytest.param("POST", BEARER, "application/json", b'{"reason":"ACCESS_DENIED"}', id="plain"),
    pytest.param("POST", BEARER, "application/json", b'{"reason":"UNKNOWN_USER_ID"}', id="another-reason"),
    pytest.param("POST", BEARER, "application/json", b'{"reason":"ACCESS_DENIED","errorDescription":"No."}',
                 id="description"),
    pytest.param("POST", "", "application/json", b"{}", id="no-credentials"),
    pytest.param("POST", BEARER, "text/plain", b"{}", id="media-type"),
    pytest.param("POST", BEARER, "application/json", b"", id="no-body"),
    pytest.param("POST", BEARER, "application/json", b"x" * 20000, id="too-large"),
    pytest.param("GET", BEARER, "", b"", id="method"),
    pytest.param("HEAD", BEARER, "", b"", id="head"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "authorization", "content_type", "payload"), ANSWERS)
def test_the_answer_is_the_cores_as_asgi_sends_it(
    method: str, authorization: str, content_type: str, payload: bytes
) -> None:
    """Status, headers (names in lower case, bytes) and body exactly as the core answered, each time."""
    api = FailApi(store=MemoryTicketStore(), verifier=StaticTokenVerifier(GRANTS))
    middleware = BackchannelFailMiddleware.around(RecordingApp(), api)
    headers = {"Authorization": authorization, "Content-Type": content_type, "Request-Id": f"case-{method}"}
    if payload:
        headers["Content-Length"] = str(len(payload))
    for _ in range(2):  # the first answer of its kind, then the same from the encoded headers
        sent = call(middleware, http_scope(V3, method, {k: v for k, v in headers.items() if v}), [payload])
        core = api.respond(
            Request(
                Route("v3", SERVICE),
                method,
                authorization,
                Body(content_type, headers.get("Content-Length", ""), io.BytesIO(payload).read, terminated=True),
                request_id=f"case-{method}",
            )
        )
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        assert sent[0]["status"] == core.status
        assert sent[0]["headers"] == [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in core.headers]
        assert sent[1]["body"] == core.body


def test_each_answer_has_a_header_list_of_its_own() -> None:
    middleware = wrap(RecordingApp())
    scope = {"Authorization": BEARER, "Content-Type": "application/json"}
    first = call(middleware, http_scope(V3, headers=scope), [b"{}"])
    first[0]["headers"].append((b"x-added-by-the-server", b"1"))
    second = call(middleware, http_scope(V3, headers=scope), [b"{}"])
    assert (b"x-added-by-the-server", b"1") not in second[0]["headers"]
    assert first[0]["headers"][:-2] == second[0]["headers"][:-1]  # all but the Request-Id (and the addition)


@pytest.mark.parametrize(("sent", "expected"), REQUEST_ID_CASES)
def test_which_request_id_an_answer_carries(sent: dict[str, str], expected: str | None) -> None:
    """As over WSGI (test_request_id.py): the caller's Request-Id, else its X-Request-Id, else a new one."""
    events: list[FailEvent] = []
    middleware = wrap(RecordingApp(), observers=[events.append])
    headers = {k: v.encode("utf-8").decode("latin-1") for k, v in sent.items()}
    scope = http_scope(V3, headers={"Authorization": BEARER, "Content-Type": "application/json", **headers})
    _, raw, _ = answer(call(middleware, scope, [b'{"reason":"ACCESS_DENIED"}']))
    got = raw[b"request-id"].decode("latin-1")
    if expected is None:
        assert re.fullmatch(r"[0-9a-f]{32}", got)
    else:
        assert got == expected
    (event,) = events
    assert event.request_id == got


# -- DPoP: the URL the request was sent to ----------------------------------------------------


def dpop_call(scope: dict[str, Any], htu: str) -> tuple[int, dict[bytes, bytes], Any]:
    store = MemoryTicketStore()
    middleware = BackchannelFailMiddleware(
        RecordingApp(), store=store, verifier=StaticTokenVerifier([*GRANTS, *dpop_grants(SERVICE)])
    )
    ticket = store.issue(SERVICE)
    scope["headers"] += [(b"authorization", f"DPoP {BOUND_TOKEN}".encode()), (b"dpop", proof(RSA, htu).encode()),
                         (b"content-type", b"application/json")]  # fmt: skip
    result = answer(call(middleware, scope, [json.dumps({"ticket": ticket, "reason": "ACCESS_DENIED"}).encode()]))
    assert store.exists(SERVICE, ticket) is (result[0] != 200)
    return result


@pytest.mark.parametrize(
    ("extra", "htu"),
    [
        pytest.param({"headers": [(b"host", b"api.example:8443")], "scheme": "https", "raw_path": V3.encode()},
                     f"https://api.example:8443{V3}", id="host"),
        pytest.param({"headers": [], "server": ("10.0.0.1", 8000)}, f"http://10.0.0.1:8000{V3}", id="no-host"),
        pytest.param({"headers": [(b"host", b"h")], "raw_path": V3.encode() + b"?x=1"}, f"http://h{V3}", id="query"),
        pytest.param({"headers": [(b"host", b"h")], "root_path": "/authlete", "path": f"/authlete{V3}",
                      "raw_path": f"/authlete{V3}".encode()}, f"http://h/authlete{V3}", id="mounted"),
        pytest.param({"headers": [(b"host", b"h")], "root_path": "/authlete", "path": f"/authlete{V3}"},
                     f"http://h/authlete{V3}", id="mounted-without-raw-path"),
    ],
)  # fmt: skip
def test_a_dpop_proof_is_checked_against_the_url_sent_to(extra: dict[str, Any], htu: str) -> None:
    scope = {"type": "http", "method": "POST", "path": V3, **extra}
    status, _, body = dpop_call(scope, htu)
    assert (status, body["action"]) == (200, "FORBIDDEN")


def test_a_dpop_proof_for_another_url_is_refused() -> None:
    scope = {"type": "http", "method": "POST", "path": f"/authlete{V3}", "root_path": "/authlete",
             "headers": [(b"host", b"h")], "raw_path": f"/authlete{V3}".encode()}  # fmt: skip
    status, raw, body = dpop_call(scope, f"http://h{V3}")  # the path below the mount is not the URL
    assert status == 401
    assert 'error="invalid_dpop_proof"' in raw[b"www-authenticate"].decode()
    assert "htu" in body["resultMessage"]


def test_an_empty_dpop_header_is_no_proof() -> None:
    scope = http_scope(V3, headers={"Authorization": f"DPoP {BOUND_TOKEN}", "DPoP": "",
                                    "Content-Type": "application/json"})  # fmt: skip
    middleware = BackchannelFailMiddleware(
        RecordingApp(), store=MemoryTicketStore(), verifier=StaticTokenVerifier(dpop_grants(SERVICE))
    )
    status, _, body = answer(call(middleware, scope, [b'{"reason":"ACCESS_DENIED"}']))
    assert status == 401
    assert "a DPoP proof header is required" in body["resultMessage"]


# -- the event loop ---------------------------------------------------------------------------


class SlowStore(MemoryTicketStore):
    """A store whose delete takes 0.3 s, like a store behind a slow network."""

    def delete(self, service_id: str, ticket: str) -> bool:
        time.sleep(0.3)
        return super().delete(service_id, ticket)


def test_a_slow_store_does_not_hold_the_event_loop() -> None:
    store = SlowStore()
    middleware = wrap(RecordingApp(), store=store)
    tickets = [store.issue(SERVICE) for _ in range(4)]
    ticks: list[float] = []

    async def one(ticket: str) -> list[dict[str, Any]]:
        messages = [{"type": "http.request", "body": json.dumps({"ticket": ticket}).encode()}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = http_scope(V3, headers={"Authorization": BEARER, "Content-Type": "application/json"})
        await middleware(scope, receive, send)
        return sent

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main() -> float:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        started = time.monotonic()
        results = await asyncio.gather(*(one(t) for t in tickets))
        elapsed = time.monotonic() - started
        stop.set()
        await tick
        assert all(answer(sent)[0] == 200 for sent in results)
        return elapsed

    elapsed = asyncio.run(main())
    # Four 0.3 s deletes side by side, not one after the other, and the loop kept ticking.
    assert elapsed < 1.0
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.15
    assert not any(store.exists(SERVICE, t) for t in tickets)


# -- for views: fail(), issue_ticket(), the exception handler ---------------------------------


def test_fail_and_issue_ticket_are_coroutines() -> None:
    store = MemoryTicketStore()
    middleware = wrap(RecordingApp(), store=store, service_id=SERVICE)

    async def main() -> None:
        ticket = await middleware.issue_ticket()
        assert store.exists(SERVICE, ticket)
        response = await middleware.fail(SERVICE, ticket, "ACCESS_DENIED")
        assert (response.action.value, response.response_content) == ("FORBIDDEN", '{"error":"access_denied"}')
        assert not store.exists(SERVICE, ticket)

    asyncio.run(main())


def test_the_handler_answers_the_client_and_deletes_the_ticket() -> None:
    store = MemoryTicketStore()
    middleware = wrap(RecordingApp(), store=store, service_id=SERVICE, server_error_status=503)

    async def main() -> None:
        ticket = await middleware.issue_ticket(ttl=60)
        reply = await middleware.exception_handler(None, BackchannelFail("UNKNOWN_USER_ID", ticket, "No such user"))
        assert (reply.status_code, reply.body) == (
            400,
            b'{"error":"unknown_user_id","error_description":"No such user"}',
        )
        assert not store.exists(SERVICE, ticket)
        reply = await middleware.exception_handler(None, BackchannelFail("SERVER_ERROR"))
        assert reply.status_code == 503
        with pytest.raises(KeyError):
            await middleware.exception_handler(None, KeyError("not ours"))

    asyncio.run(main())


def test_a_view_on_a_failing_store_gets_server_error() -> None:
    class BrokenStore(MemoryTicketStore):
        def delete(self, service_id: str, ticket: str) -> bool:
            raise StoreError("down")

    middleware = wrap(RecordingApp(), store=BrokenStore(), service_id=SERVICE)
    reply = asyncio.run(middleware.exception_handler(None, BackchannelFail("ACCESS_DENIED", "t" * 43)))
    assert (reply.status_code, reply.body) == (500, b'{"error":"server_error"}')


def test_the_service_of_views() -> None:
    # The grants cover three services: a view needs to be told which one.
    middleware = wrap(RecordingApp())
    with pytest.raises(ConfigurationError, match=r"service_id is not set and the grants do not name exactly one"):
        _ = middleware.service_id
    one = [{"service": "42", "token_sha256": "0" * 64}]
    alone = BackchannelFailMiddleware(RecordingApp(), store=MemoryTicketStore(), verifier=StaticTokenVerifier(one))
    assert alone.service_id == "42"
    with pytest.raises(ConfigurationError, match=r"server_error_status must be an HTTP error status \(400-599\)"):
        wrap(RecordingApp(), server_error_status=200)
    with pytest.raises(ConfigurationError, match=r"service_id must be a service ID \(a string\), not \[\]"):
        wrap(RecordingApp(), service_id=[])


# -- configuration ----------------------------------------------------------------------------


def env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    values = {"CIBA_STORE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}", "CIBA_TOKENS": json.dumps(GRANTS)}
    values.update(overrides)
    return values


def test_from_env(tmp_path: Path) -> None:
    middleware = from_env(environ=env(tmp_path, CIBA_PATH_PREFIX="/authlete", CIBA_SERVICE_ID="42",
                                      CIBA_SERVER_ERROR_STATUS="503"))  # fmt: skip
    assert (middleware.app, middleware.prefix, middleware.service_id) == (not_found_app, "/authlete", "42")
    assert middleware.server_error_status == 503


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"CIBA_TOKENS": ""}, "CIBA_TOKENS (or CIBA_TOKENS_FILE) is not set", id="no-tokens"),
        pytest.param({"CIBA_SERVER_ERROR_STATUS": "five"}, "CIBA_SERVER_ERROR_STATUS must be an HTTP error status",
                     id="bad-status"),
        pytest.param({"CIBA_SERVICE_ID": " "}, "CIBA_SERVICE_ID must be a service ID (a string), not ' '",
                     id="blank-service"),
        pytest.param({"CIBA_PATH_PREFIX": "authlete"}, "CIBA_PATH_PREFIX must be empty or like /authlete",
                     id="bad-prefix"),
    ],
)  # fmt: skip
def test_from_env_errors_name_the_variable(tmp_path: Path, overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        from_env(environ=env(tmp_path, **overrides))


def test_application_needs_no_configuration_to_import() -> None:
    script = "from ciba_middleware.asgi import application; print(type(application).__name__)"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"PATH": "/usr/bin"},
                         cwd=str(ROOT), timeout=60, check=False)  # fmt: skip
    assert (run.returncode, run.stdout, run.stderr) == (0, "_Application\n", "")


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_a_server_stops_at_start_up_on_a_bad_configuration(tmp_path: Path, server: str) -> None:
    bind = ["--port", "0"] if server == "uvicorn" else ["--bind", "127.0.0.1:0"]
    run = subprocess.run(
        [sys.executable, "-m", server, *bind, "ciba_middleware.asgi:application"],
        capture_output=True, text=True, env={"PATH": "/usr/bin", **env(tmp_path, CIBA_MAX_BODY_BYTES="lots")},
        cwd=str(ROOT), timeout=60, check=False,
    )  # fmt: skip
    output = run.stdout + run.stderr
    # The server stopped instead of serving (hypercorn 0.18 exits 0 after a failed startup).
    assert run.returncode == (3 if server == "uvicorn" else 0)
    message = (
        "ciba-middleware: configuration error: "
        "CIBA_MAX_BODY_BYTES must be a whole number of bytes from 1 to 1048576, not 'lots'"
    )
    if server == "uvicorn":
        assert run.stderr.splitlines() == [
            "INFO:     Started server process [" + run.stderr.split("[", 1)[1].split("]", 1)[0] + "]",
            "INFO:     Waiting for application startup.",
            f"ERROR:    {message}",
            "ERROR:    Application startup failed. Exiting.",
        ]
    else:
        # hypercorn prints its own traceback of the failed startup, ending with the message.
        assert message in output.strip().splitlines()[-1]


def test_without_a_lifespan_every_request_is_a_clean_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ciba_middleware.asgi import _Application

    app = _Application()
    os_env = {"PATH": "/usr/bin", **env(tmp_path, CIBA_TOKENS="not json")}
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("CIBA_")]:
            patch.delenv(name)
        for name, value in os_env.items():
            patch.setenv(name, value)
        status, _, body = answer(call(app, http_scope("/anything")))
    assert (status, body["resultCode"]) == (500, "A001101")
    assert "ciba-middleware: configuration error: CIBA_TOKENS is not valid JSON" in caplog.text


def test_not_found_app_serves_the_lifespan_and_closes_websockets() -> None:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(not_found_app({"type": "lifespan"}, receive, send))
    asyncio.run(not_found_app({"type": "websocket"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete", "websocket.close"]


# -- under uvicorn ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("asgi")
    url = f"sqlite:///{tmp / 'tickets.sqlite3'}"
    base = {"CIBA_STORE_URL": url, "CIBA_TOKENS": json.dumps(GRANTS), "CIBA_SERVICE_ID": SERVICE}
    started = {
        "starlette": LiveServer(
            "_asgi_apps:application", {**base, "CIBA_SERVER_ERROR_STATUS": "503"}, server="uvicorn"
        ),
        "mounted": LiveServer("_asgi_apps:mounted", base, server="uvicorn"),
        "fastapi": LiveServer("_asgi_apps:fastapi_app", base, server="uvicorn"),
    }
    yield {"store_url": url, **started}
    for server in started.values():
        server.stop()


def fail_call(url: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(url, data=body, headers={"Authorization": BEARER, **(headers or {})}, timeout=10)


def test_chunked_bodies_over_http(servers: dict[str, Any]) -> None:
    store = store_from_url(servers["store_url"])
    ticket = store.issue(SERVICE)

    def chunks() -> Iterator[bytes]:
        yield b"reason=UNKNOWN_USER_ID&"
        yield f"ticket={ticket}".encode()

    response = fail_call(servers["starlette"].url + V3, chunks(), {"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    assert response.json()["action"] == "BAD_REQUEST"
    assert not store.exists(SERVICE, ticket)
    big = (b"x" * 1000 for _ in range(20))
    response = fail_call(servers["starlette"].url + V3, big, {"Content-Type": "application/json"})
    assert (response.status_code, response.json()["resultCode"]) == (413, "A185204")


def test_pass_through_over_http(servers: dict[str, Any]) -> None:
    base = servers["starlette"].url
    hello = requests.get(base + "/hello", timeout=5)
    assert (hello.status_code, hello.headers["X-App"], hello.text) == (201, "yes", "hello from the app")
    near = requests.post(base + "/api/other/backchannel/authentication/fail/extra", timeout=5)
    assert near.text == "the app's own route"
    with requests.get(base + "/stream", stream=True, timeout=5) as response:
        assert [line for line in response.iter_lines() if line] == [f"chunk {i}".encode() for i in range(5)]
    echo = requests.post(base + "/api/x/y/backchannel/authentication/fail", data=b"raw \xff",
                         headers={"Authorization": "Bearer x"}, timeout=5)  # fmt: skip
    assert echo.json() == {"method": "POST", "path": "/api/x/y/backchannel/authentication/fail", "root_path": "",
                           "body": "raw \u00ff", "authorization": "Bearer x"}  # fmt: skip
    assert requests.get(base + "/nowhere", timeout=5).status_code == 404


def test_mounted_under_a_path(servers: dict[str, Any]) -> None:
    base = servers["mounted"].url
    response = fail_call(base + "/authlete" + V3, b'{"reason":"ACCESS_DENIED"}', {"Content-Type": "application/json"})
    assert (response.status_code, response.json()["action"]) == (200, "FORBIDDEN")
    # Below the mount, other paths are the mounted app's (here the JSON 404); outside it, the outer app's.
    assert requests.get(base + "/authlete/other", timeout=5).json() == {"error": "not_found"}
    assert fail_call(base + V3, b"{}").status_code == 404
    assert requests.post(base + "/echo", data=b"x", timeout=5).json()["body"] == "x"


def test_a_starlette_view_raises_backchannel_fail(servers: dict[str, Any]) -> None:
    base = servers["starlette"].url
    store = store_from_url(servers["store_url"])
    ticket = requests.post(base + "/issue", timeout=5).text
    assert store.exists(SERVICE, ticket)
    response = requests.post(base + "/reject", data={"reason": "ACCESS_DENIED", "ticket": ticket,
                                                     "description": "Denied by the user"}, timeout=5)  # fmt: skip
    assert response.status_code == 403
    assert response.json() == {"error": "access_denied", "error_description": "Denied by the user"}
    assert (response.headers["Cache-Control"], response.headers["Pragma"]) == ("no-store", "no-cache")
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.headers["Content-Length"] == str(len(response.content))
    assert not store.exists(SERVICE, ticket)
    # CIBA_SERVER_ERROR_STATUS=503 for this server.
    assert requests.post(base + "/reject", data={"reason": "SERVER_ERROR"}, timeout=5).status_code == 503


def test_a_fastapi_view_raises_backchannel_fail(servers: dict[str, Any]) -> None:
    base = servers["fastapi"].url
    store = store_from_url(servers["store_url"])
    ok = requests.post(base + "/backchannel/authentication", data={"login_hint": "known"}, timeout=5)
    assert store.exists(SERVICE, ok.json()["ticket"])
    response = requests.post(base + "/backchannel/authentication", data=urlencode({"login_hint": "nobody"}),
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=5)  # fmt: skip
    assert response.status_code == 400
    assert response.json() == {"error": "unknown_user_id", "error_description": "No such user"}
    response = fail_call(base + V3, b'{"reason":"INVALID_TARGET"}', {"Content-Type": "application/json"})
    assert response.json()["action"] == "BAD_REQUEST"
    assert requests.get(base + "/docs", timeout=5).status_code == 200


def test_many_calls_side_by_side(servers: dict[str, Any]) -> None:
    store = store_from_url(servers["store_url"])
    tickets = [store.issue(SERVICE) for _ in range(40)]
    url = servers["starlette"].url + V3
    statuses: list[int] = []

    def worker(chunk: list[str]) -> None:
        with requests.Session() as session:
            for ticket in chunk:
                response = session.post(url, json={"ticket": ticket, "reason": "ACCESS_DENIED"},
                                        headers={"Authorization": BEARER}, timeout=10)  # fmt: skip
                statuses.append(response.status_code)

    threads = [threading.Thread(target=worker, args=(tickets[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 40
    assert not any(store.exists(SERVICE, t) for t in tickets)


class _FailingAsyncStore(MemoryTicketStore):
    """A store whose async path fails, as a network store's does while its server is down."""

    async def delete_async(self, service_id: str, ticket: str) -> bool:
        raise StoreError("redis: Connection refused")

    async def close_async(self) -> None:
        pass


def test_a_store_failing_on_its_async_path_is_a_500_and_the_ticket_only_hashed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _FailingAsyncStore()
    ticket = store.issue(SERVICE, 60)
    events: list[FailEvent] = []
    middleware = wrap(RecordingApp(), store=store, observers=[events.append])
    headers = {"Authorization": BEARER, "Content-Type": "application/json"}
    body = json.dumps({"ticket": ticket, "reason": "ACCESS_DENIED"}).encode()
    status, _, reply = answer(call(middleware, http_scope(V3, headers=headers), [body]))
    assert status == 500
    assert reply["resultCode"] == "A185101"
    assert events[0].store_error is True
    assert "Connection refused" in caplog.text
    assert ticket not in caplog.text
    assert store.exists(SERVICE, ticket)  # not deleted


class _ThreadOnlyStore(MemoryTicketStore):
    """A store of the app's own, without an async path: its calls go to a thread."""


@pytest.mark.parametrize(
    ("kind", "on_the_loop"), [("memory", True), ("sqlite", True), ("redis", True), ("postgresql", True), ("own", False)]
)
def test_only_stores_without_an_async_path_take_a_thread(
    kind: str, on_the_loop: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """memory:// does no I/O and stays on the loop; SQLite, Redis and PostgreSQL delete
    through their async paths, on the loop; a store without one goes to a thread."""
    if kind == "own":
        store: Any = _ThreadOnlyStore()
    elif kind == "memory":
        store = store_from_url("memory://")
    elif kind == "sqlite":
        store = store_from_url(f"sqlite:///{tmp_path / 't.sqlite3'}")
    elif kind == "redis":
        store = store_from_url(request.getfixturevalue("redis_url") + "?key_prefix=asgi-loop-test:")
    else:
        table = unique_name()
        store = store_from_url(request.getfixturevalue("postgres_url") + f"?table={table}")
    other = None
    try:
        ticket = store.issue(SERVICE, 60)
        other = store.issue(SERVICE, 60)  # the SQLite store keeps an idle connection
        threads: list[int] = []
        observers = [lambda event: threads.append(threading.get_ident())]
        middleware = wrap(RecordingApp(), store=store, observers=observers)
        headers = {"Authorization": BEARER, "Content-Type": "application/json"}
        body = json.dumps({"ticket": ticket, "reason": "ACCESS_DENIED"}).encode()
        closing = getattr(store, "close_async", None)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            try:
                await middleware(scope, receive, send)
            finally:
                if closing is not None:
                    await closing()  # the loop's own client, before asyncio.run closes the loop

        status, _, reply = answer(call(app, http_scope(V3, headers=headers), [body]))
        assert status == 200, reply
        assert not store.exists(SERVICE, ticket)
        assert (threads == [threading.get_ident()]) is on_the_loop
    finally:
        if other is not None:
            store.delete(SERVICE, other)  # nothing of the test's left in a shared store
        store.close()
        if kind == "postgresql":
            from _stores import drop_postgres_table

            drop_postgres_table(request.getfixturevalue("postgres_url"), table)


def test_hypercorn_serves_the_application(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'tickets.sqlite3'}"
    env = {"CIBA_STORE_URL": store_url, "CIBA_TOKENS": json.dumps(GRANTS), "CIBA_PATH_PREFIX": "/authlete"}
    live = LiveServer("ciba_middleware.asgi:application", env, server="hypercorn")
    try:
        store = store_from_url(store_url)
        ticket = store.issue(SERVICE)
        body = iter([b"reason=ACCESS_DENIED&ticket=", ticket.encode()])
        response = fail_call(live.url + "/authlete" + V3, body, {"Content-Type": "application/x-www-form-urlencoded"})
        assert (response.status_code, response.json()["action"]) == (200, "FORBIDDEN")
        assert not store.exists(SERVICE, ticket)
        assert requests.get(live.url + "/elsewhere", timeout=5).json() == {"error": "not_found"}
    finally:
        live.stop()


# -- the benchmarks' in-process harness -------------------------------------------------------


def test_the_benchmarks_drive_every_asgi_app_in_process(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """benchmarks/asgi_apps.py: each app answers 200 to the requests it is timed with."""
    from _stores import drop_postgres_table

    from benchmarks import asgi_apps
    from benchmarks.apps import GRANTS as BENCH_GRANTS

    table = unique_name()
    store_from_url(f"{postgres_url}?table={table}").close()  # the table the ceiling deletes from
    # The ceilings' stores: each deletes from the one BENCH_STORE_URL names.
    ceilings = {
        "asgi_floor_postgresql": f"{postgres_url}?table={table}",
        "asgi_floor_redis": f"{redis_url}?key_prefix={unique_name()}:",
        "asgi_floor_sqlite": f"sqlite:///{tmp_path / 'ceiling.sqlite3'}",
    }
    monkeypatch.setenv("CIBA_TOKENS", json.dumps(BENCH_GRANTS))  # asgi_from_env: a user's settings
    monkeypatch.setenv("CIBA_STORE_URL", "memory://")
    try:
        for name in asgi_apps.APPS:
            monkeypatch.setenv("BENCH_STORE_URL", ceilings.get(name, ""))
            app, requests = asgi_apps.prepared(name, 3)

            async def driven(app: Any = app, requests: Any = requests) -> int:
                status = await asgi_apps.drive(app, requests, 6)
                for closing in (
                    getattr(app, "aclose", None),
                    getattr(getattr(app, "store", None), "close_async", None),
                ):
                    if closing is not None:
                        await closing()  # what the app holds on this loop, before asyncio.run ends it
                return status

            assert asyncio.run(driven()) == 200, name
        # The Redis ceiling deletes the store's own key of a ticket, as the store would.
        monkeypatch.setenv("BENCH_STORE_URL", ceilings["asgi_floor_redis"])
        store = store_from_url(ceilings["asgi_floor_redis"])
        try:
            ticket = store.issue(asgi_apps.SERVICE, 60)
            app = asgi_apps.FloorRedis()

            async def deleted() -> int:
                status = await asgi_apps.drive(app, asgi_apps.fail_requests(asgi_apps.bodies([ticket])), 1)
                await app.aclose()
                return status

            assert asyncio.run(deleted()) == 200
            assert not store.exists(asgi_apps.SERVICE, ticket)
        finally:
            store.close()
    finally:
        drop_postgres_table(postgres_url, table)
    app, requests = asgi_apps.prepared("asgi_fail", 3)
    assert asyncio.run(asgi_apps.drive(app, requests, 6)) == 200
    assert isinstance(app, BackchannelFailMiddleware)
    tickets = [json.loads(body)["ticket"] for _, body in requests]
    assert not any(app.store.exists(SERVICE, t) for t in tickets)
    asgi_apps.main(["--calls", "5", "--rounds", "1", "--tickets", "10", "asgi_floor", "asgi_fail"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["asgi_floor", "asgi_fail"]
