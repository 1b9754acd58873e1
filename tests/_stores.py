"""Stores for tests: a fresh URL per backend, what to remove afterwards, and an open store.

The shared Redis (DB 15) and PostgreSQL are used with a key prefix and a table of each
test's own, removed afterwards. The Redis variants and PostgreSQL over a Unix socket come
from ``tests/stores/conftest.py``'s private servers, so only tests below ``tests/stores``
can ask for those.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import unique_name

from ciba_middleware.stores import TicketStore, store_from_url

__all__ = ["BACKENDS", "SHARED", "drop_postgres_table", "drop_redis_keys", "opened_store", "url_for_backend"]


def drop_redis_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def drop_postgres_table(url: str, table: str) -> None:
    """Drop the ticket table and the tables the store keeps beside it (records, replay)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_records", "{table}_replay"')


ALL_BACKENDS = ["memory", "sqlite", "redis", "rediss", "redis+unix", "redis+cluster", "postgresql", "postgresql+unix"]


def _chosen_backends() -> list[str]:
    """``CIBA_TEST_BACKENDS`` (comma-separated), when set: the backends the store suites
    run against (nox's other Pythons leave out the Unix-socket and Cluster topologies)."""
    named = os.environ.get("CIBA_TEST_BACKENDS", "")
    if not named:
        return ALL_BACKENDS
    chosen = [name.strip() for name in named.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(ALL_BACKENDS))
    if unknown or not chosen:
        raise pytest.UsageError(f"CIBA_TEST_BACKENDS={named!r}: name backends among {', '.join(ALL_BACKENDS)}")
    return [name for name in ALL_BACKENDS if name in chosen]


BACKENDS = _chosen_backends()
#: Backends several processes can share (one of each kind: the Redis variants share their code).
SHARED = ["sqlite", "redis", "postgresql"]


def url_for_backend(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Callable[[], None]]:
    """A fresh, empty store URL for ``backend``, and how to remove what the test left."""
    name = unique_name()
    if backend == "memory":
        return "memory://", lambda: None
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / f'{name}.sqlite3'}", lambda: None
    if backend == "redis":
        base = request.getfixturevalue("redis_url")
        return f"{base}?key_prefix={name}:", lambda: drop_redis_keys(base, name)
    if backend == "rediss":
        _, url = request.getfixturevalue("redis_tls")
        return f"{url}&key_prefix={name}:", lambda: None
    if backend == "redis+unix":
        server = request.getfixturevalue("redis_unix")
        return f"redis+unix://{server.socket}?key_prefix={name}:", lambda: None
    if backend == "redis+cluster":
        server = request.getfixturevalue("redis_cluster")
        return f"redis+cluster://127.0.0.1:{server.port}?key_prefix={name}:", lambda: None
    if backend == "postgresql":
        base = request.getfixturevalue("postgres_url")
        return f"{base}?table={name}", lambda: drop_postgres_table(base, name)
    if backend == "postgresql+unix":
        server = request.getfixturevalue("private_postgres")
        url = f"postgresql:///postgres?host={server.dir}&port={server.port}&user=postgres"
        return f"{url}&table={name}", lambda: drop_postgres_table(server.url, name)
    raise AssertionError(backend)


@contextlib.contextmanager
def opened_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, TicketStore]]:
    """A fresh store of ``backend``: its URL (for servers) and an open store on the same
    tickets, closed and emptied on the way out."""
    url, cleanup = url_for_backend(backend, request, tmp_path)
    store = store_from_url(url)
    try:
        yield url, store
    finally:
        store.close()
        cleanup()
