"""What only the networked stores do for the CIBA family's records: how they lay them out,
one round trip per call, outages, Redis Cluster and Sentinel, PostgreSQL behind PgBouncer.

The contract itself (every store alike) is tests/stores/test_records.py."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _servers import PrivateRedis, PrivateRedisCluster, PrivateSentinel
from _stores import drop_postgres_table
from conftest import free_port, unique_name

from ciba_middleware.errors import StoreError
from ciba_middleware.stores import TicketStore, store_from_url

from . import _race
from .conftest import RECOVERY, down_and_up
from .test_pgbouncer import PgBouncer, server_connection_settings
from .test_records import records

# Servers started, stopped and failed over: left to 3.11 (noxfile.py's SUBSET).
pytestmark = pytest.mark.slow

OpenStore = Callable[..., TicketStore]
SERVICE = "715948317"


# -- Redis ------------------------------------------------------------------------------------


def test_redis_keeps_one_key_per_record_with_native_expiry(redis_url: str, open_store: OpenStore) -> None:
    import redis

    prefix = unique_name() + ":"
    store = records(open_store(f"{redis_url}?key_prefix={prefix}"))
    raw = redis.Redis.from_url(redis_url)
    try:
        key = f"{prefix}record:9:{SERVICE}:areq:1".encode()
        assert store.add(SERVICE, "areq:1", b"\x00pending", 30) is True
        assert raw.get(key) == b"\x00pending"
        assert 29_000 < raw.pttl(key) <= 30_000
        # A service's length in bytes: "é" is two.
        assert store.add("é", "k", b"v", 30) is True
        assert raw.get(f"{prefix}record:2:é:k".encode()) == b"v"
        # KEEPTTL: a swap without ttl leaves the key's expiry as it was.
        raw.pexpire(key, 20_000)
        assert store.swap(SERVICE, "areq:1", b"\x00pending", b"done") is True
        assert raw.get(key) == b"done"
        assert 19_000 < raw.pttl(key) <= 20_000
        assert store.swap(SERVICE, "areq:1", b"done", b"again", ttl=90) is True
        assert 89_000 < raw.pttl(key) <= 90_000
        assert store.take(SERVICE, "areq:1") == b"again"
        assert raw.exists(key) == 0
    finally:
        raw.close()


def test_redis_each_record_call_is_one_command(private_redis: PrivateRedis, open_store: OpenStore) -> None:
    import redis

    # A private server, so that no other test's commands show in its statistics.
    store = records(open_store(private_redis.url))
    raw = redis.Redis.from_url(private_redis.url)
    try:
        # Loads the scripts: the server did not have them yet.
        store.swap(SERVICE, "warm", b"", b"")
        store.take(SERVICE, "warm")
        raw.config_resetstat()
        assert store.add(SERVICE, "k", b"1", 60) is True
        assert store.add(SERVICE, "k", b"1", 60) is False
        assert store.get(SERVICE, "k") == b"1"
        assert store.swap(SERVICE, "k", b"1", b"2") is True
        assert store.swap(SERVICE, "k", b"1", b"3", ttl=60) is False
        assert store.take(SERVICE, "k") == b"2"
        calls = {name: stats["calls"] for name, stats in raw.info("commandstats").items()}
        # One command per call reaches the server; the GETs, the SET and the DEL counted
        # beside EVALSHA ran inside the scripts (no SET for the swap that lost).
        assert calls == {
            "cmdstat_set": 3,
            "cmdstat_get": 4,
            "cmdstat_evalsha": 3,
            "cmdstat_del": 1,
            "cmdstat_config|resetstat": 1,
        }
    finally:
        raw.close()


def test_redis_a_flushed_script_or_a_killed_connection_fails_no_swap(
    private_redis: PrivateRedis, open_store: OpenStore
) -> None:
    import redis

    store = records(open_store(private_redis.url))
    raw = redis.Redis.from_url(private_redis.url)
    try:
        store.add(SERVICE, "k", b"0", 60)
        assert store.swap(SERVICE, "k", b"0", b"1") is True
        raw.script_flush()
        # NOSCRIPT: the swap script (not the delete's) is loaded and run again, within the call.
        assert store.swap(SERVICE, "k", b"1", b"2") is True
        # And the delete's script after it, on the same connection.
        assert store.delete(SERVICE, store.issue(SERVICE, ttl=60)) is True
        raw.script_flush()
        store.add(SERVICE, "other", b"x", 60)
        assert store.take(SERVICE, "other") == b"x"
        raw.client_kill_filter(_type="normal", skipme=True)
        assert store.swap(SERVICE, "k", b"2", b"3") is True
        raw.client_kill_filter(_type="normal", skipme=True)
        assert store.take(SERVICE, "k") == b"3"
    finally:
        raw.close()


def test_redis_without_retries_a_killed_connection_fails_one_record_call_only(
    private_redis: PrivateRedis, open_store: OpenStore
) -> None:
    import redis

    store = records(open_store(f"{private_redis.url}?retries=0"))
    raw = redis.Redis.from_url(private_redis.url)
    try:
        store.add(SERVICE, "k", b"0", 60)
        raw.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(StoreError, match=r"^redis: "):
            store.swap(SERVICE, "k", b"0", b"1")
        assert store.swap(SERVICE, "k", b"0", b"1") is True
    finally:
        raw.close()


def test_redis_records_through_a_client_of_ones_own(redis_url: str) -> None:
    """A client with a single connection (redis-py's own path, not the held connections),
    decoding its replies: JSON values still come back as the bytes stored."""
    import redis

    from ciba_middleware.stores.redis import RedisTicketStore

    prefix = unique_name() + ":"
    client = redis.Redis.from_url(redis_url, single_connection_client=True, decode_responses=True)
    store = RedisTicketStore(client, key_prefix=prefix)
    try:
        assert store._held is None
        value = '{"state":"pending","user":"é"}'.encode()
        assert store.add(SERVICE, "k", value, 60) is True
        assert store.add(SERVICE, "k", value, 60) is False
        assert store.get(SERVICE, "k") == value
        assert store.swap(SERVICE, "k", value, b"{}") is True
        assert store.swap(SERVICE, "k", value, b"{}") is False
        assert store.take(SERVICE, "k") == b"{}"
        assert store.take(SERVICE, "k") is None
    finally:
        store.close()
        client.close()


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_a_forked_child_reads_records_on_connections_of_its_own(
    kind: str, redis_url: str, postgres_url: str, open_store: OpenStore
) -> None:
    """As a gunicorn worker forked after the store was used: parent and child read at once,
    each its own service's records, and each gets its own values back."""
    table = unique_name()
    url = f"{redis_url}?key_prefix={table}:" if kind == "redis" else f"{postgres_url}?table={table}"
    try:
        store = records(open_store(url))
        keys = [f"k{i}" for i in range(100)]
        for key in keys:
            store.add("parent", key, b"parent " + key.encode(), 60)
            store.add("child", key, b"child " + key.encode(), 60)
        assert store.get("parent", "k0") == b"parent k0"  # the parent holds a connection now
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 3
            try:
                code = 0 if all(store.get("child", key) == b"child " + key.encode() for key in keys) else 2
            finally:
                os._exit(code)
        parent = [store.get("parent", key) == b"parent " + key.encode() for key in keys]
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert all(parent)
    finally:
        if kind == "postgresql":
            drop_postgres_table(postgres_url, table)


# -- PostgreSQL -------------------------------------------------------------------------------


def _columns(postgres_url: str, schema: str, table: str) -> list[tuple[str, str, str]]:
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, table),
        ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def test_postgres_creates_the_record_table_on_the_first_record_call(postgres_url: str, open_store: OpenStore) -> None:
    import psycopg

    schema, table = unique_name(), unique_name()
    try:
        store = records(open_store(f"{postgres_url}?schema={schema}&table={table}"))
        store.delete(SERVICE, store.issue(SERVICE, ttl=60))  # type: ignore[attr-defined]
        # The fail API alone never creates it (nor needs the right to).
        assert _columns(postgres_url, schema, f"{table}_records") == []
        assert store.add(SERVICE, "k", b"\x00\xff", 30) is True
        assert _columns(postgres_url, schema, f"{table}_records") == [
            ("service", "text", "NO"),
            ("key", "text", "NO"),
            ("value", "bytea", "NO"),
            ("expires_at", "timestamp with time zone", "NO"),
        ]
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                f'SELECT value, expires_at - now() FROM "{schema}"."{table}_records" WHERE service = %s AND key = %s',
                (SERVICE, "k"),
            ).fetchone()
            indexes = conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s ORDER BY indexname",
                (schema, f"{table}_records"),
            ).fetchall()
        assert row is not None
        assert row[0] == b"\x00\xff"
        assert 29 < row[1].total_seconds() <= 30
        assert [index for (index,) in indexes] == [
            f"CREATE INDEX {table}_records_exp ON {schema}.{table}_records USING btree (expires_at)",
            f"CREATE UNIQUE INDEX {table}_records_pkey ON {schema}.{table}_records USING btree (service, key)",
        ]
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_postgres_records_of_a_fifty_character_table_name(postgres_url: str, open_store: OpenStore) -> None:
    table = ("t" + unique_name())[:50].ljust(50, "x")
    try:
        store = records(open_store(f"{postgres_url}?table={table}"))
        assert store.add(SERVICE, "k", b"v", 30) is True
        assert store.take(SERVICE, "k") == b"v"
    finally:
        drop_postgres_table(postgres_url, table)


def _round_trips(store: Any, calls: Callable[[], object]) -> list[str]:
    """What the store's one connection sent to the server during ``calls``, from libpq's
    own trace: each Sync (a statement of the extended protocol, parse, bind and execute
    sent together) and each simple Query is one round trip."""
    from psycopg import pq

    with tempfile.TemporaryFile("w+") as trace:

        def start(conn: Any, cursor: Any) -> None:
            conn.pgconn.trace(trace.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

        store._run(start)
        try:
            calls()
        finally:
            store._run(lambda conn, cursor: conn.pgconn.untrace())
        trace.seek(0)
        lines = trace.read().splitlines()
    sent = [line.split("\t") for line in lines if line.startswith("F\t")]
    # The trace of the untrace call's own (empty) work is nothing: it runs no statement.
    return [parts[2].strip() for parts in sent if parts[2].strip() in ("Sync", "Query")]


def test_postgres_each_record_call_is_one_statement(postgres_url: str, open_store: OpenStore) -> None:
    table = unique_name()
    try:
        store = records(open_store(f"{postgres_url}?table={table}&pool_max_size=1"))
        store.add(SERVICE, "warm", b"", 60)  # the table made, and seen

        def calls() -> None:
            assert store.add(SERVICE, "k", b"1", 60) is True
            assert store.add(SERVICE, "k", b"1", 60) is False
            assert store.get(SERVICE, "k") == b"1"
            assert store.swap(SERVICE, "k", b"1", b"2") is True
            assert store.swap(SERVICE, "k", b"2", b"3", ttl=60) is True
            assert store.swap(SERVICE, "k", b"1", b"3", ttl=60) is False
            assert store.take(SERVICE, "k") == b"3"

        # Before psycopg prepares the statements: one round trip each.
        assert _round_trips(store, calls) == ["Sync"] * 7
        # psycopg prepares a statement at its sixth run on a connection, once, with a round
        # trip of its own (its Parse), as for the tickets' statements; from then on, one each.
        for _ in range(5):
            calls()
        assert _round_trips(store, calls) == ["Sync"] * 7
    finally:
        drop_postgres_table(postgres_url, table)


def test_postgres_records_work_without_create_rights_on_an_existing_table(
    postgres_url: str, open_store: OpenStore
) -> None:
    import psycopg

    table, role = unique_name(), unique_name()
    owner = records(open_store(f"{postgres_url}?table={table}"))
    owner.add(SERVICE, "made", b"by the owner", 60)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{table}", "{table}_records" TO "{role}"')
        conn.execute(f'REVOKE CREATE ON SCHEMA public FROM "{role}"')
    try:
        store = records(open_store(postgres_url.replace("//postgres@", f"//{role}@") + f"?table={table}"))
        assert store.add(SERVICE, "k", b"1", 60) is True
        assert store.swap(SERVICE, "k", b"1", b"2", ttl=60) is True
        assert store.take(SERVICE, "made") == b"by the owner"
        # Without the table and without the right to create it: the store's error, named.
        other = records(open_store(postgres_url.replace("//postgres@", f"//{role}@") + f"?table={unique_name()}"))
        with pytest.raises(StoreError, match=r"^postgresql: permission denied for schema public"):
            other.add(SERVICE, "k", b"1", 60)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_records"')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "prepared"])
def test_postgres_a_dropped_record_table_is_created_again_by_the_next_call(
    postgres_url: str, open_store: OpenStore, caplog: pytest.LogCaptureFixture, warm: bool
) -> None:
    import psycopg

    table = unique_name()
    try:
        store = records(open_store(f"{postgres_url}?table={table}&pool_max_size=2"))
        store.add(SERVICE, "before", b"v", 60)
        if warm:  # psycopg prepares a statement after five runs: one that names the old table
            for _ in range(8):
                assert store.get(SERVICE, "before") == b"v"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{table}_records"')

        assert store.get(SERVICE, "before") is None  # gone with the table
        assert f'the record table "{table}_records" was gone; creating it again' in caplog.text
        assert store.add(SERVICE, "after", b"w", 60) is True
        assert store.swap(SERVICE, "after", b"w", b"x") is True
        assert store.take(SERVICE, "after") == b"x"
        # The tickets' table was never touched.
        ticket = store.issue(SERVICE, ttl=60)  # type: ignore[attr-defined]
        assert store.delete(SERVICE, ticket) is True  # type: ignore[attr-defined]
    finally:
        drop_postgres_table(postgres_url, table)


def test_postgres_sweeps_expired_records(
    postgres_url: str, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from ciba_middleware.stores import postgresql

    table = unique_name()
    try:
        store: Any = open_store(f"{postgres_url}?table={table}")
        assert store.sweep() == 0  # no record table yet: swept tickets only, nothing created
        assert _columns(postgres_url, "public", f"{table}_records") == []
        for i in range(3):
            store.add(SERVICE, f"old{i}", b"v", 0.1)
        store.issue(SERVICE, ttl=0.1)
        store.add(SERVICE, "kept", b"v", 60)
        time.sleep(0.2)
        assert store.sweep() == 4  # three records, one ticket
        assert store.sweep() == 0
        assert store.get(SERVICE, "kept") == b"v"

        # And every _SWEEP_EVERY-th add in a process sweeps the records by itself.
        monkeypatch.setattr(postgresql, "_SWEEP_EVERY", 4)
        store._added = 0
        for i in range(3):
            store.add(SERVICE, f"old{i}", b"v", 0.1)
        time.sleep(0.2)
        with psycopg.connect(postgres_url) as conn:
            count = f'SELECT count(*) FROM "{table}_records"'
            assert conn.execute(count).fetchone() == (4,)
            store.add(SERVICE, "fourth", b"v", 60)
            assert conn.execute(count).fetchone() == (2,)  # "kept" and "fourth"
    finally:
        drop_postgres_table(postgres_url, table)


def test_postgres_a_service_it_cannot_store_cannot_add(postgres_url: str, open_store: OpenStore) -> None:
    table = unique_name()
    try:
        store = records(open_store(f"{postgres_url}?table={table}"))
        for service in ("a\x00b", "\ud800"):
            with pytest.raises(ValueError, match="cannot hold NUL or lone surrogates"):
                store.add(service, "k", b"v", 60)
    finally:
        drop_postgres_table(postgres_url, table)


# -- outages ----------------------------------------------------------------------------------


def _record_calls(store: Any) -> list[Callable[[], object]]:
    return [
        lambda: store.add(SERVICE, "new", b"v", 60),
        lambda: store.get(SERVICE, "k"),
        lambda: store.swap(SERVICE, "k", b"v", b"w"),
        lambda: store.swap(SERVICE, "k", b"v", b"w", ttl=60),
        lambda: store.take(SERVICE, "k"),
    ]


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_record_calls_fail_fast_while_down_and_work_again(
    kind: str, request: pytest.FixtureRequest, open_store: OpenStore
) -> None:
    server, url = down_and_up(kind, request)
    store = records(open_store(url))
    assert store.add(SERVICE, "k", b"v", 60) is True

    server.kill()
    for call in _record_calls(store):
        started = time.monotonic()
        with pytest.raises(StoreError, match=f"^{kind}: "):
            call()
        assert time.monotonic() - started < 1.5

    server.start()
    back = time.monotonic()
    while True:
        try:
            kept = store.get(SERVICE, "k")
            break
        except StoreError:
            assert time.monotonic() - back < RECOVERY[kind]
            time.sleep(0.1)
    # PostgreSQL kept the table on disk; this Redis runs without persistence.
    assert kept == (b"v" if kind == "postgresql" else None)
    assert store.add(SERVICE, "after", b"1", 60) is True
    assert store.swap(SERVICE, "after", b"1", b"2") is True
    assert store.take(SERVICE, "after") == b"2"


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_a_frozen_server_gives_record_calls_a_store_error_in_bounded_time(
    kind: str, request: pytest.FixtureRequest, open_store: OpenStore
) -> None:
    from .test_store_backends import FROZEN_BOUND

    server, url = down_and_up(kind, request)
    store = records(open_store(url))
    store.add(SERVICE, "k", b"v", 60)
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StoreError):
            store.swap(SERVICE, "k", b"v", b"w")
        assert time.monotonic() - started < FROZEN_BOUND[kind]
    finally:
        server.pause(False)
    back = time.monotonic()
    while True:
        try:
            store.add(SERVICE, "fresh", b"1", 60)
            break
        except StoreError:
            assert time.monotonic() - back < RECOVERY[kind]
            time.sleep(0.1)
    assert store.take(SERVICE, "fresh") == b"1"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("redis://:hunter2@127.0.0.1:{port}/0?socket_connect_timeout=0.5", id="redis"),
        pytest.param("postgresql://postgres:hunter2@127.0.0.1:{port}/postgres?connect_timeout=1", id="postgresql"),
    ],
)
def test_a_record_calls_store_error_names_no_password(url: str, open_store: OpenStore) -> None:
    store = records(open_store(url.format(port=free_port())))
    for call in _record_calls(store):
        with pytest.raises(StoreError) as raised:
            call()
        assert "hunter2" not in str(raised.value)
        assert "\n" not in str(raised.value)


# -- Redis Cluster and Sentinel ---------------------------------------------------------------


def test_records_spread_over_a_three_master_cluster(
    redis_three_masters: PrivateRedisCluster, open_store: OpenStore
) -> None:
    cluster = redis_three_masters
    store = records(open_store(cluster.url(query="socket_timeout=0.5&socket_connect_timeout=0.5")))
    keys = [f"areq:{i}" for i in range(30)]
    assert all(store.add(SERVICE, key, b"pending", 60) for key in keys)
    assert all(count > 0 for count in cluster.keys_per_node())
    assert all(store.swap(SERVICE, key, b"pending", b"done", ttl=60) for key in keys)
    assert [store.get(SERVICE, key) for key in keys] == [b"done"] * 30
    assert [store.take(SERVICE, key) for key in keys] == [b"done"] * 30
    assert cluster.keys_per_node() == [0, 0, 0]

    cluster.kill()
    for call in _record_calls(store):
        with pytest.raises(StoreError, match=r"^redis: "):
            call()
    cluster.start()
    deadline = time.monotonic() + 15
    while True:
        try:
            assert store.add(SERVICE, "back", b"1", 60) is True
            break
        except StoreError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert store.take(SERVICE, "back") == b"1"


def test_threads_racing_on_records_through_a_cluster_lose_no_update(
    redis_three_masters: PrivateRedisCluster, open_store: OpenStore
) -> None:
    store = records(open_store(redis_three_masters.url()))
    counters = [f"counter:{i}" for i in range(3)]
    for key in counters:
        store.add(SERVICE, key, b"0", 60)
    with ThreadPoolExecutor(6) as pool:
        tries = list(pool.map(lambda i: _race.count_up(store, SERVICE, counters[i % 3], 20), range(6)))
    assert [store.get(SERVICE, key) for key in counters] == [b"40"] * 3
    assert sum(tries) >= 120


def test_records_through_sentinel_survive_a_failover(redis_sentinel: PrivateSentinel, open_store: OpenStore) -> None:
    import redis

    store = records(open_store(redis_sentinel.url("/3", "socket_timeout=0.5&socket_connect_timeout=0.5")))
    keys = [f"areq:{i}" for i in range(10)]
    assert all(store.add(SERVICE, key, b"pending", 120) for key in keys)
    assert store.swap(SERVICE, keys[0], b"pending", b"authorized") is True
    with redis.Redis(port=redis_sentinel.master.port, db=3) as master:
        assert master.get(f"ciba:ticket:record:9:{SERVICE}:{keys[0]}") == b"authorized"
    # Every write has reached the replica before the master dies (replication is asynchronous).
    redis_sentinel.wait_replicated()
    old_port = redis_sentinel.master.port
    redis_sentinel.master.kill()

    started = time.monotonic()
    outcomes: list[str] = []
    while True:
        assert time.monotonic() - started < 30.0, outcomes
        try:
            # Never silently wrong: the replicated value, or a StoreError and again.
            swapped = store.swap(SERVICE, keys[0], b"authorized", b"issued")
            outcomes.append("ok")
            break
        except StoreError:
            outcomes.append("500")
            time.sleep(0.05)
    assert swapped is True
    assert "500" in outcomes
    assert redis_sentinel.master_port() != old_port
    assert store.get(SERVICE, keys[0]) == b"issued"
    assert [store.take(SERVICE, key) for key in keys[1:]] == [b"pending"] * 9


# -- PostgreSQL behind PgBouncer --------------------------------------------------------------


@pytest.fixture(scope="module")
def pgbouncer(postgres_url: str) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(postgres_url)
    yield bouncer
    bouncer.close()


@pytest.fixture
def table(postgres_url: str) -> Iterator[str]:
    name = unique_name()
    yield name
    drop_postgres_table(postgres_url, name)


def test_records_through_pgbouncer_lose_no_update_and_leave_nothing_behind(
    pgbouncer: PgBouncer, table: str, open_store: OpenStore
) -> None:
    before = server_connection_settings(pgbouncer)
    store = records(open_store(f"{pgbouncer.url}?table={table}&statement_timeout=0.75"))
    counters = [f"counter:{i}" for i in range(2)]
    for key in counters:
        assert store.add(SERVICE, key, b"0", 60) is True
    barrier = threading.Barrier(8)

    def count(index: int) -> int:
        barrier.wait(10)
        return _race.count_up(store, SERVICE, counters[index % 2], 25)

    with ThreadPoolExecutor(8) as pool:
        tries = list(pool.map(count, range(8)))
    assert [store.get(SERVICE, key) for key in counters] == [b"100"] * 2
    assert sum(tries) >= 200
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda _: store.take(SERVICE, counters[0]), range(8)))
    assert sorted(taken, key=lambda value: value is None) == [b"100"] + [None] * 7
    # No statement was prepared, no session setting left on PgBouncer's server connections.
    assert server_connection_settings(pgbouncer) == before


def test_each_record_call_through_pgbouncer_is_one_simple_query(
    pgbouncer: PgBouncer, table: str, open_store: OpenStore
) -> None:
    store = records(open_store(f"{pgbouncer.url}?table={table}&pool_max_size=1"))
    store.add(SERVICE, "warm", b"", 60)

    def calls() -> None:
        assert store.add(SERVICE, "k", b"\x00\xff'", 60) is True
        assert store.get(SERVICE, "k") == b"\x00\xff'"
        assert store.swap(SERVICE, "k", b"\x00\xff'", b"2") is True
        assert store.swap(SERVICE, "k", b"2", b"3", ttl=60) is True
        assert store.take(SERVICE, "k") == b"3"

    # The statement timeout and the statement, one Query: one round trip, one transaction.
    assert _round_trips(store, calls) == ["Query"] * 5


def test_the_statement_timeout_holds_for_records_behind_pgbouncer(
    pgbouncer: PgBouncer, table: str, postgres_url: str
) -> None:
    import psycopg

    store = records(store_from_url(f"{pgbouncer.url}?table={table}&statement_timeout=0.5"))
    try:
        store.add(SERVICE, "k", b"v", 60)
        with psycopg.connect(postgres_url) as locker:
            locker.execute(f'LOCK TABLE "{table}_records" IN ACCESS EXCLUSIVE MODE')
            started = time.monotonic()
            with pytest.raises(StoreError, match="canceling statement due to statement timeout"):
                store.swap(SERVICE, "k", b"v", b"w")
            assert 0.4 < time.monotonic() - started < 1.5
        assert store.swap(SERVICE, "k", b"v", b"w") is True
    finally:
        store.close()
