"""Outages, over HTTP: a gunicorn server whose private Redis or PostgreSQL is killed.

While the store is down, fail calls get the contract's 500 (action INTERNAL_SERVER_ERROR,
resultCode A185101) quickly, and the wrapped app keeps answering; when the store comes back
on the same port, the server recovers by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from conftest import SERVICE, SERVICE_TOKEN, LiveServer, ciba_env

from ciba_middleware.errors import StoreError
from ciba_middleware.stores import TicketStore

from ._http import API_HEADERS, assert_success, fail
from .conftest import RECOVERY, down_and_up

STORE_FAILED = {
    "resultCode": "A185101",
    "resultMessage": "[A185101] /backchannel/authentication/fail, "
    "the ticket store failed; the ticket may not have been deleted.",
    "action": "INTERNAL_SERVER_ERROR",
    "responseContent": '{"error":"server_error"}',
}
#: The longest a fail call may take while the store is down, with the URL's 0.5 s timeouts.
BOUND = 2.0
#: A well-formed ticket, so that the middleware asks the store rather than answering alone.
NEVER_ISSUED = "T" * 43


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_a_store_outage_gives_500s_fast_and_heals(
    kind: str,
    request: pytest.FixtureRequest,
    live_server: Callable[..., LiveServer],
    open_store: Callable[..., TicketStore],
    tmp_path: Path,
) -> None:
    backend, url = down_and_up(kind, request)
    server = live_server("_apps:application", env=ciba_env(tmp_path, CIBA_STORE_URL=url))
    store = open_store(url)
    ticket = store.issue(SERVICE, ttl=60)
    assert_success(fail(server, SERVICE, SERVICE_TOKEN, ticket, "ACCESS_DENIED"), "FORBIDDEN", "access_denied")

    backend.kill()
    for _ in range(3):
        started = time.monotonic()
        answer = fail(server, SERVICE, SERVICE_TOKEN, NEVER_ISSUED, "ACCESS_DENIED")
        assert time.monotonic() - started < BOUND
        assert answer.status_code == 500
        assert {name: answer.headers[name] for name in API_HEADERS} == API_HEADERS
        assert answer.json() == STORE_FAILED

        started = time.monotonic()
        hello = requests.get(f"{server.url}/hello", timeout=5)
        assert time.monotonic() - started < 0.5
        assert (hello.status_code, hello.text, hello.headers["X-App"]) == (201, "hello from the app", "yes")

    backend.start()
    back = time.monotonic()
    while True:
        try:
            ticket = store.issue(SERVICE, ttl=60)
            break
        except StoreError:
            assert time.monotonic() - back < RECOVERY[kind]
            time.sleep(0.1)
    while (answer := fail(server, SERVICE, SERVICE_TOKEN, ticket, "ACCESS_DENIED")).status_code != 200:
        assert answer.json() == STORE_FAILED
        assert time.monotonic() - back < RECOVERY[kind]
        time.sleep(0.1)
    assert_success(answer, "FORBIDDEN", "access_denied")
    assert not store.exists(SERVICE, ticket)
