"""The stores' paths for an event loop (``delete_async``, base.AsyncTicketStore) against the
same contract as ``delete``: every backend with one, every topology the fixtures give."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import PrivateRedis
from _stores import BACKENDS, drop_postgres_table, url_for_backend
from conftest import unique_name

from ciba_middleware.errors import StoreError
from ciba_middleware.stores import TicketStore
from ciba_middleware.stores.base import AsyncTicketStore, new_ticket

from .conftest import down_and_up

OpenStore = Callable[..., TicketStore]

pytestmark = pytest.mark.timeout(60)


async def _once(store: AsyncTicketStore, ticket: str, service: str = "svc") -> bool:
    """One delete_async on this loop, its loop's client closed after."""
    try:
        return await store.delete_async(service, ticket)
    finally:
        await store.close_async()


@pytest.fixture(params=[backend for backend in BACKENDS if backend != "memory"])
def async_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty store with an async path, once per such backend (all but memory://,
    whose delete runs on the loop as it is)."""
    url, cleanup = url_for_backend(request.param, request, tmp_path)
    yield url
    cleanup()


def _async(store: TicketStore) -> AsyncTicketStore:
    assert isinstance(store, AsyncTicketStore), type(store).__name__
    return store


def test_the_network_and_file_stores_have_an_async_path(store_url: str, open_store: OpenStore) -> None:
    store = open_store(store_url)
    assert isinstance(store, AsyncTicketStore) is (not store_url.startswith("memory"))


def test_delete_async_keeps_the_delete_contract(async_store_url: str, open_store: OpenStore) -> None:
    store = _async(open_store(async_store_url))
    ticket = store.issue("svc-a", ttl=60)
    other = store.issue("svc-a", ttl=60)

    async def scenario() -> list[bool]:
        try:
            return [
                await store.delete_async("svc-b", ticket),  # another service's: left alone
                await store.delete_async("svc-a", ticket),
                await store.delete_async("svc-a", ticket),  # gone
                await store.delete_async("svc-a", new_ticket()),  # never was
                # The async path and the thread's see the same tickets.
                store.exists("svc-a", other),
                await store.delete_async("svc-a", other),
                store.delete("svc-a", other),
            ]
        finally:
            await store.close_async()

    assert asyncio.run(scenario()) == [False, True, False, False, True, True, False]


def test_exactly_one_of_racing_async_deletes_wins(async_store_url: str, open_store: OpenStore) -> None:
    store = _async(open_store(async_store_url))
    ticket = store.issue("svc", ttl=60)

    async def race() -> list[bool]:
        try:
            return list(await asyncio.gather(*(store.delete_async("svc", ticket) for _ in range(20))))
        finally:
            await store.close_async()

    assert sorted(asyncio.run(race())) == [False] * 19 + [True]


def test_an_expired_ticket_is_not_deleted_by_the_async_path(async_store_url: str, open_store: OpenStore) -> None:
    store = _async(open_store(async_store_url))
    ticket = store.issue("svc", ttl=0.05)
    time.sleep(0.2)
    assert asyncio.run(_once(store, ticket)) is False


def test_a_store_is_used_from_a_second_event_loop(async_store_url: str, open_store: OpenStore) -> None:
    """The loop's client is made per loop: a store used by one loop (a test, a lifespan that
    ended) serves the next."""
    store = _async(open_store(async_store_url))
    for _ in range(3):
        ticket = store.issue("svc", ttl=60)
        assert asyncio.run(_once(store, ticket)) is True


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_async_delete_fails_with_a_store_error_while_the_server_is_down_and_recovers(
    kind: str, request: pytest.FixtureRequest, open_store: OpenStore
) -> None:
    server, url = down_and_up(kind, request)
    store = open_store(url)
    ticket = store.issue("svc", ttl=60)

    async def scenario() -> None:
        assert isinstance(store, AsyncTicketStore)
        other = await asyncio.get_running_loop().run_in_executor(None, store.issue, "svc", 60)
        assert await store.delete_async("svc", other) is True  # the loop's client is made
        server.kill()
        try:
            with pytest.raises(StoreError) as caught:
                await store.delete_async("svc", ticket)
            assert "password" not in str(caught.value)
        finally:
            server.start()
        deadline = time.monotonic() + 5
        while True:
            try:
                # A restarted private server may have lost its data: a new ticket.
                fresh = await asyncio.get_running_loop().run_in_executor(None, store.issue, "svc", 60)
                deleted = await store.delete_async("svc", fresh)
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
            else:
                assert deleted is True
                return

    async def closed() -> None:
        try:
            await scenario()
        finally:
            await _async(store).close_async()

    asyncio.run(closed())


@pytest.mark.slow  # a Sentinel started (and failed over): left to 3.11
def test_async_delete_through_sentinel(request: pytest.FixtureRequest, open_store: OpenStore) -> None:
    sentinel = request.getfixturevalue("redis_sentinel")
    store = open_store(sentinel.url("/3", "socket_timeout=1&key_prefix=" + unique_name() + ":"))
    ticket = store.issue("svc", ttl=60)
    assert asyncio.run(_once(_async(store), ticket)) is True
    assert asyncio.run(_once(_async(store), ticket)) is False


def test_a_redis_store_around_a_client_of_yours_deletes_in_a_thread(redis_url: str) -> None:
    import redis

    from ciba_middleware.stores.redis import RedisTicketStore

    store = RedisTicketStore(redis.Redis.from_url(redis_url), key_prefix=unique_name() + ":")
    try:
        ticket = store.issue("svc", ttl=60)

        async def scenario() -> tuple[bool, str]:
            seen: list[str] = []
            original = store.delete

            def delete(service_id: str, ticket: str) -> bool:
                import threading

                seen.append(threading.current_thread().name)
                return original(service_id, ticket)

            store.delete = delete  # type: ignore[method-assign]
            return await store.delete_async("svc", ticket), seen[0]

        deleted, thread = asyncio.run(scenario())
        assert deleted is True
        assert thread != "MainThread"
    finally:
        store.close()


# -- SQLite: on the loop, never waiting ------------------------------------------------


def _sqlite(tmp_path: Path, open_store: OpenStore) -> Any:
    return open_store(f"sqlite:///{tmp_path / 'tickets.sqlite3'}?timeout=5")


def test_sqlite_deletes_on_the_loop_when_the_database_is_free(tmp_path: Path, open_store: OpenStore) -> None:
    """The first call opens the loop's connection in a thread; the next ones run on the loop."""
    store = _sqlite(tmp_path, open_store)
    first = store.issue("svc", ttl=60)
    assert asyncio.run(store.delete_async("svc", first)) is True
    ticket = store.issue("svc", ttl=60)

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        calls: list[object] = []
        real = loop.run_in_executor

        def counted(*args: Any) -> Any:
            calls.append(args)
            return real(*args)

        loop.run_in_executor = counted  # type: ignore[method-assign]
        deleted: bool = await store.delete_async("svc", ticket)
        assert calls == []  # no hop
        return deleted

    assert asyncio.run(scenario()) is True


def test_sqlite_moves_a_locked_delete_to_a_thread_and_the_loop_does_not_wait(
    tmp_path: Path, open_store: OpenStore
) -> None:
    store = _sqlite(tmp_path, open_store)
    ticket = store.issue("svc", ttl=60)
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process's write lock

    async def scenario() -> tuple[bool, float, float]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        task = asyncio.ensure_future(store.delete_async("svc", ticket))
        await asyncio.sleep(0)  # the delete's try on the loop
        on_loop = time.perf_counter() - started
        loop.call_later(0.3, locker.execute, "COMMIT")
        deleted: bool = await task
        return deleted, on_loop, time.perf_counter() - started

    try:
        deleted, on_loop, total = asyncio.run(scenario())
    finally:
        locker.close()
    assert deleted is True  # waited for the lock in the thread
    assert on_loop < 0.1  # the loop did not wait for it
    assert total >= 0.25


def test_sqlite_async_delete_of_an_unopened_store_takes_the_thread(tmp_path: Path, open_store: OpenStore) -> None:
    store = _sqlite(tmp_path, open_store)
    other = open_store(f"sqlite:///{store.path}")
    ticket = other.issue("svc", ttl=60)
    assert asyncio.run(store.delete_async("svc", ticket)) is True


# -- PostgreSQL faults that are not outages, on the async path --------------------------


def test_async_delete_works_again_as_soon_as_a_read_only_database_is_writable(
    request: pytest.FixtureRequest, open_store: OpenStore
) -> None:
    """A pooled connection that began read-only is closed (the pool replaces it) and the call
    tried on a fresh one: deletes work as soon as the database does."""
    import psycopg

    server = request.getfixturevalue("private_postgres")
    url = f"{server.url}?table={unique_name()}&pool_min_size=2&pool_max_size=2"
    store = _async(open_store(url))
    tickets = [open_store(url).issue("42", ttl=60) for _ in range(6)]  # the table, created while writable
    admin = psycopg.connect(server.url, autocommit=True)

    def read_only(on: bool) -> None:
        admin.execute(f"ALTER DATABASE postgres SET default_transaction_read_only = {'on' if on else 'off'}")

    async def scenario() -> list[bool]:
        try:
            await store.delete_async("42", new_ticket())  # the loop's pool, made while writable
            read_only(True)
            await store.close_async()  # a new pool: its connections begin read-only
            with pytest.raises(StoreError, match="read-only transaction"):
                await store.delete_async("42", tickets[0])
            read_only(False)
            return [await store.delete_async("42", ticket) for ticket in tickets]
        finally:
            await store.close_async()

    try:
        assert asyncio.run(scenario()) == [True] * 6
    finally:
        read_only(False)
        admin.close()


def test_async_delete_after_the_table_was_dropped_creates_it_again(postgres_url: str, open_store: OpenStore) -> None:
    table = unique_name()
    store = _async(open_store(f"{postgres_url}?table={table}&pool_max_size=2"))
    before = open_store(f"{postgres_url}?table={table}").issue("42", ttl=60)

    async def scenario() -> tuple[bool, bool]:
        try:
            await store.delete_async("42", new_ticket())  # the table is known to exist
            drop_postgres_table(postgres_url, table)
            gone = await store.delete_async("42", before)
            ticket = await asyncio.get_running_loop().run_in_executor(None, store.issue, "42", 60)  # type: ignore[attr-defined]
            return gone, await store.delete_async("42", ticket)
        finally:
            await store.close_async()

    try:
        assert asyncio.run(scenario()) == (False, True)
    finally:
        drop_postgres_table(postgres_url, table)


def test_sqlite_loop_connections_never_checkpoint_and_the_wal_stays_bounded(
    tmp_path: Path, open_store: OpenStore
) -> None:
    """The loop's connections have the automatic checkpoint off; one delete in
    LOOP_WRITES_PER_THREAD goes to a thread, whose commit checkpoints: the WAL stays bounded."""
    from ciba_middleware.stores import sqlite as sqlite_store

    store = _sqlite(tmp_path, open_store)
    tickets = [store.issue("svc", ttl=600) for _ in range(3 * sqlite_store.LOOP_WRITES_PER_THREAD)]

    async def scenario() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        hops = 0
        real = loop.run_in_executor

        def counted(*args: Any) -> Any:
            nonlocal hops
            hops += 1
            return real(*args)

        loop.run_in_executor = counted  # type: ignore[method-assign]
        for ticket in tickets:
            assert await store.delete_async("svc", ticket) is True
        (conn, _, _) = store._loop_idle[0]
        return hops, conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]

    hops, autocheckpoint = asyncio.run(scenario())
    assert autocheckpoint == 0
    # The first call, the turns of the threads, and the file's checks (every 0.1 s).
    assert 3 <= hops < 3 + 200
    wal = Path(str(store.path) + "-wal")
    pages = wal.stat().st_size // 4096 if wal.exists() else 0
    assert pages <= sqlite_store.WAL_AUTOCHECKPOINT + 2 * sqlite_store.LOOP_WRITES_PER_THREAD


# -- Redis: the held connections of the event loop (_AsyncHeldConnections) ------------------


def _redis_async(store: TicketStore) -> Any:
    """The asyncio paths of a Redis store, after at least one delete_async on the running loop."""
    aio = store._aio  # type: ignore[attr-defined]
    assert aio is not None
    return aio


@pytest.mark.parametrize("backend", [name for name in BACKENDS if name.startswith("redis")])
def test_redis_async_deletes_take_the_held_path_except_on_cluster(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, open_store: OpenStore
) -> None:
    url, cleanup = url_for_backend(backend, request, tmp_path)
    try:
        store = _async(open_store(url))
        ticket = store.issue("svc", ttl=60)

        async def scenario() -> tuple[bool, bool, int]:
            try:
                deleted = await store.delete_async("svc", ticket)
                held = _redis_async(store).held
                return deleted, held is not None, len(held.free) if held is not None else 0
            finally:
                await store.close_async()

        assert asyncio.run(scenario()) == (True, backend != "redis+cluster", 0 if backend == "redis+cluster" else 1)
    finally:
        cleanup()


def test_redis_async_delete_is_one_evalsha(private_redis: PrivateRedis, open_store: OpenStore) -> None:
    import redis

    store = _async(open_store(private_redis.url))
    raw = redis.Redis.from_url(private_redis.url)
    tickets = [store.issue("42", ttl=30) for _ in range(3)]

    async def scenario() -> list[bool]:
        try:
            await store.delete_async("42", tickets[0])  # loads the script: the server did not have it yet
            raw.config_resetstat()
            return [await store.delete_async("42", tickets[1]), await store.delete_async("43", tickets[2])]
        finally:
            await store.close_async()

    try:
        assert asyncio.run(scenario()) == [True, False]
        calls = {name: stats["calls"] for name, stats in raw.info("commandstats").items()}
        assert calls == {"cmdstat_evalsha": 2, "cmdstat_get": 2, "cmdstat_del": 1, "cmdstat_config|resetstat": 1}
    finally:
        raw.close()


def test_redis_async_delete_after_script_flush_and_client_kill(
    private_redis: PrivateRedis, open_store: OpenStore
) -> None:
    import redis

    store = _async(open_store(private_redis.url))
    raw = redis.Redis.from_url(private_redis.url)
    tickets = [store.issue("42", ttl=30) for _ in range(3)]

    async def scenario() -> list[bool]:
        try:
            results = [await store.delete_async("42", tickets[0])]
            raw.script_flush()
            # NOSCRIPT: the script is loaded again on the same connection and run again.
            results.append(await store.delete_async("42", tickets[1]))
            # The held connection is closed by the server: the Retry (retries=1) reconnects it.
            raw.client_kill_filter(_type="normal", skipme=True)
            results.append(await store.delete_async("42", tickets[2]))
            results.append(len(_redis_async(store).held.free) == 1)
            return results
        finally:
            await store.close_async()

    try:
        assert asyncio.run(scenario()) == [True, True, True, True]
    finally:
        raw.close()


def test_redis_async_without_retries_a_killed_connection_fails_one_call_and_goes_back_to_the_pool(
    private_redis: PrivateRedis, open_store: OpenStore
) -> None:
    import redis

    store = _async(open_store(f"{private_redis.url}?retries=0"))
    raw = redis.Redis.from_url(private_redis.url)
    tickets = [store.issue("42", ttl=30) for _ in range(2)]

    async def scenario() -> tuple[bool, str, int, int, bool]:
        try:
            assert await store.delete_async("42", tickets[0]) is True
            aio = _redis_async(store)
            held, pool = aio.held, aio.client.connection_pool
            raw.client_kill_filter(_type="normal", skipme=True)
            with pytest.raises(StoreError, match="redis: ") as failed:
                await store.delete_async("42", tickets[1])
            # The failed connection is the pool's again, disconnected; none is held.
            back = [conn for conn in pool._available_connections if not conn.is_connected]
            # The server never got that delete; the next call takes a connection from the pool.
            again = await store.delete_async("42", tickets[1])
            return again, str(failed.value), len(back), len(held.free), held.free[0] is back[0]
        finally:
            await store.close_async()

    try:
        again, message, back, held, same = asyncio.run(scenario())
        assert (again, back, held, same) == (True, 1, 1, True)
        assert "Connection" in message
    finally:
        raw.close()


def test_redis_async_delete_cancelled_while_waiting_never_leaves_its_reply_behind(
    private_redis: PrivateRedis, open_store: OpenStore
) -> None:
    """A task cancelled between the EVALSHA and its reply (a client that went away): the
    connection is dropped, so the next delete can never read that late reply as its own."""
    import redis

    store = _async(open_store(f"{private_redis.url}?socket_timeout=5"))
    raw = redis.Redis.from_url(private_redis.url)
    tickets = [store.issue("42", ttl=30) for _ in range(3)]
    # Holds the server (one thread) for 0.5 s: the delete sent meanwhile waits for its reply.
    busy = (
        "local t = redis.call('TIME') repeat local n = redis.call('TIME') until (n[1] - t[1]) * 1e6 + n[2] - t[2] > 5e5"
    )

    async def scenario() -> list[object]:
        try:
            assert await store.delete_async("42", tickets[0]) is True
            blocker = asyncio.get_running_loop().run_in_executor(None, raw.eval, busy, 0)
            await asyncio.sleep(0.1)
            waiting = asyncio.ensure_future(store.delete_async("42", tickets[1]))
            await asyncio.sleep(0.1)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            held = _redis_async(store).held
            await blocker
            # The cancelled delete reached the server (it ran after the script); the next
            # call, for another ticket, reads its own reply.
            return [len(held.free), await store.delete_async("42", tickets[2]), store.exists("42", tickets[1])]
        finally:
            await store.close_async()

    try:
        assert asyncio.run(scenario()) == [0, True, False]
    finally:
        raw.close()


def test_redis_async_delete_rides_over_a_server_restart(private_redis: PrivateRedis, open_store: OpenStore) -> None:
    """After a restart the held connection is dead and the script cache empty: the first call
    once the server is back reconnects (Retry) and loads the script (NOSCRIPT), within the call."""
    store = _async(open_store(f"{private_redis.url}?socket_timeout=0.5&socket_connect_timeout=0.5"))

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        try:
            first = await loop.run_in_executor(None, store.issue, "42", 60)
            assert await store.delete_async("42", first) is True
            await loop.run_in_executor(None, private_redis.kill)
            await loop.run_in_executor(None, private_redis.start)
            ticket = await loop.run_in_executor(None, store.issue, "42", 60)
            return await store.delete_async("42", ticket)
        finally:
            await store.close_async()

    assert asyncio.run(scenario()) is True


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_async_delete_on_a_frozen_server_fails_in_bounded_time(
    kind: str, request: pytest.FixtureRequest, open_store: OpenStore
) -> None:
    from .test_store_backends import FROZEN_BOUND

    server, url = down_and_up(kind, request)
    store = _async(open_store(url))
    ticket = store.issue("42", ttl=60)

    async def scenario() -> float:
        try:
            assert await store.delete_async("42", new_ticket()) is False  # the loop's connection is made
            server.pause()
            try:
                started = time.monotonic()
                with pytest.raises(StoreError):
                    await store.delete_async("42", ticket)
                return time.monotonic() - started
            finally:
                server.pause(False)
        finally:
            await store.close_async()

    assert asyncio.run(scenario()) < FROZEN_BOUND[kind]
    back = time.monotonic()
    while True:
        try:
            fresh = store.issue("42", ttl=60)
            break
        except StoreError:
            assert time.monotonic() - back < 1.0
            time.sleep(0.1)
    assert asyncio.run(_once(store, fresh, "42")) is True


def test_redis_async_a_forked_child_uses_connections_of_its_own(redis_url: str, open_store: OpenStore) -> None:
    """The parent holds a connection on its loop when it forks; the child, on a loop of its
    own, deletes at once for another service: neither ever reads the other's reply."""
    store = _async(open_store(f"{redis_url}?key_prefix={unique_name()}:"))
    tickets = [store.issue("42", ttl=30) for _ in range(301)]
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(store.delete_async("42", tickets[0])) is True
        held = _redis_async(store).held
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 3
            try:
                assert held.free == []  # forgotten at the fork

                async def child() -> bool:
                    return not any([await store.delete_async("43", ticket) for ticket in tickets[1:]])

                code = 0 if asyncio.run(child()) else 2
            finally:
                os._exit(code)

        async def parent() -> list[bool]:
            return [await store.delete_async("42", ticket) for ticket in tickets[1:]]

        deleted = loop.run_until_complete(parent())
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert all(deleted)
        loop.run_until_complete(store.close_async())
    finally:
        loop.close()


# -- PostgreSQL: the held connections of the event loop -----------------------------------


def test_postgres_async_connections_held_between_calls_go_back_to_the_pool(
    postgres_url: str, open_store: OpenStore
) -> None:
    """Two calls at once each hold a connection afterwards; calls one at a time then use one
    of them, and the other goes back to the pool once past HOLD."""
    table = unique_name()
    try:
        store = _async(open_store(f"{postgres_url}?table={table}&pool_min_size=2&pool_max_size=2"))
        store.issue("42", ttl=30)  # the table exists: the loop's path is taken

        async def scenario() -> tuple[int, int, int]:
            try:
                assert await store.delete_async("42", new_ticket()) is False  # the loop's pool
                aio = store._aio  # type: ignore[attr-defined]
                # Both connections made: neither call of the burst waits for the pool (a call
                # that waits would be given the other's connection instead of it being held).
                deadline = time.monotonic() + 10
                while aio.pool.get_stats().get("pool_available", 0) < 1:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                await asyncio.gather(*(store.delete_async("42", new_ticket()) for _ in range(2)))
                held_after_burst = len(aio.held.free)
                deadline = time.monotonic() + 5
                while aio.pool.get_stats().get("pool_available", 0) < 1:
                    assert time.monotonic() < deadline
                    assert await store.delete_async("42", new_ticket()) is False
                    await asyncio.sleep(0.05)
                return held_after_burst, len(aio.held.free), aio.pool.get_stats().get("pool_available", 0)
            finally:
                await store.close_async()

        assert asyncio.run(scenario()) == (2, 1, 1)
    finally:
        drop_postgres_table(postgres_url, table)


def test_postgres_async_calls_beyond_the_pool_are_served_as_connections_come_back(
    postgres_url: str, open_store: OpenStore
) -> None:
    """More calls at once than pool_max_size: those waiting for the pool get the connections
    the others used (not held while anyone waits), well within pool_timeout."""
    table = unique_name()
    try:
        store = _async(open_store(f"{postgres_url}?table={table}&pool_max_size=2&pool_timeout=2"))
        tickets = [store.issue("42", ttl=30) for _ in range(40)]

        async def scenario() -> tuple[list[bool], float]:
            try:
                started = time.monotonic()
                deleted = await asyncio.gather(*(store.delete_async("42", ticket) for ticket in tickets))
                return list(deleted), time.monotonic() - started
            finally:
                await store.close_async()

        deleted, took = asyncio.run(scenario())
        assert deleted == [True] * 40
        assert took < 2.0
    finally:
        drop_postgres_table(postgres_url, table)


@pytest.mark.parametrize("closing", ["close_async", "close"])
def test_postgres_async_close_closes_the_connections_held_between_calls(postgres_url: str, closing: str) -> None:
    """close_async on the loop, or close from another thread while the loop runs: the held
    connections go back to the pool, which closes them."""
    import threading

    import psycopg

    from ciba_middleware.stores import store_from_url

    table, name = unique_name(), unique_name("ciba held")
    store = _async(store_from_url(f"{postgres_url}?table={table}&application_name={name.replace(' ', '%20')}"))

    def open_connections() -> int:
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
        assert row is not None
        return int(row[0])

    async def scenario() -> None:
        ticket = await asyncio.get_running_loop().run_in_executor(None, store.issue, "42", 30)  # type: ignore[attr-defined]
        await asyncio.gather(*(store.delete_async("42", new_ticket()) for _ in range(3)))
        assert await store.delete_async("42", ticket) is True
        assert store._aio.held.free  # type: ignore[attr-defined]
        if closing == "close_async":
            await store.close_async()
        else:
            closer = threading.Thread(target=store.close)  # type: ignore[attr-defined]
            closer.start()
            while closer.is_alive():
                await asyncio.sleep(0.01)
        # close_async leaves the thread's pool open: its connections have the same name.
        threads = 0 if closing == "close" else store._get_pool().get_stats().get("pool_size", 0)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 5
        while (left := await asyncio.get_running_loop().run_in_executor(None, open_connections)) != threads:
            assert time.monotonic() < deadline, f"{left} connections open, {threads} of them the thread pool's"
            await asyncio.sleep(0.05)

    try:
        asyncio.run(scenario())
    finally:
        store.close()  # type: ignore[attr-defined]
        drop_postgres_table(postgres_url, table)


def test_redis_async_read_past_its_timeout_is_a_timeout_and_the_next_call_reconnects(
    private_redis: PrivateRedis, open_store: OpenStore
) -> None:
    """The first attempt's read is bounded by the watchdog: past socket_timeout the socket is
    shut down and the call fails as redis-py's own read timeout would (retries=0: no second
    try); the connection goes back to the pool, and once the server thaws the next call works."""
    store = _async(open_store(f"{private_redis.url}?socket_timeout=0.5&retries=0"))
    tickets = [store.issue("42", ttl=60) for _ in range(2)]

    async def scenario() -> tuple[float, str, int, bool]:
        try:
            assert await store.delete_async("42", tickets[0]) is True
            held = _redis_async(store).held
            private_redis.pause()
            try:
                started = time.monotonic()
                with pytest.raises(StoreError) as failed:
                    await store.delete_async("42", tickets[1])
                took = time.monotonic() - started
            finally:
                private_redis.pause(False)
            return took, str(failed.value), len(held.free), await store.delete_async("42", tickets[1])
        finally:
            await store.close_async()

    took, message, held, again = asyncio.run(scenario())
    assert 0.5 <= took < 1.2
    assert message == "redis: Timeout reading from socket after 0.5 s"
    assert held == 0
    # The server ran the delete it had received once it thawed (the store's error says the
    # ticket may not have been deleted: here it was); the next call, on a fresh connection,
    # gets its own reply, not that late one.
    assert again is False
    assert not store.exists("42", tickets[1])


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_the_watchdog_of_a_closed_loop_stops_when_the_next_loop_comes(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, open_store: OpenStore
) -> None:
    """A loop that ended without close_async (its client or pool closed by other means): the
    store's next loop stops the old loop's watchdog thread."""
    url, cleanup = url_for_backend(kind, request, tmp_path)
    try:
        store = _async(open_store(url))
        store.issue("42", ttl=60)  # the table exists: the loop's path is taken
        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(store.delete_async("42", new_ticket())) is False
            aio = store._aio  # type: ignore[attr-defined]
            first = aio.watchdog if kind == "postgresql" else aio.held.watchdog
            loop.run_until_complete(aio.pool.close() if kind == "postgresql" else aio.client.aclose())
        finally:
            loop.close()
        assert not first._stopped
        assert asyncio.run(_once(store, new_ticket(), "42")) is False
        assert first._stopped
    finally:
        cleanup()


@pytest.mark.slow  # a Sentinel started (and failed over): left to 3.11
def test_redis_async_deletes_follow_a_sentinel_failover(request: pytest.FixtureRequest, open_store: OpenStore) -> None:
    """The held connection is to the master that dies: calls fail (StoreError) until the
    Sentinel names the new master, then work on it, never answering wrongly."""
    sentinel = request.getfixturevalue("redis_sentinel")
    store = _async(open_store(sentinel.url(query="socket_timeout=0.5&socket_connect_timeout=0.5")))
    tickets = [store.issue("42", ttl=120) for _ in range(10)]
    sentinel.wait_replicated()

    async def scenario() -> list[str]:
        outcomes: list[str] = []
        try:
            assert await store.delete_async("42", tickets[0]) is True  # a held connection to the master
            await asyncio.get_running_loop().run_in_executor(None, sentinel.wait_replicated)
            sentinel.master.kill()
            left = tickets[1:]
            started = time.monotonic()
            while left:
                assert time.monotonic() - started < 30.0, outcomes
                try:
                    assert await store.delete_async("42", left[0]) is True
                    left.pop(0)
                    outcomes.append("ok")
                except StoreError:
                    outcomes.append("500")
                    await asyncio.sleep(0.05)
            return outcomes
        finally:
            await store.close_async()

    outcomes = asyncio.run(scenario())
    assert sentinel.master_port() == sentinel.replica.port
    assert "500" in outcomes
    assert outcomes.count("ok") == 9
