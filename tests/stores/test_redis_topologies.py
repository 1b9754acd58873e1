"""Redis topologies that never take the server down: Cluster with several seeds, Sentinel,
and URLs that are refused at once rather than misread.

Building a store never connects: a store built while every node is down answers
:class:`StoreError` on each call, and works once the servers are back, without being built
again. Everything here runs against real servers the tests start on spare ports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from _servers import PrivateRedisCluster, PrivateSentinel
from conftest import SERVICE, SERVICE_TOKEN, LiveServer, ciba_env, free_port

from ciba_middleware.errors import ConfigurationError, StoreError
from ciba_middleware.stores import TicketStore, store_from_url
from ciba_middleware.stores.redis import RECONNECT_PAUSE

from ._http import API_HEADERS, assert_success, fail
from .test_store_outages import NEVER_ISSUED, STORE_FAILED

# Servers started, stopped and failed over: left to 3.11 (noxfile.py's SUBSET).
pytestmark = pytest.mark.slow

OpenStore = Callable[..., TicketStore]
#: Short timeouts, so that calls fail fast while servers are down.
FAST = "socket_timeout=0.5&socket_connect_timeout=0.5"
#: The longest a call may take while every server is down (connection refused), with slack.
DOWN_BOUND = 1.5
#: The same over HTTP while gunicorn replaces workers: the call may wait for one to boot.
RESTART_BOUND = 5.0


def _calls(store: TicketStore) -> list[Callable[[], object]]:
    return [
        lambda: store.issue(SERVICE, ttl=60),
        lambda: store.delete(SERVICE, NEVER_ISSUED),
        lambda: store.exists(SERVICE, NEVER_ISSUED),
        store.ping,
    ]


def _assert_each_call_fails_fast(store: TicketStore) -> None:
    for call in _calls(store):
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"^redis: "):
            call()
        assert time.monotonic() - started < DOWN_BOUND


def _first_success(store: TicketStore, within: float) -> tuple[str, float]:
    """Issue until it works (StoreError meanwhile); the ticket and the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            return store.issue(SERVICE, ttl=60), time.monotonic() - started
        except StoreError:
            assert time.monotonic() - started < within
            time.sleep(0.1)


# -- Redis Cluster ---------------------------------------------------------------------------


def test_a_cluster_store_built_while_every_node_is_down_recovers_by_itself(
    redis_three_masters: PrivateRedisCluster, open_store: OpenStore
) -> None:
    cluster = redis_three_masters
    cluster.kill()
    started = time.monotonic()
    store = open_store(cluster.url(query=FAST))
    assert time.monotonic() - started < 0.1  # nothing was connected
    for _ in range(2):
        _assert_each_call_fails_fast(store)
    time.sleep(RECONNECT_PAUSE)  # the next call tries again, and fails again, fast
    _assert_each_call_fails_fast(store)

    cluster.start()
    ticket, _ = _first_success(store, within=15.0)
    assert store.exists(SERVICE, ticket)
    assert store.delete(SERVICE, ticket) is True
    assert store.delete(SERVICE, ticket) is False
    # The tickets are spread over the three masters: the store sees the whole cluster.
    tickets = [store.issue(SERVICE, ttl=60) for _ in range(30)]
    assert all(count > 0 for count in cluster.keys_per_node())
    assert all(store.delete(SERVICE, ticket) for ticket in tickets)
    assert cluster.keys_per_node() == [0, 0, 0]


def test_the_cluster_client_is_made_once_when_threads_start_together(
    redis_three_masters: PrivateRedisCluster, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.cluster import RedisCluster

    made: list[int] = []
    real_init = RedisCluster.__init__

    def counting_init(self: RedisCluster, *args: Any, **kwargs: Any) -> None:
        made.append(threading.get_ident())
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(RedisCluster, "__init__", counting_init)
    store = open_store(redis_three_masters.url(query=FAST))
    barrier = threading.Barrier(8)

    def first_call(_: int) -> bool:
        barrier.wait()
        return store.delete(SERVICE, store.issue(SERVICE, ttl=60))

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(first_call, range(8))) == [True] * 8
    assert len(made) == 1


def test_threads_do_not_queue_behind_seeds_that_do_not_answer(
    redis_three_masters: PrivateRedisCluster, open_store: OpenStore
) -> None:
    """Seeds that accept connections and answer nothing (frozen, or a network that drops
    packets) cost an attempt every seed's timeout: threads fail with the attempt's error
    instead of each making their own in turn, and the next attempt waits RECONNECT_PAUSE."""
    cluster = redis_three_masters
    store = open_store(cluster.url(query="socket_timeout=0.3&socket_connect_timeout=0.3"))
    attempt = 3 * 0.3
    for node in cluster.nodes:
        node.pause()
    try:
        barrier = threading.Barrier(6)

        def first_call(_: int) -> tuple[str, float]:
            barrier.wait()
            started = time.monotonic()
            with pytest.raises(StoreError) as raised:
                store.issue(SERVICE, ttl=60)
            return str(raised.value), time.monotonic() - started

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(first_call, range(6)))
        # One attempt's error for all of them (redis-py's own wording is not ours to pin).
        (message,) = {message for message, _ in outcomes}
        assert message.startswith("redis: ")
        # One attempt of three timeouts, not six attempts one after another.
        assert attempt <= max(took for _, took in outcomes) < attempt + 1.0
        started = time.monotonic()
        with pytest.raises(StoreError) as again:
            store.delete(SERVICE, NEVER_ISSUED)
        assert time.monotonic() - started < 0.1  # within the pause: not tried again
        assert str(again.value) == message  # the failed attempt's error, kept
        time.sleep(RECONNECT_PAUSE)
        started = time.monotonic()
        with pytest.raises(StoreError):
            store.delete(SERVICE, NEVER_ISSUED)
        assert time.monotonic() - started >= attempt  # tried again
    finally:
        for node in cluster.nodes:
            node.pause(False)
    ticket, _ = _first_success(store, within=5.0)
    assert store.delete(SERVICE, ticket) is True


@pytest.mark.parametrize("dead", ["first", "all-but-last"])
def test_a_cluster_url_whose_first_seeds_are_down_still_works(
    dead: str, redis_three_masters: PrivateRedisCluster, open_store: OpenStore
) -> None:
    down = [free_port()] if dead == "first" else [free_port(), free_port()]
    store = open_store(redis_three_masters.url(*down, redis_three_masters.ports[-1], query=FAST))
    ticket = store.issue(SERVICE, ttl=60)
    assert store.delete(SERVICE, ticket) is True


def test_a_cluster_whose_nodes_all_restart_is_used_again_without_a_new_store(
    redis_three_masters: PrivateRedisCluster, open_store: OpenStore
) -> None:
    cluster = redis_three_masters
    store = open_store(cluster.url(query=FAST))
    before = store.issue(SERVICE, ttl=60)
    cluster.kill()
    _assert_each_call_fails_fast(store)
    cluster.start()
    after, _ = _first_success(store, within=15.0)
    assert store.delete(SERVICE, after) is True
    assert store.delete(SERVICE, before) is False  # these nodes run without persistence


def test_gunicorn_keeps_answering_while_the_cluster_is_down_as_workers_restart(
    redis_three_masters: PrivateRedisCluster,
    live_server: Callable[..., LiveServer],
    open_store: OpenStore,
    tmp_path: Path,
) -> None:
    cluster = redis_three_masters
    url = cluster.url(query=FAST)
    cluster.kill()
    # A worker lives 4 requests (plus up to 2 more, at random): 40 requests restart them all.
    server = live_server(
        env=ciba_env(tmp_path, CIBA_STORE_URL=url),
        workers=2,
        extra=("--max-requests", "4", "--max-requests-jitter", "2"),
    )
    for _ in range(20):
        started = time.monotonic()
        answer = fail(server, SERVICE, SERVICE_TOKEN, NEVER_ISSUED, "ACCESS_DENIED")
        # A request may wait for a worker being replaced to boot: slack for a loaded machine.
        assert time.monotonic() - started < RESTART_BOUND, server.log()[-3000:]
        assert answer.status_code == 500, server.log()[-3000:]
        assert {name: answer.headers[name] for name in API_HEADERS} == API_HEADERS
        assert answer.json() == STORE_FAILED
        other = requests.get(f"{server.url}/somewhere/else", timeout=5)
        assert (other.status_code, other.json()) == (404, {"error": "not_found"}), server.log()[-3000:]
    assert server.process.poll() is None
    assert server.log().count("Autorestarting worker after current request.") >= 4
    assert "Worker failed to boot" not in server.log()

    cluster.start()
    store = open_store(url)
    ticket, _ = _first_success(store, within=15.0)
    back = time.monotonic()
    while (answer := fail(server, SERVICE, SERVICE_TOKEN, ticket, "ACCESS_DENIED")).status_code != 200:
        assert answer.json() == STORE_FAILED
        assert time.monotonic() - back < 10.0, server.log()[-3000:]
        time.sleep(0.1)
    assert_success(answer, "FORBIDDEN", "access_denied")
    assert not store.exists(SERVICE, ticket)
    # Workers keep being replaced, and each new one works at once.
    for _ in range(10):
        ticket = store.issue(SERVICE, ttl=60)
        assert_success(fail(server, SERVICE, SERVICE_TOKEN, ticket, "ACCESS_DENIED"), "FORBIDDEN", "access_denied")
        assert not store.exists(SERVICE, ticket)
    assert server.process.poll() is None


# -- Redis Sentinel --------------------------------------------------------------------------


def test_tickets_through_a_sentinel_url(redis_sentinel: PrivateSentinel, open_store: OpenStore) -> None:
    import redis

    store = open_store(redis_sentinel.url("/3", FAST + "&key_prefix=sentinel-test:"))
    ticket = store.issue(SERVICE, ttl=60)
    with redis.Redis(port=redis_sentinel.master.port, db=3) as master:
        assert master.get(f"sentinel-test:{ticket}") == SERVICE.encode()
    assert store.exists(SERVICE, ticket)
    assert store.delete("42", ticket) is False
    assert store.delete(SERVICE, ticket) is True
    assert not store.exists(SERVICE, ticket)


def test_tickets_through_a_tls_sentinel_url(redis_sentinel_tls: PrivateSentinel, open_store: OpenStore) -> None:
    store = open_store(redis_sentinel_tls.url("/0", FAST))
    ticket = store.issue(SERVICE, ttl=60)
    assert store.exists(SERVICE, ticket)
    assert store.delete(SERVICE, ticket) is True
    # Without the CA, neither the Sentinel nor the master is trusted.
    ca = f"ssl_ca_certs={redis_sentinel_tls.tls / 'cert.pem'}"  # type: ignore[operator]
    untrusting = open_store(redis_sentinel_tls.url("/0", FAST).replace(ca, "ssl_ca_certs=/dev/null"))
    with pytest.raises(StoreError) as raised:
        untrusting.issue(SERVICE, ttl=60)
    # Our part of the message: the prefix, and the Sentinel named by its address instead of
    # its client's whole repr. The rest is redis-py's and the TLS library's wording.
    message = str(raised.value)
    assert message.startswith("redis: ")
    assert f"sentinel 127.0.0.1:{redis_sentinel_tls.port} " in message
    assert "<redis." not in message
    assert len(message) < 300


def test_a_sentinel_store_built_while_the_sentinel_is_down_works_once_it_is_up(
    redis_sentinel: PrivateSentinel, open_store: OpenStore
) -> None:
    redis_sentinel.kill()
    store = open_store(redis_sentinel.url(query=FAST))
    _assert_each_call_fails_fast(store)
    redis_sentinel.start()
    ticket, _ = _first_success(store, within=10.0)
    assert store.delete(SERVICE, ticket) is True


def test_a_wrong_sentinel_password_is_a_store_error_without_the_password(
    redis_sentinel: PrivateSentinel, open_store: OpenStore
) -> None:
    url = redis_sentinel.url(query=FAST).replace(redis_sentinel.password, "not-the-password")
    store = open_store(url)
    with pytest.raises(StoreError) as raised:
        store.issue(SERVICE, ttl=60)
    text = str(raised.value)
    assert text.startswith(f"redis: No master found for 'mymaster' : sentinel 127.0.0.1:{redis_sentinel.port} - ")
    assert len(text) < 200
    assert "not-the-password" not in text


def test_a_sentinel_failover_is_followed_without_a_new_store(
    redis_sentinel: PrivateSentinel, open_store: OpenStore
) -> None:
    import redis

    store = open_store(redis_sentinel.url(query=FAST))
    tickets = [store.issue(SERVICE, ttl=120) for _ in range(20)]
    deleted = set(tickets[:5])
    assert all(store.delete(SERVICE, ticket) for ticket in deleted)
    # Every write has reached the replica before the master dies (replication is
    # asynchronous: see docs/operations.md for what a failover may lose otherwise).
    redis_sentinel.wait_replicated()
    old_port = redis_sentinel.master.port
    redis_sentinel.master.kill()

    outcomes: list[str] = []
    issued_during: list[str] = []
    left = [ticket for ticket in tickets if ticket not in deleted]
    started = time.monotonic()
    while left or not issued_during:
        assert time.monotonic() - started < 30.0, outcomes
        try:
            if left:
                # Never silently wrong: True, or a StoreError and the ticket is tried again.
                assert store.delete(SERVICE, left[0]) is True
                deleted.add(left.pop(0))
            else:
                issued_during.append(store.issue(SERVICE, ttl=60))
            outcomes.append("ok")
        except StoreError:
            outcomes.append("500")
            time.sleep(0.05)
    assert redis_sentinel.master_port() == redis_sentinel.replica.port != old_port  # type: ignore[union-attr]
    assert "500" in outcomes  # the failover was seen, and then rode over
    with redis.Redis(port=redis_sentinel.replica.port) as new_master:  # type: ignore[union-attr]
        assert new_master.info("replication")["role"] == "master"
    # After the failover the new master has every ticket issued, none of those deleted.
    for ticket in deleted:
        assert store.delete(SERVICE, ticket) is False
        assert not store.exists(SERVICE, ticket)
    assert store.exists(SERVICE, issued_during[0])
    assert store.delete(SERVICE, issued_during[0]) is True


# -- URLs refused when the store is built ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("redis://[::1", "bad Redis URL redis://[::1: Invalid IPv6 URL", id="ipv6-unclosed"),
        pytest.param(
            "redis://app:hunter2@[::1:6379/0",
            "bad Redis URL redis://app:***@[::1:6379/0: Invalid IPv6 URL",
            id="ipv6-pw",
        ),
        pytest.param("redis+cluster://h1:7000,[::1:7001", "Invalid IPv6 URL", id="ipv6-seed-unclosed"),
        pytest.param("redis://h/0#x", "bad Redis URL redis://h/0#x: a Redis URL has no #fragment", id="fragment"),
        pytest.param(
            "redis://:hun#ter2@h/0",
            "bad Redis URL redis://***: an '@' after the host: in a user name or password, write '/', '?', '#' and '@'",
            id="password-hash",
        ),
        pytest.param("redis://u:hun/ter2@h/0", "bad Redis URL redis://***: an '@' after the host", id="password-slash"),
        pytest.param("redis://u:hun?ter2@h/0", "bad Redis URL redis://***: an '@' after the host", id="password-mark"),
        pytest.param("redis://h:99999", "bad Redis URL redis://h:99999: Port out of range 0-65535", id="port-range"),
        pytest.param("redis://h:63x9", "Port could not be cast to integer value as '63x9'", id="port-word"),
        pytest.param(
            "redis://h?ssl_cert_reqs=none",
            "ssl_cert_reqs is a TLS option, and redis:// is not TLS: it would be ignored; use rediss:// for TLS",
            id="ssl-on-plain",
        ),
        pytest.param(
            "redis://u:hunter2@h?ssl_ca_certs=/etc/ca.pem",
            "bad Redis URL redis://u:***@h?ssl_ca_certs=/etc/ca.pem: ssl_ca_certs is a TLS option",
            id="ssl-ca-on-plain",
        ),
        pytest.param(
            "redis+cluster://h:7000?ssl_certfile=c.pem",
            "use rediss+cluster:// for TLS",
            id="ssl-on-plain-cluster",
        ),
        pytest.param(
            "redis+sentinel://h/m?ssl_check_hostname=true",
            "use rediss+sentinel:// for TLS",
            id="ssl-on-plain-sentinel",
        ),
        pytest.param(
            "redis+unix:///run/redis.sock?ssl_keyfile=k.pem",
            "ssl_keyfile is a TLS option, and a Unix socket has no TLS: it would be ignored",
            id="ssl-on-unix",
        ),
        pytest.param(
            "redis://h:6379/abc",
            "bad Redis URL redis://h:6379/abc: Redis option db must be a whole number from 0 to 65535, not 'abc'",
            id="db-word",
        ),
        pytest.param("redis://h/-1", "Redis option db must be a whole number from 0 to 65535, not '-1'", id="db-neg"),
        pytest.param("redis://h/65536", "Redis option db must be a whole number from 0 to 65535", id="db-high"),
        pytest.param("redis://h?db=-2", "Redis option db must be a whole number from 0 to 65535", id="db-query-neg"),
        pytest.param("redis://h/1/2", "the path must be /db at most, not '/1/2'", id="db-two-parts"),
        pytest.param("redis://h/3?db=4", "db is 3 in the path but 4 in ?db=: give it once", id="db-disagree"),
        pytest.param("redis://h?db=1&db=2", "db is given twice, 1 and 2: give it once", id="db-twice"),
        pytest.param("redis+unix:///s.sock?db=x", "Redis option db must be a whole number", id="unix-db"),
        pytest.param(
            "redis://h1,h2:6380",
            "several hosts are for redis+cluster:// seeds and redis+sentinel:// sentinels only",
            id="plain-two-hosts",
        ),
        pytest.param("redis+cluster://h1:7000,,h2:7001", "a host is missing in the list of hosts", id="seed-empty"),
        pytest.param("redis+cluster://h1:7000,h2:x", "Port could not be cast to integer value as 'x'", id="seed-port"),
        pytest.param("redis+cluster://h1,h2/2", "Redis Cluster has only database 0", id="cluster-db-path"),
        pytest.param("redis+cluster://h1?db=1", "Redis Cluster has only database 0", id="cluster-db-query"),
        pytest.param(
            "redis+sentinel://s1:26379,s2:26379",
            "the Sentinel service name is missing: redis+sentinel://host:26379/name[/db]",
            id="sentinel-no-service",
        ),
        pytest.param("redis+sentinel://s1//0", "the Sentinel service name is missing", id="sentinel-empty-service"),
        pytest.param("redis+sentinel://s1/m/x", "Redis option db must be a whole number", id="sentinel-db-word"),
        pytest.param("redis+sentinel://s1/m/1/2", "the path must be /db at most, not '/m/1/2'", id="sentinel-path"),
        pytest.param("redis+sentinel://s1/m/1?db=2", "db is 1 in the path but 2 in ?db=", id="sentinel-db-disagree"),
        pytest.param("redis+sentinel://s1:x/m", "Port could not be cast to integer value as 'x'", id="sentinel-port"),
        pytest.param(
            "redis+sentinel://s1/m?sentinel_password=hunter2&sentinel_pasword=x",
            "bad Redis URL redis+sentinel://s1/m?sentinel_password=***&sentinel_pasword=x: "
            "unknown Redis store option 'sentinel_pasword'",
            id="sentinel-typo",
        ),
        pytest.param(
            "redis://h?sentinel_password=hunter2",
            "redis://h?sentinel_password=***: sentinel_password is an option of redis+sentinel:// URLs only",
            id="sentinel-option-on-plain",
        ),
        pytest.param(
            "redis+sentinel://s1/m?health_check_interval=soon",
            "Invalid value for 'health_check_interval'",
            id="sentinel-passed-option",
        ),
        pytest.param(
            "redis+cluster://h1?max_connections=many", "Invalid value for 'max_connections'", id="cluster-passed-option"
        ),
        pytest.param(
            "rediss://h?ssl_password=hunter2&db=x", "bad Redis URL rediss://h?ssl_password=***&db=x", id="ssl-pw-hidden"
        ),
    ],
)
def test_bad_redis_urls_are_one_line_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        store_from_url(url)
    text = str(raised.value)
    assert message in text
    assert "\n" not in text
    assert "hunter2" not in text
    assert "ter2" not in text


@pytest.mark.parametrize(
    ("url", "hosts", "db"),
    [
        pytest.param(
            "redis+cluster://h1:7000,h2:7001,[::1]:7002", [("h1", 7000), ("h2", 7001), ("::1", 7002)], 0, id="c"
        ),
        pytest.param("redis+cluster://h1,h2/", [("h1", 6379), ("h2", 6379)], 0, id="cluster-default-port"),
        pytest.param("redis+cluster://[::1]:7000,h2", [("::1", 7000), ("h2", 6379)], 0, id="cluster-ipv6-first"),
        pytest.param("redis+sentinel://s1,s2:26380/main", [("s1", 26379), ("s2", 26380)], 0, id="sentinel"),
        pytest.param("redis+sentinel://s1,[::1]:26380/main/2", [("s1", 26379), ("::1", 26380)], 2, id="sentinel-ipv6"),
        pytest.param("redis+sentinel://u:p@s1/main/4?db=4", [("s1", 26379)], 4, id="sentinel-db-agrees"),
        pytest.param("redis://h/03?db=3", [("h", 6379)], 3, id="plain-db-agrees"),
    ],
)
def test_urls_of_several_hosts_are_read_without_connecting(url: str, hosts: list[tuple[str, int]], db: int) -> None:
    from ciba_middleware.stores.redis import _parse

    started = time.monotonic()
    store = store_from_url(url)  # these hosts do not exist: nothing is resolved or connected
    assert time.monotonic() - started < 0.1
    store.close()
    target = _parse(url, {})
    assert (target.hosts, target.db) == (hosts, db)


def test_a_store_of_ones_own_client_still_works(redis_url: str) -> None:
    import redis

    from ciba_middleware.stores.redis import RedisTicketStore

    client = redis.Redis.from_url(redis_url)
    store = RedisTicketStore(client, key_prefix="own-client-test:")
    assert store.client is client
    ticket = store.issue(SERVICE, ttl=30)
    assert store.delete(SERVICE, ticket) is True
    store.close()
    with pytest.raises(ConfigurationError, match="needs a client or a connect function, and only one"):
        RedisTicketStore()
    with pytest.raises(ConfigurationError, match="needs a client or a connect function, and only one"):
        RedisTicketStore(client, connect=lambda: client)


def test_the_cli_masks_sentinel_and_tls_passwords() -> None:
    from ciba_middleware.cli import mask_url

    url = "rediss+sentinel://u:one@s1,s2/main?sentinel_password=two&ssl_password=three&key_prefix=k"
    assert mask_url(url) == "rediss+sentinel://u:***@s1,s2/main?sentinel_password=***&ssl_password=***&key_prefix=k"
