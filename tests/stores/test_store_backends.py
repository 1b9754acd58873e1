"""What only the networked stores have: their URLs and options, their extras, how they lay
out their data, and riding over a server restart."""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _servers import PrivateRedis, wait_port
from _stores import drop_postgres_table
from conftest import free_port, unique_name

from ciba_middleware.errors import ConfigurationError, StoreError
from ciba_middleware.stores import TicketStore, store_from_url

from . import _race
from .conftest import RECOVERY, down_and_up

OpenStore = Callable[..., TicketStore]


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param(
            "redis://127.0.0.1:6379/15?key_prefx=a", "unknown Redis store option 'key_prefx'", id="redis-typo"
        ),
        pytest.param(
            "redis://127.0.0.1?socket_timeout=0",
            "Redis option socket_timeout must be a number above 0 and at most 3600, not '0'",
            id="redis-timeout-0",
        ),
        pytest.param(
            "redis://127.0.0.1?socket_connect_timeout=soon",
            "Redis option socket_connect_timeout must be a number above 0 and at most 3600, not 'soon'",
            id="redis-timeout-word",
        ),
        pytest.param(
            "redis://127.0.0.1?retries=-1",
            "Redis option retries must be a whole number from 0 to 100, not '-1'",
            id="redis-retries",
        ),
        pytest.param(
            "redis://127.0.0.1?db=x",
            "bad Redis URL redis://127.0.0.1?db=x: Redis option db must be a whole number from 0 to 65535, not 'x'",
            id="redis-db",
        ),
        pytest.param(
            "redis://u:hunter2@127.0.0.1?db=x", "bad Redis URL redis://u:***@127.0.0.1?db=x", id="redis-password-hidden"
        ),
        pytest.param("redis+cluster://127.0.0.1:7000/3", "Redis Cluster has only database 0", id="cluster-db"),
        pytest.param("postgresql://127.0.0.1/test?tabel=t", 'invalid URI query parameter: "tabel"', id="pg-typo"),
        pytest.param(
            "postgresql://127.0.0.1/test?table=a-b", "PostgreSQL table must be an SQL identifier", id="pg-table"
        ),
        pytest.param(
            "postgresql://127.0.0.1/test?schema=x;drop", "PostgreSQL schema must be an SQL identifier", id="pg-schema"
        ),
        pytest.param("postgresql://127.0.0.1/test?table=" + "t" * 51, "at most 50 characters", id="pg-table-long"),
        pytest.param(
            "postgresql://127.0.0.1/test?pool_timeout=0",
            "PostgreSQL option pool_timeout must be a number above 0",
            id="pg-timeout",
        ),
        pytest.param(
            "postgresql://127.0.0.1/test?statement_timeout=x",
            "PostgreSQL option statement_timeout must be a number",
            id="pg-st",
        ),
        pytest.param(
            "postgresql://127.0.0.1/test?pool_min_size=5&pool_max_size=2",
            "pool_max_size (2) must be at least 1 and at least pool_min_size",
            id="pg-pool-sizes",
        ),
    ],
)
def test_bad_urls_fail_when_the_store_is_built(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        store_from_url(url)
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        pytest.param("redis://127.0.0.1", "redis", "redis", id="redis"),
        pytest.param("redis+unix:///run/redis.sock", "redis", "redis", id="redis+unix"),
        pytest.param("postgresql://127.0.0.1/test", "psycopg", "postgres", id="psycopg"),
        pytest.param("postgres://127.0.0.1/test", "psycopg_pool", "postgres", id="psycopg_pool"),
    ],
)
def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, url: str, module: str, extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ConfigurationError, match=rf'pip install "ciba-middleware\[{extra}\]"'):
        store_from_url(url)


# -- Redis ------------------------------------------------------------------------------------


def test_redis_keeps_one_key_per_ticket_with_native_expiry(redis_url: str, open_store: OpenStore) -> None:
    import redis

    prefix = unique_name() + ":"
    store = open_store(f"{redis_url}?key_prefix={prefix}")
    raw = redis.Redis.from_url(redis_url)
    try:
        ticket = store.issue("a:b", ttl=30)
        assert raw.get(prefix + ticket) == b"a:b"
        assert 29_000 < raw.pttl(prefix + ticket) <= 30_000
        assert store.delete("a:b", ticket) is True
        assert raw.exists(prefix + ticket) == 0
    finally:
        raw.close()


def test_redis_delete_is_one_script_call(private_redis: PrivateRedis, open_store: OpenStore) -> None:
    import redis

    # A private server, so that no other test's commands show in its statistics.
    store = open_store(private_redis.url)
    raw = redis.Redis.from_url(private_redis.url)
    try:
        tickets = [store.issue("42", ttl=30) for _ in range(3)]
        store.delete("42", tickets[0])  # loads the script: the server did not have it yet
        raw.config_resetstat()
        assert store.delete("42", tickets[1]) is True
        assert store.delete("43", tickets[2]) is False
        calls = {name: stats["calls"] for name, stats in raw.info("commandstats").items()}
        # One EVALSHA per delete reaches the server; the GET and DEL counted ran inside
        # the script (no DEL for the other service's ticket); the rest is this INFO.
        assert calls == {"cmdstat_evalsha": 2, "cmdstat_get": 2, "cmdstat_del": 1, "cmdstat_config|resetstat": 1}
    finally:
        raw.close()


def test_redis_a_flushed_script_or_a_killed_connection_fails_no_delete(
    private_redis: PrivateRedis, open_store: OpenStore
) -> None:
    import redis

    store = open_store(private_redis.url)
    raw = redis.Redis.from_url(private_redis.url)
    try:
        tickets = [store.issue("42", ttl=30) for _ in range(3)]
        assert store.delete("42", tickets[0]) is True
        raw.script_flush()
        # NOSCRIPT: the script is loaded again and run again, within the call.
        assert store.delete("42", tickets[1]) is True
        # The connection the store holds between calls is closed by the server: the
        # call's one more try (retries=1) makes a fresh one.
        raw.client_kill_filter(_type="normal", skipme=True)
        assert store.delete("42", tickets[2]) is True
    finally:
        raw.close()


def test_redis_without_retries_a_killed_connection_fails_one_call_only(
    private_redis: PrivateRedis, open_store: OpenStore
) -> None:
    import redis

    store = open_store(f"{private_redis.url}?retries=0")
    raw = redis.Redis.from_url(private_redis.url)
    try:
        tickets = [store.issue("42", ttl=30) for _ in range(2)]
        assert store.delete("42", tickets[0]) is True
        raw.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(StoreError, match="redis: "):
            store.delete("42", tickets[1])
        # The server never got that delete; the next call takes a fresh connection.
        assert store.delete("42", tickets[1]) is True
    finally:
        raw.close()


def test_redis_a_forked_child_uses_connections_of_its_own(redis_url: str, open_store: OpenStore) -> None:
    """As a gunicorn worker forked after the store was used: replies must never cross."""
    store = open_store(f"{redis_url}?key_prefix={unique_name()}:")
    tickets = [store.issue("42", ttl=30) for _ in range(301)]
    assert store.delete("42", tickets[0]) is True  # the parent holds a connection now
    _replies_never_cross_a_fork(store, tickets[1:])


def test_redis_a_store_of_ones_own_client_needs_one_connection_and_gives_it_back(redis_url: str) -> None:
    import redis

    from ciba_middleware.stores.redis import RedisTicketStore

    client = redis.Redis.from_url(redis_url, max_connections=1)
    store = RedisTicketStore(client, key_prefix=f"{unique_name()}:")
    # Every command of the store runs on the connection it holds between calls.
    ticket = store.issue("42", ttl=30)
    store.ping()
    assert store.exists("42", ticket)
    assert store.claim("jti-1", 30) is True
    assert store.claim("jti-1", 30) is False
    assert store.delete("42", ticket) is True
    store.close()
    # The connection is the pool's again.
    assert client.ping() is True
    client.close()


def test_redis_cluster_is_built_from_its_url_and_closes_every_socket(
    redis_cluster: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.cluster import RedisCluster

    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    store = store_from_url(f"redis+cluster://127.0.0.1:{redis_cluster.port}?key_prefix={unique_name()}:")
    assert isinstance(store.client, RedisCluster)  # type: ignore[attr-defined]
    ticket = store.issue("42", ttl=30)
    assert store.delete("42", ticket) is True
    store.close()
    del store
    gc.collect()
    # redis-py's RedisCluster.close() alone leaves a socket for the garbage collector.
    assert [str(u.exc_value) for u in unraisable] == []


# -- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_creates_its_schema_and_table(postgres_url: str, open_store: OpenStore) -> None:
    import psycopg

    schema, table = unique_name(), unique_name()
    try:
        store = open_store(f"{postgres_url}?schema={schema}&table={table}")
        ticket = store.issue("42", ttl=30)
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                f'SELECT service, expires_at - now() FROM "{schema}"."{table}" WHERE ticket = %s', (ticket,)
            ).fetchone()
        assert row is not None
        assert row[0] == "42"
        assert 29 < row[1].total_seconds() <= 30
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_postgres_schema_creation_is_safe_when_processes_start_at_once(postgres_url: str) -> None:
    import psycopg

    schema, table = unique_name(), unique_name()
    processes = 4
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    url = f"{postgres_url}?schema={schema}&table={table}"
    workers = [context.Process(target=_race.open_store, args=(url, barrier, results)) for _ in range(processes)]
    try:
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=60) for _ in range(processes)]
        for worker in workers:
            worker.join(30)
        assert outcomes == ["ok"] * processes
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_postgres_works_without_create_rights_on_an_existing_table(postgres_url: str, open_store: OpenStore) -> None:
    import psycopg

    table, role = unique_name(), unique_name()
    open_store(f"{postgres_url}?table={table}").close()  # created by the owner
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT SELECT, INSERT, DELETE ON "{table}" TO "{role}"')
        conn.execute(f'REVOKE CREATE ON SCHEMA public FROM "{role}"')
    try:
        store = open_store(postgres_url.replace("//postgres@", f"//{role}@") + f"?table={table}")
        ticket = store.issue("42", ttl=30)
        assert store.delete("42", ticket) is True
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_postgres_sweeps_expired_rows(postgres_url: str, open_store: OpenStore) -> None:
    table = unique_name()
    try:
        store = open_store(f"{postgres_url}?table={table}")
        expired = [store.issue("42", ttl=0.1) for _ in range(3)]
        kept = store.issue("42", ttl=30)
        time.sleep(0.2)
        assert store.sweep() == 3  # type: ignore[attr-defined]
        assert store.sweep() == 0  # type: ignore[attr-defined]
        assert not any(store.exists("42", ticket) for ticket in expired)
        assert store.exists("42", kept)
    finally:
        drop_postgres_table(postgres_url, table)


# -- a server restart -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_the_store_fails_fast_while_down_and_reconnects_by_itself(
    kind: str, request: pytest.FixtureRequest, open_store: OpenStore
) -> None:
    server, url = down_and_up(kind, request)
    store = open_store(url)
    before = store.issue("42", ttl=60)

    server.kill()
    for call in (lambda: store.delete("42", before), lambda: store.issue("42"), store.ping):
        started = time.monotonic()
        with pytest.raises(StoreError):
            call()
        assert time.monotonic() - started < 1.5

    server.start()
    back = time.monotonic()
    tries = 0
    while True:
        tries += 1
        try:
            after = store.issue("42", ttl=60)
            break
        except StoreError:
            assert time.monotonic() - back < RECOVERY[kind]
            time.sleep(0.1)
    # The dead connection is replaced within the call: the first one after the restart works.
    assert tries == 1
    assert store.delete("42", after) is True
    # PostgreSQL kept the table on disk; this Redis runs without persistence.
    assert store.delete("42", before) is (kind == "postgresql")


#: The longest a call may take against a frozen server with the URLs of ``down_and_up``.
#: Redis: two tries (retries=1) of socket_timeout 0.5 s. PostgreSQL: statement_timeout
#: 0.5 s + 1 s before the watchdog drops the connection, + its 0.1 s tick; plus slack for
#: a loaded CI machine.
FROZEN_BOUND = {"redis": 2.0, "postgresql": 2.5}


@pytest.mark.parametrize("idle", [0.0, 1.5], ids=["busy", "after-idle"])
@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_a_frozen_server_gives_a_store_error_in_bounded_time(
    kind: str, idle: float, request: pytest.FixtureRequest, open_store: OpenStore
) -> None:
    server, url = down_and_up(kind, request)
    store = open_store(url)
    ticket = store.issue("42", ttl=60)
    # After a second without calls the PostgreSQL watchdog sleeps: the next call wakes it.
    time.sleep(idle)
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StoreError):
            store.delete("42", ticket)
        assert time.monotonic() - started < FROZEN_BOUND[kind]
    finally:
        server.pause(False)
    # The server may still run the delete it had received once it thaws ("the ticket may
    # not have been deleted" cuts both ways); what matters is that the store works again.
    back = time.monotonic()
    while True:
        try:
            fresh = store.issue("42", ttl=60)
            break
        except StoreError:
            assert time.monotonic() - back < RECOVERY[kind]
            time.sleep(0.1)
    assert store.delete("42", fresh) is True


def test_postgres_a_forked_child_uses_connections_of_its_own(postgres_url: str, open_store: OpenStore) -> None:
    """As a gunicorn worker forked after the store was used: the parent's connection, which
    the store holds between calls, must never carry the child's statements."""
    table = unique_name()
    try:
        store = open_store(f"{postgres_url}?table={table}")
        tickets = [store.issue("42", ttl=30) for _ in range(101)]
        assert store.delete("42", tickets[0]) is True
        _replies_never_cross_a_fork(store, tickets[1:])
    finally:
        drop_postgres_table(postgres_url, table)


def test_postgres_connections_held_between_calls_go_back_to_the_pool(
    postgres_url: str, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from ciba_middleware.stores import postgresql

    # Long enough that a loaded machine (CI's parallel workers) cannot pass it between the
    # threads' end and the first look at the pool.
    monkeypatch.setattr(postgresql, "HOLD", 1.0)
    table = unique_name()
    try:
        store = open_store(f"{postgres_url}?table={table}&pool_min_size=2&pool_max_size=2")
        pool = store._get_pool()  # type: ignore[attr-defined]
        # Both connections open and the table made first: on a loaded machine a call that
        # waited for them could pass the barrier's timeout, fail, and give its connection back.
        pool.wait(timeout=30)
        store.ping()
        # Two calls at once: each holds a connection afterwards, none is in the pool.
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def both(conn: object, cursor: object) -> None:
            barrier.wait(timeout=30)

        def call() -> None:
            try:
                store._run(both)  # type: ignore[attr-defined]
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert pool.get_stats().get("pool_available", 0) == 0
        # Calls one at a time use one of them; the other goes back once past HOLD.
        deadline = time.monotonic() + 5
        while pool.get_stats().get("pool_available", 0) < 1:
            assert time.monotonic() < deadline
            store.ping()
            time.sleep(0.05)
    finally:
        drop_postgres_table(postgres_url, table)


def test_postgres_close_closes_the_connections_held_between_calls(postgres_url: str) -> None:
    import psycopg

    table, name = unique_name(), unique_name("ciba held")
    store = store_from_url(f"{postgres_url}?table={table}&application_name={name.replace(' ', '%20')}")
    try:
        ticket = store.issue("42", ttl=30)
        assert store.delete("42", ticket) is True
        store.close()
        with psycopg.connect(postgres_url) as conn:
            deadline = time.monotonic() + 5
            while True:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
                ).fetchone()
                assert row is not None
                if row[0] == 0:
                    break
                assert time.monotonic() < deadline, f"{row[0]} connections left open"
                time.sleep(0.05)
    finally:
        drop_postgres_table(postgres_url, table)


def test_postgres_passes_libpq_options_through(postgres_url: str, open_store: OpenStore) -> None:
    import psycopg

    table, name = unique_name(), unique_name("ciba test")
    try:
        store = open_store(f"{postgres_url}?table={table}&application_name={name.replace(' ', '%20')}")
        store.ping()
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
        assert row is not None
        assert row[0] >= 1
    finally:
        drop_postgres_table(postgres_url, table)


def test_redis_sentinel_through_a_client_of_ones_own(private_redis: PrivateRedis, tmp_path: Path) -> None:
    """The Sentinel recipe of docs/operations.md, against a real Sentinel."""
    from redis.sentinel import Sentinel

    from ciba_middleware.stores.redis import RedisTicketStore

    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor main 127.0.0.1 {private_redis.port} 1\n")
    sentinel_process = subprocess.Popen(
        [private_redis.binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, up=True)
        sentinel = Sentinel([("127.0.0.1", port)], socket_timeout=1)
        store = RedisTicketStore(
            sentinel.master_for("main", socket_timeout=1, socket_connect_timeout=1),
            key_prefix="ciba:ticket:",
            default_ttl=600,
        )
        ticket = store.issue("715948317")
        assert store.exists("715948317", ticket)
        assert store.delete("42", ticket) is False
        assert store.delete("715948317", ticket) is True
        store.close()
    finally:
        sentinel_process.kill()
        sentinel_process.wait(5)


def test_the_redis_store_translates_exactly_the_schemes_it_is_given() -> None:
    """stores.SCHEMES names the Redis schemes; the store's table to redis-py's covers those alone."""
    from ciba_middleware.stores import schemes_of
    from ciba_middleware.stores.redis import _CLIENT_SCHEMES, RedisTicketStore

    assert set(_CLIENT_SCHEMES) == set(schemes_of(RedisTicketStore))


def _replies_never_cross_a_fork(store: Any, tickets: list[str]) -> None:
    """Parent and forked child delete at once, the child for another service: the child
    finds nothing and the parent everything, so no reply went to the other process."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 3
        try:
            code = 0 if not any(store.delete("43", ticket) for ticket in tickets) else 2
        finally:
            os._exit(code)
    parent = [store.delete("42", ticket) for ticket in tickets]
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert all(parent)
