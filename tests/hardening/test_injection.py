"""Injection: CR, LF, quotes, backslashes and NUL in every field, the path and the headers.

None of it may reach a response header, and both the API's JSON and its responseContent
must always parse. Checked in process on every field (a hand-built environ carries what no
HTTP client sends) and over real HTTP with raw sockets against gunicorn.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from conftest import API_SECRET, GRANTS, SERVICE, LiveServer

from ciba_middleware.stores.memory import MemoryTicketStore

from ._support import BASIC_OWN, BEARER_OWN, SUFFIX, call, check_contract, environ, middleware

NASTY = [
    pytest.param("\r\nX-Injected: 1", id="crlf-header"),
    pytest.param("\r\n\r\n<html>", id="crlfcrlf-body"),
    pytest.param("\n", id="lf"),
    pytest.param("\r", id="cr"),
    pytest.param('"', id="quote"),
    pytest.param('","action":"FORBIDDEN', id="quote-break-out"),
    pytest.param('\\"}', id="backslash-quote"),
    pytest.param("\\", id="backslash"),
    pytest.param("\\u0000", id="escaped-nul-text"),
    pytest.param("\x00", id="nul"),
    pytest.param("\x7f\x1b[31m", id="del-ansi"),
    pytest.param("\u2028\u2029", id="js-line-separators"),
    pytest.param("\ud800", id="lone-surrogate"),
    pytest.param("%0d%0aX-Injected:%201", id="percent-encoded-crlf"),
]


def _is_ok_text(value: str) -> bool:
    return all(0x20 <= ord(c) < 0x7F for c in value)


def _body(fields: dict[str, Any], form: bool) -> tuple[bytes, str]:
    if form:
        from urllib.parse import urlencode

        text = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in fields.items()})
        return text.encode("ascii"), "application/x-www-form-urlencoded"
    # ensure_ascii keeps a lone surrogate as the escape \ud800, as a caller's JSON would.
    return json.dumps(fields).encode("ascii"), "application/json"


def _check(answer: Any, method: str = "POST") -> dict[str, Any]:
    data = check_contract(answer, method)  # header names and values: printable latin-1, no CR/LF/NUL
    assert all(name.lower() != "x-injected" for name, _ in answer.headers)
    assert answer.body.isascii()
    return data


@pytest.mark.parametrize("payload", NASTY)
@pytest.mark.parametrize("field", ["ticket", "reason", "errorDescription", "errorUri"])
@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_fields_in_process(field: str, payload: str, form: bool) -> None:
    store = MemoryTicketStore()
    ticket = store.issue(SERVICE)
    fields = {"ticket": ticket, "reason": "ACCESS_DENIED", "errorDescription": "fine", "errorUri": "https://e.example/"}
    fields[field] = fields[field] + payload if field != "reason" else payload
    body, content_type = _body(fields, form)
    answer = call(middleware(store=store), environ(body=body, content_type=content_type))
    data = _check(answer)
    if form and "\ud800" in payload:
        # Percent-encoded bytes that are not UTF-8: the form itself is rejected.
        assert answer.status == 400
        assert data["resultCode"] == "A185201"
    elif field == "ticket":
        # Not a ticket any store could have issued: answered as unknown, nothing deleted.
        assert answer.status == 200
        assert json.loads(data["responseContent"]) == {
            "error": "access_denied",
            "error_description": "fine",
            "error_uri": "https://e.example/",
        }
    elif (
        field in ("errorDescription", "errorUri")
        and _is_ok_text(payload)
        and '"' not in payload
        and "\\" not in payload
    ):
        # Allowed characters (the percent-encoded CRLF is plain text): echoed, as JSON.
        content = json.loads(data["responseContent"])
        key = "error_description" if field == "errorDescription" else "error_uri"
        assert content[key] == fields[field]
    else:
        assert answer.status == 400, data
        assert data["resultCode"] == "A185202"
        assert data["resultMessage"].startswith(f"[A185202] /backchannel/authentication/fail, '{field}' ")
        assert json.loads(data["responseContent"]) == {"error": "server_error"}
    assert store.exists(SERVICE, ticket) is (answer.status != 200 or field == "ticket")


@pytest.mark.parametrize("payload", NASTY)
@pytest.mark.parametrize(
    "where",
    [
        "service-id",
        "v2-api-key",
        "v2-api-secret",
        "bearer-token",
        "content-type",
        "charset",
        "content-length",
        "request-id",
        "method",
    ],
)
def test_path_and_headers_in_process(where: str, payload: str) -> None:
    latin1 = payload.encode("utf-8", "surrogatepass").decode("latin-1")  # as a server puts bytes in environ
    body = json.dumps({"reason": "ACCESS_DENIED"}).encode()
    options: dict[str, Any] = {"body": body}
    expected: set[int]
    if where == "service-id":
        options["path"] = f"/api/{SERVICE}{latin1}{SUFFIX}"
        expected = {403} if "/" not in latin1 else {299}
    elif where in ("v2-api-key", "v2-api-secret"):
        key, secret = (SERVICE + payload, API_SECRET) if where == "v2-api-key" else (SERVICE, API_SECRET + payload)
        raw = f"{key}:{secret}".encode("utf-8", "surrogatepass")
        options["path"] = f"/api{SUFFIX}"
        options["authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        expected = {401}
    elif where == "bearer-token":
        options["authorization"] = BEARER_OWN + latin1
        expected = {401}
    elif where == "content-type":
        options["content_type"] = "application/json" + latin1
        expected = {200, 415}
    elif where == "charset":
        options["content_type"] = f"application/json; charset=utf-8{latin1}"
        expected = {200, 415}
    elif where == "content-length":
        options["content_length"] = str(len(body)) + latin1
        expected = {400}
    elif where == "request-id":
        options["extra"] = {"HTTP_X_REQUEST_ID": latin1}
        expected = {200}
    else:
        options["method"] = "POST" + latin1
        expected = {405}
    mw = middleware(observers=[lambda event: None])  # observers on: the request ID is read
    answer = call(mw, environ(**options))
    assert answer.status in expected, answer
    if answer.status != 299:  # a path with '/' in the service ID is not a route
        data = _check(answer)
        if "responseContent" in data:
            json.loads(data["responseContent"])


# -- over real HTTP -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "CIBA_STORE_URL": f"sqlite:///{tmp_path_factory.mktemp('inj') / 't.sqlite3'}",
        "CIBA_TOKENS": json.dumps(GRANTS),
        "CIBA_AUDIT_LOG": "stdout",
    }
    live = LiveServer("ciba_middleware.wsgi:application", env)
    yield live
    live.stop()


def raw_request(server: LiveServer, head: str, body: bytes = b"") -> tuple[str, list[str], bytes]:
    """Send bytes as they are; return the status line, the header lines and the body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    head_bytes, _, rest = response.partition(b"\r\n\r\n")
    status, *lines = head_bytes.decode("latin-1").split("\r\n")
    return status, lines, rest


def _check_raw(lines: list[str], rest: bytes) -> dict[str, Any]:
    names = [line.split(":", 1)[0].lower() for line in lines]
    assert "x-injected" not in names
    for line in lines:
        assert all(0x20 <= ord(c) <= 0x7E or ord(c) >= 0x80 for c in line), line
    data: dict[str, Any] = json.loads(rest)
    if "responseContent" in data:
        json.loads(data["responseContent"])
    return data


@pytest.mark.parametrize("payload", NASTY)
@pytest.mark.parametrize("field", ["ticket", "reason", "errorDescription", "errorUri"])
def test_fields_over_http(server: LiveServer, field: str, payload: str) -> None:
    fields = {"reason": "INVALID_TARGET", field: (payload if field == "reason" else "x" + payload)}
    body, content_type = _body(fields, form=False)
    head = (
        f"POST /api/{SERVICE}{SUFFIX} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: {BEARER_OWN}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    status, lines, rest = raw_request(server, head, body)
    assert status.split(" ")[1] in ("200", "400"), status
    _check_raw(lines, rest)


@pytest.mark.parametrize("payload", NASTY)
def test_service_id_in_path_over_http(server: LiveServer, payload: str) -> None:
    encoded = quote(payload.encode("utf-8", "surrogatepass"), safe="")
    body = b'{"reason":"ACCESS_DENIED"}'
    head = (
        f"POST /api/{SERVICE}{encoded}{SUFFIX} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: {BASIC_OWN.replace('Basic', 'Bearer')}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    status, lines, rest = raw_request(server, head, body)
    assert status.split(" ")[1] == "401", status  # the Basic credentials are not a token
    _check_raw(lines, rest)
    head = head.replace(BASIC_OWN.replace("Basic", "Bearer"), BEARER_OWN)
    status, lines, rest = raw_request(server, head, body)
    assert status.split(" ")[1] == "403", status  # the service ID is not the token's
    data = _check_raw(lines, rest)
    assert data["resultCode"] == "A185212"
    # The audit log line of the call stays one line of JSON.
    for line in server.log().splitlines():
        if line.startswith("{"):
            json.loads(line)
