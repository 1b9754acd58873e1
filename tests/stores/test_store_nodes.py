"""Several nodes: two gunicorn servers sharing one Redis, and two sharing one PostgreSQL.

A ticket issued by one node (here: this test process, through the store) is failed over
HTTP through the first server, and is then gone for everyone: for the test's own store,
for a second store object (another node) and for the second server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _stores import url_for_backend
from conftest import OTHER_SERVICE, OTHER_TOKEN, SERVICE, SERVICE_TOKEN, LiveServer, ciba_env

from ciba_middleware.stores import TicketStore

from ._http import assert_success, fail


@pytest.fixture(params=["redis", "postgresql"])
def node_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url, cleanup = url_for_backend(request.param, request, tmp_path)
    yield url
    cleanup()


def test_a_ticket_failed_through_one_server_is_gone_for_all(
    node_store_url: str,
    live_server: Callable[..., LiveServer],
    open_store: Callable[..., TicketStore],
    tmp_path: Path,
) -> None:
    env = ciba_env(tmp_path, CIBA_STORE_URL=node_store_url)
    one, two = live_server(env=env), live_server(env=env)
    issuer, other_node = open_store(node_store_url), open_store(node_store_url)
    ticket = issuer.issue(SERVICE, ttl=60)
    assert other_node.exists(SERVICE, ticket)

    # Another service cannot delete it, through either server; the answer is the same.
    assert_success(fail(two, OTHER_SERVICE, OTHER_TOKEN, ticket, "UNKNOWN_USER_ID"), "BAD_REQUEST", "unknown_user_id")
    assert other_node.exists(SERVICE, ticket)

    assert_success(fail(one, SERVICE, SERVICE_TOKEN, ticket, "ACCESS_DENIED"), "FORBIDDEN", "access_denied")
    assert not issuer.exists(SERVICE, ticket)
    assert not other_node.exists(SERVICE, ticket)
    assert other_node.delete(SERVICE, ticket) is False

    # Failing it again through the other server answers the same, and finds nothing.
    assert_success(fail(two, SERVICE, SERVICE_TOKEN, ticket, "ACCESS_DENIED"), "FORBIDDEN", "access_denied")
    assert not issuer.exists(SERVICE, ticket)


def test_tickets_failed_through_both_servers_at_once(
    node_store_url: str,
    live_server: Callable[..., LiveServer],
    open_store: Callable[..., TicketStore],
    tmp_path: Path,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    env = ciba_env(tmp_path, CIBA_STORE_URL=node_store_url)
    servers = [live_server(env=env, workers=2), live_server(env=env, workers=2)]
    store = open_store(node_store_url)
    tickets = [store.issue(SERVICE, ttl=60) for _ in range(40)]
    kept = store.issue(SERVICE, ttl=60)
    calls = [(servers[i % 2], ticket) for i, ticket in enumerate(tickets * 2)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda c: fail(c[0], SERVICE, SERVICE_TOKEN, c[1], "SERVER_ERROR"), calls))
    for answer in answers:
        assert_success(answer, "INTERNAL_SERVER_ERROR", "server_error")
    assert not any(store.exists(SERVICE, ticket) for ticket in tickets)
    assert store.exists(SERVICE, kept)
