"""PostgreSQL faults that are not outages: a database that was read-only, a table dropped
under a running store, and a server the store cannot reach at all (named, not waited on)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from _servers import PrivatePostgres
from _stores import drop_postgres_table
from conftest import ciba_env, free_port, unique_name

from ciba_middleware.errors import StoreError
from ciba_middleware.stores import TicketStore

from ._cli import cli

OpenStore = Callable[..., TicketStore]


#: Connection settings for tests that wait for a pool to fill in the background.
PATIENT = "connect_timeout=10&pool_reconnect_timeout=60"


@pytest.fixture
def read_only_database(private_postgres: PrivatePostgres) -> Iterator[Callable[[bool], None]]:
    """``read_only(True)``: new sessions of the private server's database start read-only,
    as on a demoted primary; ``read_only(False)``: writable again. Writable at the end."""
    admin = psycopg.connect(private_postgres.url, autocommit=True)

    def read_only(on: bool) -> None:
        admin.execute(f"ALTER DATABASE postgres SET default_transaction_read_only = {'on' if on else 'off'}")

    yield read_only
    read_only(False)
    admin.close()


def test_calls_work_again_as_soon_as_a_read_only_database_is_writable(
    private_postgres: PrivatePostgres, read_only_database: Callable[[bool], None], open_store: OpenStore
) -> None:
    table = unique_name()
    # Generous connection timeouts: the pool fills in the background, and on a busy machine a
    # connection attempt has outlasted the default 2 s, and the retries the default 10 s.
    url = f"{private_postgres.url}?table={table}&pool_min_size=3&pool_max_size=3&{PATIENT}"
    open_store(url).close()  # the table, created while writable
    read_only_database(True)
    store = open_store(url)
    # Every pooled connection begins read-only, and stays so for its life.
    deadline = time.monotonic() + 30
    while store._get_pool().get_stats().get("pool_available", 0) < 3:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for _ in range(3):
        with pytest.raises(StoreError, match="cannot execute INSERT in a read-only transaction"):
            store.issue("42", ttl=60)
    assert store.exists("42", "T" * 43) is False  # reading works meanwhile

    read_only_database(False)
    # The first call after that works: a read-only connection is discarded and the call
    # tried on a fresh one; so does every later one, on whichever pooled connection.
    started = time.monotonic()
    tickets = [store.issue("42", ttl=60) for _ in range(10)]
    assert all(store.delete("42", ticket) for ticket in tickets)
    assert time.monotonic() - started < 5
    drop_postgres_table(private_postgres.url, table)


def test_a_store_started_read_only_before_its_table_exists_works_once_writable(
    private_postgres: PrivatePostgres, read_only_database: Callable[[bool], None], open_store: OpenStore
) -> None:
    table = unique_name()
    read_only_database(True)
    store = open_store(f"{private_postgres.url}?table={table}&pool_min_size=2&pool_max_size=2&{PATIENT}")
    deadline = time.monotonic() + 30
    while store._get_pool().get_stats().get("pool_available", 0) < 2:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(StoreError, match="cannot execute CREATE TABLE in a read-only transaction"):
        store.issue("42", ttl=60)

    read_only_database(False)
    tickets = [store.issue("42", ttl=60) for _ in range(5)]  # the first creates the table
    assert all(store.delete("42", ticket) for ticket in tickets)
    drop_postgres_table(private_postgres.url, table)


@pytest.mark.parametrize("warm", [False, True], ids=["fresh", "prepared"])
def test_a_dropped_table_is_created_again_by_the_next_call(
    postgres_url: str, open_store: OpenStore, caplog: pytest.LogCaptureFixture, warm: bool
) -> None:
    table = unique_name()
    try:
        store = open_store(f"{postgres_url}?table={table}&pool_max_size=2")
        before = store.issue("42", ttl=60)
        if warm:  # psycopg prepares a statement after five runs: one that names the old table
            for _ in range(8):
                assert store.exists("42", before)
        drop_postgres_table(postgres_url, table)

        assert store.delete("42", before) is False  # gone with the table
        assert "was gone; creating it again" in caplog.text
        after = [store.issue("42", ttl=60) for _ in range(3)]
        assert all(store.exists("42", ticket) for ticket in after)
        assert all(store.delete("42", ticket) for ticket in after)
        with psycopg.connect(postgres_url) as conn:
            assert conn.execute(f'SELECT count(*) FROM "{table}"').fetchone() == (0,)
    finally:
        drop_postgres_table(postgres_url, table)


def test_a_store_that_cannot_connect_says_why_at_once(postgres_url: str, open_store: OpenStore) -> None:
    port = free_port()
    started = time.monotonic()
    store = open_store(f"postgresql://postgres@127.0.0.1:{port}/test?pool_timeout=2")
    for call in (store.ping, lambda: store.delete("42", "T" * 43)):
        with pytest.raises(StoreError) as raised:
            call()
        assert f"port {port} failed: Connection refused" in str(raised.value)
        assert "\n" not in str(raised.value)
    missing = open_store(postgres_url.rsplit("/", 1)[0] + "/" + unique_name())
    with pytest.raises(StoreError, match=r'FATAL: database "ciba_test_\w+" does not exist'):
        missing.issue("42")
    # Not a wait for the pool (pool_timeout 2 s, three calls): each is answered at once.
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("missing", ["port", "database"])
def test_check_names_why_postgresql_cannot_be_reached(missing: str, postgres_url: str, tmp_path: Path) -> None:
    if missing == "port":
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
        cause = "Connection refused Is the server running on that host and accepting TCP/IP connections?"
    else:
        database = unique_name()
        url = postgres_url.rsplit("/", 1)[0] + "/" + database
        cause = f'FATAL: database "{database}" does not exist'
    started = time.monotonic()
    result = cli("check", env=ciba_env(tmp_path, CIBA_STORE_URL=url))
    assert time.monotonic() - started < 10
    assert (result.returncode, result.stdout) == (3, "")
    # One line, the real cause, and no start-up warning promising a retry before it.
    assert result.stderr.startswith(f"ciba-middleware: error: store {url} unreachable: postgresql: connection failed:")
    assert result.stderr.endswith(f" failed: {cause}\n")
    assert result.stderr.count("\n") == 1


def test_a_pool_busy_to_the_last_connection_says_so(postgres_url: str, open_store: OpenStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    table = unique_name()
    try:
        store = open_store(f"{postgres_url}?table={table}&pool_max_size=1&pool_timeout=0.3&statement_timeout=10")
        ticket = store.issue("42", ttl=60)
        with psycopg.connect(postgres_url) as locker, ThreadPoolExecutor(1) as pool:
            locker.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
            held = pool.submit(store.delete, "42", ticket)  # waits on the lock, holding the connection
            _wait_until_blocked(locker, table)
            started = time.monotonic()
            with pytest.raises(StoreError, match=r"^postgresql: all 1 pooled connections busy for 0\.3 s$"):
                store.exists("42", ticket)
            assert time.monotonic() - started < 1.0
            locker.rollback()
            assert held.result(timeout=5) is True
    finally:
        drop_postgres_table(postgres_url, table)


def _wait_until_blocked(locker: psycopg.Connection[object], table: str, timeout: float = 30.0) -> None:
    """Until a statement on ``table`` waits for ``locker``'s lock (on a busy machine the
    thread that sends it may start late: a fixed sleep let the next call take the connection
    first)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(locker.info.dsn, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND position(%s in query) > 0",
                (table,),
            ).fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.05)
    raise AssertionError(f"no statement on {table} waited for the lock within {timeout} s")
