"""Stores to test: one URL per backend, and private servers the tests may kill.

``store_url`` runs a test once per backend. The shared Redis (DB 15) and PostgreSQL are
used with a key prefix and a table of each test's own, removed afterwards. Outage and
restart tests never touch those: they start a private ``redis-server`` or PostgreSQL
cluster on a spare port, and kill and restart that.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, port_open, unique_name, unreachable

from ciba_middleware.stores import TicketStore, store_from_url


def _binary(name: str, *candidates: str) -> str:
    for candidate in (shutil.which(name), *candidates):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    unreachable(f"{name} is not installed")
    raise AssertionError("unreachable")


def wait_port(port: int, up: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port, 0.2) == up:
            return
        time.sleep(0.02)
    raise RuntimeError(f"port {port} did not go {'up' if up else 'down'} within {timeout}s")


class PrivateRedis:
    """A ``redis-server`` of our own on a spare port (and a Unix socket), without persistence."""

    def __init__(self, *extra: str) -> None:
        self.binary = _binary("redis-server")
        self.dir = Path(tempfile.mkdtemp(prefix="ciba-redis-"))
        self.port = free_port()
        self.socket = self.dir / "redis.sock"
        self.extra = extra
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                str(self.socket),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(self.port, up=True)
        except RuntimeError:
            self.kill()
            raise

    def kill(self) -> None:
        """Die as in a crash: SIGKILL, connections reset, nothing saved."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(5)
        wait_port(self.port, up=False)

    def pause(self, paused: bool = True) -> None:
        """Freeze (or thaw) the server: connections stay open, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL cluster of our own on a spare port, in a temporary directory.

    PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.
    """

    def __init__(self) -> None:
        self.bin = Path(_binary("pg_ctl", *sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))))).parent
        self.dir = Path(tempfile.mkdtemp(prefix="ciba-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def kill(self) -> None:
        """Stop at once (``-m immediate``: no clean shutdown, clients see their connections drop)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        wait_port(self.port, up=False)

    def pause(self, paused: bool = True) -> None:
        """Freeze (or thaw) the postmaster and every backend: connections stay open, the
        kernel still acknowledges what is sent, and nothing is answered."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False)
        for pid in [postmaster, *map(int, children.stdout.split())]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


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


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivateRedis, str]]:
    """A private Redis that also listens with TLS, and a ``rediss://`` URL trusting its
    self-signed certificate."""
    openssl = _binary("openssl")
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
    tls_port = free_port()
    server = PrivateRedis(
        *("--tls-port", str(tls_port), "--tls-cert-file", str(certs / "cert.pem")),
        *("--tls-key-file", str(certs / "key.pem"), "--tls-auth-clients", "no"),
    )
    yield server, f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certs / 'cert.pem'}"
    server.close()


@pytest.fixture(scope="session")
def redis_unix() -> Iterator[PrivateRedis]:
    """A private Redis, for its Unix socket."""
    server = PrivateRedis()
    yield server
    server.close()


def drop_redis_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def drop_postgres_table(url: str, table: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')


BACKENDS = ["memory", "sqlite", "redis", "rediss", "redis+unix", "redis+cluster", "postgresql", "postgresql+unix"]
#: Backends several processes can share (one of each kind: the Redis variants share their code).
SHARED = ["sqlite", "redis", "postgresql"]


def url_for_backend(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Callable[[], None]]:
    """A fresh, empty store URL for ``backend``, and how to remove what the test left."""
    name = unique_name()
    if backend == "memory":
        return "memory://", lambda: None
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'tickets.sqlite3'}", lambda: None
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
