"""Stores to test: one URL per backend, and private servers the tests may kill.

``store_url`` runs a test once per backend. The shared Redis (DB 15) and PostgreSQL are
used with a key prefix and a table of each test's own, removed afterwards. Outage and
restart tests never touch those: they start a private ``redis-server`` or PostgreSQL
cluster on a spare port, and kill and restart that.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import (
    PrivatePostgres,
    PrivateRedis,
    PrivateRedisCluster,
    PrivateSentinel,
    find_binary,
    wait_port,
)
from _stores import BACKENDS, SHARED, url_for_backend
from conftest import free_port, port_open, unique_name, unreachable

from ciba_middleware.stores import TicketStore, store_from_url


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.close()


@pytest.fixture(scope="session")
def _private_postgres_cluster() -> Iterator[PrivatePostgres]:
    try:
        server = PrivatePostgres()
    except (OSError, subprocess.CalledProcessError) as exc:
        unreachable(f"cannot start a private PostgreSQL: {exc}")
    yield server
    server.close()


@pytest.fixture
def private_postgres(_private_postgres_cluster: PrivatePostgres) -> PrivatePostgres:
    """The session's private PostgreSQL, running (a test before may have killed it)."""
    server = _private_postgres_cluster
    if not port_open("127.0.0.1", server.port):
        server.start()
    return server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[PrivateRedis]:
    """A one-node Redis Cluster holding every slot: enough to run the store in cluster mode."""
    import redis

    # The bus port is set: by default it is the port + 10000, which may not exist.
    bus = ("--cluster-port", str(free_port()))
    server = PrivateRedis("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", *bus)
    client = redis.Redis(port=server.port)
    client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    deadline = time.monotonic() + 10
    while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
        if time.monotonic() > deadline:
            raise RuntimeError("the private Redis Cluster did not become ready")
        time.sleep(0.05)
    client.close()
    yield server
    server.close()


@pytest.fixture
def redis_three_masters() -> Iterator[PrivateRedisCluster]:
    """A private three-master Redis Cluster that the test may kill and start again."""
    cluster = PrivateRedisCluster()
    yield cluster
    cluster.close()


@pytest.fixture
def redis_sentinel() -> Iterator[PrivateSentinel]:
    """A private master, replica and Sentinel; the test may kill the master to fail over."""
    sentinel = PrivateSentinel()
    yield sentinel
    sentinel.close()


@pytest.fixture
def redis_sentinel_tls(tls_certificate: Path) -> Iterator[PrivateSentinel]:
    """A private master and Sentinel that speak only TLS."""
    sentinel = PrivateSentinel(tls=tls_certificate)
    yield sentinel
    sentinel.close()


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a self-signed ``cert.pem`` for 127.0.0.1 and its ``key.pem``."""
    openssl = find_binary("openssl")
    certs = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem")),
        ],
        check=True,
        capture_output=True,
    )
    return certs


@pytest.fixture(scope="session")
def redis_tls(tls_certificate: Path) -> Iterator[tuple[PrivateRedis, str]]:
    """A private Redis that also listens with TLS, and a ``rediss://`` URL trusting its
    self-signed certificate."""
    certs = tls_certificate
    # Its two ports are picked as free, then bound by redis-server: one taken meanwhile by
    # another process makes the server exit, and it is started again on others.
    for attempt in range(3):
        tls_port = free_port()
        try:
            server = PrivateRedis(
                *("--tls-port", str(tls_port), "--tls-cert-file", str(certs / "cert.pem")),
                *("--tls-key-file", str(certs / "key.pem"), "--tls-auth-clients", "no"),
            )
        except RuntimeError:
            if attempt == 2:
                raise
            continue
        try:
            wait_port(tls_port, up=True)
            if server.process is not None and server.process.poll() is None:
                break
        except RuntimeError:
            pass
        server.close()
        if attempt == 2:
            raise RuntimeError(f"the TLS Redis did not listen on port {tls_port}")
    yield server, f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certs / 'cert.pem'}"
    server.close()


@pytest.fixture(scope="session")
def redis_unix() -> Iterator[PrivateRedis]:
    """A private Redis, for its Unix socket."""
    server = PrivateRedis()
    yield server
    server.close()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty store, once per backend."""
    url, cleanup = url_for_backend(request.param, request, tmp_path)
    yield url
    cleanup()


@pytest.fixture(params=SHARED)
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty store that several processes can share, once per such backend."""
    url, cleanup = url_for_backend(request.param, request, tmp_path)
    yield url
    cleanup()


@pytest.fixture
def open_store() -> Iterator[Callable[..., TicketStore]]:
    """``open_store(url, **options)``: a store closed at the end of the test."""
    opened: list[TicketStore] = []

    def build(url: str, **options: Any) -> TicketStore:
        store = store_from_url(url, **options)
        opened.append(store)
        return store

    yield build
    for store in opened:
        store.close()


def down_and_up(kind: str, request: pytest.FixtureRequest) -> tuple[PrivateRedis | PrivatePostgres, str]:
    """A private server of ``kind`` that the test may kill and restart, and a store URL for
    it with short timeouts, so that calls fail fast while it is down."""
    if kind == "redis":
        redis_server: PrivateRedis = request.getfixturevalue("private_redis")
        return redis_server, f"{redis_server.url}?socket_timeout=0.5&socket_connect_timeout=0.5"
    pg_server: PrivatePostgres = request.getfixturevalue("private_postgres")
    return pg_server, f"{pg_server.url}?table={unique_name()}&pool_timeout=0.5&statement_timeout=0.5"


#: Seconds from a server's return to the first call that works: for both, the next call
#: (Redis retries once on a fresh connection; PostgreSQL connects by itself until its
#: pool has reconnected). Polled, with slack for a loaded machine.
RECOVERY = {"redis": 1.0, "postgresql": 1.0}
