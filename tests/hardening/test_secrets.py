"""No token, secret or clear ticket in any log line, in process (caplog) and under gunicorn.

Every kind of call is made, right and wrong credentials (near misses included), good and
bad bodies, a store that fails and an unexpected exception, with every logger at DEBUG, the
audit log on, and gunicorn's access and error logs at debug. Then every secret sent is
looked for in the captured text, in clear, base64 and percent-encoded forms.

The timing half of the secrets check is a measurement, not a test:
``benchmarks/hardening/timing.py`` (method and figures in docs/reliability.md).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from _servers import PrivateRedis
from conftest import (
    API_SECRET,
    AT_ONCE,
    GRANTS,
    ORG_TOKEN,
    OTHER_SERVICE,
    OTHER_TOKEN,
    SERVICE,
    SERVICE_TOKEN,
    LiveServer,
)

from ciba_middleware import StoreError, store_from_url
from ciba_middleware.audit import AuditLog
from ciba_middleware.stores.memory import MemoryTicketStore

from ._support import SUFFIX, basic, call, environ, middleware

OTHER_SECRET = "api-secret-42"
NEAR_MISSES = [SERVICE_TOKEN[:-1] + "X", API_SECRET[:-1] + "X", ORG_TOKEN + "0"]
SECRETS = [SERVICE_TOKEN, OTHER_TOKEN, ORG_TOKEN, API_SECRET, OTHER_SECRET, *NEAR_MISSES]


def credentials() -> list[tuple[str, str]]:
    """(path, Authorization) for every kind of caller, right and wrong."""
    v3, v2 = f"/api/{SERVICE}{SUFFIX}", f"/api{SUFFIX}"
    return [
        (v3, f"Bearer {SERVICE_TOKEN}"),
        (v3, f"Bearer {ORG_TOKEN}"),
        (v3, f"Bearer {OTHER_TOKEN}"),  # 403
        (f"/api/{OTHER_SERVICE}{SUFFIX}", f"Bearer {ORG_TOKEN}"),  # 403
        (v3, f"Bearer {NEAR_MISSES[0]}"),  # 401
        (v3, f"Bearer {NEAR_MISSES[2]}"),
        (v3, f"Basic {SERVICE_TOKEN}"),  # wrong scheme
        (v3, f"Bearer {SERVICE_TOKEN} trailing"),  # malformed
        (v2, basic(SERVICE, API_SECRET)),
        (v2, basic(OTHER_SERVICE, OTHER_SECRET)),
        (v2, basic(SERVICE, NEAR_MISSES[1])),
        (v2, basic(SERVICE, OTHER_SECRET)),
        (v2, f"Bearer {API_SECRET}"),
    ]


def bodies(ticket: str) -> list[tuple[str, bytes]]:
    return [
        ("application/json", json.dumps({"ticket": ticket, "reason": "ACCESS_DENIED"}).encode()),
        ("application/x-www-form-urlencoded", f"ticket={ticket}&reason=UNKNOWN_USER_ID".encode()),
        ("application/json", json.dumps({"ticket": ticket, "reason": "NOT_A_REASON"}).encode()),
        ("application/json", json.dumps({"ticket": ticket, "errorDescription": "bad\n"}).encode()),
        ("text/plain", ticket.encode()),
    ]


def forms(secret: str) -> list[str]:
    """The ways a secret could show up in a log line."""
    encoded = base64.b64encode(secret.encode()).decode()
    return [secret, quote(secret), encoded, encoded.rstrip("="), json.dumps(secret)[1:-1]]


def assert_nothing_secret(text: str, tickets: list[str]) -> None:
    for secret in SECRETS:
        for form in forms(secret):
            assert form not in text, f"a secret ({secret[:6]}...) appears in the log"
    for ticket in tickets:
        assert ticket not in text, "a clear ticket appears in the log"
        assert ticket[:16] not in text, "part of a ticket appears in the log"
    for _, authorization in credentials():
        assert authorization.split(" ", 1)[1][:12] not in text, "credentials appear in the log"


class FailingStore(MemoryTicketStore):
    """Fails every other delete with a StoreError, and once with an unexpected exception."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def delete(self, service_id: str, ticket: str) -> bool:
        self.calls += 1
        if self.calls % 3 == 1:
            raise StoreError(f"backend unreachable (service {service_id})")
        if self.calls % 3 == 2:
            raise RuntimeError("something unexpected")
        return super().delete(service_id, ticket)


@pytest.mark.parametrize("store_kind", ["memory", "failing"])
def test_no_secret_in_any_log_record_in_process(caplog: pytest.LogCaptureFixture, store_kind: str) -> None:
    caplog.set_level(logging.DEBUG)
    store = MemoryTicketStore() if store_kind == "memory" else FailingStore()
    mw = middleware(store=store, observers=[AuditLog()])
    tickets: list[str] = []
    for path, authorization in credentials():
        for content_type, body in bodies(ticket := store.issue(SERVICE)):
            tickets.append(ticket)
            call(mw, environ(path=path, authorization=authorization, content_type=content_type, body=body))
    # The logs were written at all: one audit record per call, plus the store's failures.
    audit = [r for r in caplog.records if r.name == "ciba_middleware.audit"]
    assert len(audit) == len(credentials()) * 5
    if store_kind == "failing":
        assert "ticket store failed" in caplog.text
        assert "unexpected error" in caplog.text
    texts = [caplog.text]
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.__dict__))
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
    assert_nothing_secret("\n".join(texts), tickets)


@pytest.fixture
def loud_server(tmp_path: Path) -> Iterator[tuple[LiveServer, PrivateRedis]]:
    redis = PrivateRedis()
    env = {
        "CIBA_STORE_URL": f"{redis.url}?socket_timeout=0.5&socket_connect_timeout=0.5",
        "CIBA_TOKENS": json.dumps(GRANTS),
        "CIBA_AUDIT_LOG": "stdout",
        **AT_ONCE,
    }
    server = LiveServer(
        "ciba_middleware.wsgi:application",
        env,
        extra=("--log-level", "debug", "--access-logfile", "-", "--error-logfile", "-"),
    )
    yield server, redis
    server.stop()
    redis.close()


def test_no_secret_in_the_gunicorn_log(loud_server: tuple[LiveServer, PrivateRedis]) -> None:
    server, redis = loud_server
    store = store_from_url(redis.url)
    tickets: list[str] = []

    def send_all() -> list[int]:
        statuses = []
        for path, authorization in credentials():
            for content_type, body in bodies(ticket):
                response = requests.post(
                    server.url + path,
                    data=body,
                    headers={"Authorization": authorization, "Content-Type": content_type},
                    timeout=10,
                )
                statuses.append(response.status_code)
        return statuses

    ticket = store.issue(SERVICE)
    tickets.append(ticket)
    up = send_all()
    store.close()
    redis.kill()  # now the store fails: its errors are logged too
    ticket = "T" * 43  # well formed, so the middleware asks the dead store
    tickets.append(ticket)
    down = send_all()
    log = server.log()

    assert 200 in up
    assert 401 in up
    assert 403 in up
    assert 500 in down
    assert "ticket store failed" in log
    assert log.count('"event":"ciba_fail"') == len(up) + len(down)
    assert log.count("POST /api") >= len(up) + len(down)  # the access log is on
    assert_nothing_secret(log, tickets)
