"""Shared fixtures: backends that must be reachable in CI, and real gunicorn servers.

A test that needs Redis or PostgreSQL asks for ``redis_url`` / ``postgres_url``. When the
server is unreachable the test is skipped locally, but fails when ``CI=true``, so CI can
never pass by skipping.

Under pytest-xdist (``-n``) each worker has resources of its own (docs/development.md,
"Tests in parallel"): its ports (:func:`worker_ports`), its Redis DB number when
``CIBA_TEST_REDIS_URL`` is not set (:func:`worker_redis_url`), and its names for keys,
tables and schemas (:func:`unique_name` carries the worker's id); SQLite files are under
each test's own ``tmp_path``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from ciba_middleware import sha256_hex

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/ holds the one launcher of servers, shared with the benchmarks.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import servers  # noqa: E402
from benchmarks.servers import Process  # noqa: E402
from benchmarks.servers import free_port as free_port  # noqa: E402 (for the tests that import it from here)

IN_CI = os.environ.get("CI", "").lower() == "true"

#: This process's pytest-xdist worker ("gw0", "gw1", ...), or "" without xdist.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER_INDEX = int(WORKER.removeprefix("gw")) if WORKER else 0
WORKER_COUNT = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) if WORKER else 1


def worker_ports(index: int = WORKER_INDEX, count: int = WORKER_COUNT) -> range:
    """The ports this worker's servers take: every ``count``-th port of ``CIBA_TEST_PORTS``
    (``first-last``, default 10000-32767) from its ``index``-th. Below Linux's ephemeral range,
    so no client socket takes one; apart per worker, so a port one worker found free is not
    taken by another before its server binds it. scripts/check gives each of the runs it makes
    at once a range of its own. ``free_port`` still checks each port against the machine."""
    first, last = (int(port) for port in os.environ.get("CIBA_TEST_PORTS", "10000-32767").split("-"))
    return range(first + index, last + 1, count)


def worker_redis_url(default_db: int = 15, index: int = WORKER_INDEX, count: int = WORKER_COUNT) -> str:
    """The Redis URL of ``CIBA_TEST_REDIS_URL``, or by default DB ``default_db`` for a lone
    run and one DB per worker under xdist, counting down from it (gw0: 15, gw1: 14, ...)."""
    explicit = os.environ.get("CIBA_TEST_REDIS_URL")
    if explicit:
        return explicit
    if count > default_db + 1:
        raise RuntimeError(f"{count} workers but Redis DBs 0-{default_db}: set CIBA_TEST_REDIS_URL")
    return f"redis://127.0.0.1:6379/{default_db - index}"


servers.use_ports(worker_ports())

REDIS_URL = worker_redis_url()
POSTGRES_URL = os.environ.get("CIBA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Credentials used across the suite. Test values only, never real secrets.
SERVICE = "715948317"
OTHER_SERVICE = "42"
ORG_SERVICES = [SERVICE, "1001"]
SERVICE_TOKEN = "service-token-715948317"
OTHER_TOKEN = "service-token-42"
ORG_TOKEN = "org-token-acme"
API_SECRET = "api-secret-715948317"
GRANTS = [
    {"service": SERVICE, "token_sha256": sha256_hex(SERVICE_TOKEN)},
    {"service": OTHER_SERVICE, "token_sha256": sha256_hex(OTHER_TOKEN)},
    {"organization": "acme", "services": ORG_SERVICES, "token_sha256": sha256_hex(ORG_TOKEN)},
    {"service": SERVICE, "api_secret_sha256": sha256_hex(API_SECRET)},
    {"service": OTHER_SERVICE, "api_secret_sha256": sha256_hex("api-secret-42")},
]


#: The contract's three headers on every answer of the fail API (and on the client's answer).
API_HEADERS = {
    "Content-Type": "application/json;charset=UTF-8",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of a Bearer token (RFC 6750)."""
    return {"Authorization": f"Bearer {token}"}


def basic(key: str, secret: str) -> dict[str, str]:
    """The ``Authorization`` header of HTTP Basic (RFC 7617) for ``key:secret``."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode("ascii")}


def unreachable(reason: str) -> None:
    """Skip locally; fail in CI, where every backend must be there."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis URL on a dedicated DB number (``worker_redis_url``); each test uses a key
    prefix of its own and removes its keys."""
    try:
        import redis
    except ImportError:
        unreachable("redis-py is not installed (pip install -e '.[test]')")
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:
        unreachable(f"Redis at {REDIS_URL} is unreachable: {exc}")
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL URL; tests use a schema or table of their own and drop it."""
    try:
        import psycopg
    except ImportError:
        unreachable("psycopg is not installed (pip install -e '.[test]')")
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        unreachable(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}")
    return POSTGRES_URL


def unique_name(prefix: str = "ciba_test") -> str:
    """A name for a test's own key prefix, table or schema: the worker's id, then random."""
    return f"{prefix}_{WORKER}_{uuid.uuid4().hex[:10]}" if WORKER else f"{prefix}_{uuid.uuid4().hex[:10]}"


class LiveServer(Process):
    """A server process serving a WSGI app on a free port of 127.0.0.1, started and answering
    (``server="uvicorn"`` or ``"hypercorn"``: an ASGI app). ``extra`` options go on its
    command line; the repository and ``tests/`` are on its ``PYTHONPATH``."""

    def __init__(
        self,
        app: str,
        env: Mapping[str, str],
        workers: int = 1,
        extra: tuple[str, ...] = (),
        server: str = "gunicorn",
    ) -> None:
        log_path = Path(tempfile.mkstemp(prefix=f"{server}-", suffix=".log")[1])
        super().__init__(
            app, log_path=log_path, env=env, server=server, workers=workers, options=extra, pythonpath=[ROOT / "tests"]
        )
        self.wait()


@pytest.fixture
def live_server() -> Iterator[Callable[..., LiveServer]]:
    """Start gunicorn servers: ``live_server("module:app", env={...})``; all stopped at the end."""
    started: list[LiveServer] = []

    def start(
        app: str = "ciba_middleware.wsgi:application", env: Mapping[str, str] | None = None, **kw: object
    ) -> LiveServer:
        server = LiveServer(app, env or {}, **kw)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


#: Audit lines written before each answer (``CIBA_AUDIT_FLUSH=0``), for a test that reads
#: them right after its calls; the wait of the default is tested in test_linewriter.py and
#: test_server_output.py.
AT_ONCE = {"CIBA_AUDIT_FLUSH": "0"}


def ciba_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """CIBA_* variables for a server with the suite's grants and an SQLite file under tmp_path."""
    import json

    env = {
        "CIBA_STORE_URL": f"sqlite:///{tmp_path / 'tickets.sqlite3'}",
        "CIBA_TOKENS": json.dumps(GRANTS),
    }
    env.update(overrides)
    return env


#: Modules whose tests run on one pytest-xdist worker (``--dist loadgroup``), and before the
#: others: their module fixtures cost much (a benchmark run, the built artefacts and a clean
#: venv, a browser), and the packaging tests build in the checkout, where two builds at once
#: would trip over each other's files. First, so that the longest start at once and the
#: rest of the suite fills the other workers meanwhile.
XDIST_GROUPS = {
    "tests/test_benchmarks_smoke.py": "benchmarks",
    "tests/test_packaging.py": "packaging",
    "tests/example_app/test_ciba_client.py": "browser",
}


def _xdist_group(item: pytest.Item) -> str | None:
    return XDIST_GROUPS.get(item.nodeid.split("::", 1)[0].split("@", 1)[0])


def pytest_itemcollected(item: pytest.Item) -> None:
    # Marked as collected, before any plugin's pytest_collection_modifyitems: xdist's reads
    # the marks there.
    group = _xdist_group(item)
    if group is not None:
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    order = list(XDIST_GROUPS.values())
    first: list[tuple[int, pytest.Item]] = []
    rest: list[pytest.Item] = []
    for item in items:
        group = _xdist_group(item)
        if group is None:
            rest.append(item)
        else:
            first.append((order.index(group), item))
    first.sort(key=lambda pair: pair[0])  # stable: each module's own order kept
    items[:] = [item for _, item in first] + rest
