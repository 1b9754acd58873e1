"""Shared fixtures: backends that must be reachable in CI, and real gunicorn servers.

A test that needs Redis or PostgreSQL asks for ``redis_url`` / ``postgres_url``. When the
server is unreachable the test is skipped locally, but fails when ``CI=true``, so CI can
never pass by skipping.
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

from benchmarks.servers import Process  # noqa: E402
from benchmarks.servers import free_port as free_port  # noqa: E402 (for the tests that import it from here)

IN_CI = os.environ.get("CI", "").lower() == "true"

REDIS_URL = os.environ.get("CIBA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
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
    """A Redis URL on a dedicated DB number (15), emptied by the tests that use it."""
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
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


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
#: them right after its calls; the wait of the default is tested in test_output.py and
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
