"""Every answer carries a Request-Id, the same ID as its audit record and its log lines."""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import webtest
from conftest import API_SECRET, AT_ONCE, GRANTS, SERVICE, SERVICE_TOKEN, LiveServer, ciba_env

from ciba_middleware import BackchannelFailMiddleware, FailEvent, StaticTokenVerifier
from ciba_middleware.core import pick_request_id
from ciba_middleware.stores import store_from_url
from ciba_middleware.stores.memory import MemoryTicketStore

V3 = f"/api/{SERVICE}/backchannel/authentication/fail"
V2 = "/api/backchannel/authentication/fail"
BEARER = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{SERVICE}:{API_SECRET}".encode()).decode()}
GENERATED = re.compile(r"[0-9a-f]{32}")


#: (headers sent, Request-Id answered; None: a new one), for every adapter (test_asgi.py too).
REQUEST_ID_CASES = [
    ({"Request-Id": "abc-123"}, "abc-123"),
    ({"X-Request-Id": "x.1:2_3"}, "x.1:2_3"),
    ({"Request-Id": "mine", "X-Request-Id": "proxy"}, "mine"),
    ({"Request-Id": "has space", "X-Request-Id": "proxy"}, "proxy"),
    ({"Request-Id": "has space"}, None),
    ({"Request-Id": "a" * 128}, "a" * 128),
    ({"Request-Id": "a" * 129}, None),
    ({"Request-Id": "caf\u00e9"}, None),
    ({"X-Request-Id": "caf\u00e9"}, None),
    ({"Request-Id": "", "X-Request-Id": ""}, None),
    ({}, None),
]


@pytest.mark.parametrize(("sent", "expected"), REQUEST_ID_CASES)
def test_which_id_an_answer_carries(sent: dict[str, str], expected: str | None) -> None:
    events: list[FailEvent] = []
    app = webtest.TestApp(
        BackchannelFailMiddleware(
            None,  # type: ignore[arg-type]
            store=MemoryTicketStore(),
            verifier=StaticTokenVerifier(GRANTS),
            observers=[events.append],
        )
    )
    headers = {k: v.encode("utf-8").decode("latin-1") for k, v in sent.items()}
    response = app.post(V3, params={"reason": "ACCESS_DENIED"}, headers={**BEARER, **headers}, expect_errors=True)
    got = response.headers["Request-Id"]
    if expected is None:
        assert GENERATED.fullmatch(got)
    else:
        assert got == expected
    (event,) = events
    assert event.request_id == got


def test_pick_request_id() -> None:
    assert pick_request_id(None, "ok") == "ok"
    assert pick_request_id("ok", "other") == "ok"
    first, second = pick_request_id(), pick_request_id(None, "bad id")
    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second


def test_every_answer_matches_its_audit_record_over_gunicorn(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    env = ciba_env(tmp_path, CIBA_AUDIT_LOG=str(audit), **AT_ONCE)
    env["CIBA_STORE_URL"] += "?timeout=0"
    server = live_server(env=env)
    store = store_from_url(env["CIBA_STORE_URL"])
    ticket = store.issue(SERVICE)
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("POST", V3, BEARER, {"ticket": ticket, "reason": "ACCESS_DENIED"}),  # 200
        ("POST", V2, BASIC, {"reason": "UNKNOWN_USER_ID"}),  # 200
        ("POST", V3, {}, {}),  # 401 A001202
        ("POST", V3, {"Authorization": "Bearer nope"}, {}),  # 401
        ("POST", "/api/42/backchannel/authentication/fail", BEARER, {}),  # 403
        ("GET", V3, BEARER, None),  # 405
        ("POST", V3, BEARER, {"reason": "NOPE"}),  # 400
        ("POST", V3, {**BEARER, "Content-Type": "text/plain"}, "x"),  # 415
        ("POST", V3, BEARER, {"errorDescription": "x" * 20000}),  # 413
    ]
    answers = []
    for index, (method, path, headers, body) in enumerate(calls):
        headers = {**headers, **({"Request-Id": f"call-{index}"} if index % 2 else {})}
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, str) else {"json": body}
        answers.append(requests.request(method, server.url + path, headers=headers, timeout=10, **kwargs))
    # A store failure: the SQLite file locked by another connection (timeout=0).
    lock = sqlite3.connect(env["CIBA_STORE_URL"].removeprefix("sqlite:///").partition("?")[0], isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        answers.append(requests.post(server.url + V3, headers=BEARER, json={"ticket": ticket}, timeout=10))
    finally:
        lock.close()

    assert [a.status_code for a in answers] == [200, 200, 401, 401, 403, 405, 400, 415, 413, 500]
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["request_id"] for r in records] == [a.headers["Request-Id"] for a in answers]
    assert [a.headers["Request-Id"] for a in answers][1:9:2] == [f"call-{i}" for i in range(1, 9, 2)]
    # The log line about the failing store names the same call.
    store_failure = answers[-1].headers["Request-Id"]
    assert any(
        "ticket store failed deleting ticket" in line and f"(request {store_failure})" in line
        for line in server.log().splitlines()
    )


def test_an_unexpected_error_is_logged_with_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(MemoryTicketStore):
        def delete(self, service_id: str, ticket: str) -> bool:
            raise RuntimeError("boom")

    app = webtest.TestApp(
        BackchannelFailMiddleware(None, store=Broken(), verifier=StaticTokenVerifier(GRANTS))  # type: ignore[arg-type]
    )
    store_ticket = MemoryTicketStore().issue(SERVICE)
    with caplog.at_level(logging.ERROR, logger="ciba_middleware.core"):
        response = app.post_json(
            V3, {"ticket": store_ticket}, headers={**BEARER, "X-Request-Id": "trace-7"}, expect_errors=True
        )
    assert response.status_int == 500
    assert response.json["resultCode"] == "A001101"
    assert response.headers["Request-Id"] == "trace-7"
    assert any("(request trace-7)" in r.getMessage() for r in caplog.records)
