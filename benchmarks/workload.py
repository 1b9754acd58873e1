"""The requests every variant gets, and the stores they run against."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from werkzeug.test import EnvironBuilder

from ciba_middleware.stores import SCHEMES, TicketStore, new_ticket, store_from_url

from .apps import FAIL_PATH, HELLO_PATH, SERVICE, TOKEN

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

#: The servers of the Redis and PostgreSQL rows: local ones by default; set these variables
#: to run the same suite against servers on another host. The Redis URL names a database
#: number, which the run shares only with its own key prefix.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

_SHAPES = (
    {"reason": "ACCESS_DENIED"},
    {"reason": "UNKNOWN_USER_ID"},
    {"reason": "EXPIRED_LOGIN_HINT_TOKEN"},
    {"reason": "ACCESS_DENIED", "errorDescription": "The end-user denied the request."},
)


def bodies(tickets: Iterable[str]) -> list[bytes]:
    """A realistic mix: every call names its ticket, one in four adds errorDescription."""
    return [json.dumps({"ticket": t, **_SHAPES[i % len(_SHAPES)]}).encode() for i, t in enumerate(tickets)]


def write_bodies(path: Path, payloads: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(payloads) + b"\n")
    return path


# -- in-process calls ---------------------------------------------------------------------


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
    return _ignore


def _ignore(data: bytes) -> object:
    return None


@dataclass
class Calls:
    """Prepared WSGI calls: a server's environ for each request, copied per call."""

    environs: list[tuple[dict[str, Any], bytes]]

    @classmethod
    def fail(cls, payloads: list[bytes]) -> Calls:
        out = []
        for body in payloads:
            env = EnvironBuilder(
                path=FAIL_PATH,
                method="POST",
                headers=[("Authorization", f"Bearer {TOKEN}"), ("Host", "127.0.0.1:8000")],
                content_type="application/json",
                data=body,
            ).get_environ()
            out.append((env, body))
        return cls(out)

    @classmethod
    def hello(cls) -> Calls:
        env = EnvironBuilder(path=HELLO_PATH, method="GET", headers=[("Host", "127.0.0.1:8000")]).get_environ()
        return cls([(env, b"")])

    def run(self, app: WSGIApplication, count: int, start: int = 0) -> None:
        """``count`` calls, as a server makes them: fresh environ and input, body consumed, closed."""
        environs = self.environs
        size = len(environs)
        sr = _start_response
        bytes_io = io.BytesIO
        for i in range(start, start + count):
            template, body = environs[i % size]
            environ = template.copy()
            environ["wsgi.input"] = bytes_io(body)
            result = app(environ, sr)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()


# -- stores -------------------------------------------------------------------------------


@dataclass
class StoreSpec:
    name: str
    url: str
    available: bool
    why: str = ""

    def open(self) -> TicketStore:
        return store_from_url(self.url)


def store_specs(work_dir: Path, run_id: str) -> list[StoreSpec]:
    """memory, SQLite, and Redis / PostgreSQL where their store is registered and reachable."""
    specs = [
        StoreSpec("memory", "memory://", True),
        StoreSpec("sqlite", f"sqlite:///{work_dir / f'bench-{run_id}.sqlite3'}", True),
    ]
    for name, scheme, url in (
        ("redis", "redis", f"{REDIS_URL}?key_prefix=cibabench:{run_id}:"),
        ("postgresql", "postgresql", f"{POSTGRES_URL}?table=ciba_bench_{run_id}"),
    ):
        if scheme not in SCHEMES:
            specs.append(StoreSpec(name, url, False, f"no {scheme}:// store in this version"))
            continue
        try:
            store = store_from_url(url)
            store.ping()
            store.close()
        except Exception as exc:
            specs.append(StoreSpec(name, url, False, f"{type(exc).__name__}: {exc}"[:120]))
        else:
            specs.append(StoreSpec(name, url, True))
    return specs


def issue(spec: StoreSpec, count: int) -> list[str]:
    """Tickets that exist in the store (for memory://, well-formed ones: each gunicorn worker
    has a memory of its own, and the answer is the same whether a ticket exists or not)."""
    if spec.name == "memory":
        return [new_ticket() for _ in range(count)]
    store = spec.open()
    try:
        # In threads: a networked store's round trips overlap (PostgreSQL commits in groups).
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda _: store.issue(SERVICE, ttl=3600), range(count)))
    finally:
        store.close()


def cleanup(spec: StoreSpec, run_id: str) -> None:
    """Remove what the run left: its Redis keys, its PostgreSQL table, its SQLite file."""
    with contextlib.suppress(Exception):
        if spec.name == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"cibabench:{run_id}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
            client.close()
        elif spec.name == "postgresql":
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                # With the tables the store keeps beside its tickets, and the record rows' own.
                suffixes = (
                    "",
                    "_records",
                    "_replay",
                    *(
                        f"_rec{part}{end}"
                        for part in ("small", "large", "famsmall", "famlarge")
                        for end in ("", "_records", "_replay")
                    ),
                )
                tables = [f"ciba_bench_{run_id}{suffix}" for suffix in suffixes]
                conn.execute(f"DROP TABLE IF EXISTS {', '.join(tables)}")
        elif spec.name == "sqlite":
            path = Path(spec.url.removeprefix("sqlite:///"))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


def new_run_id() -> str:
    return uuid.uuid4().hex[:10]


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    saved = sys.stderr
    sys.stderr = io.StringIO()
    try:
        yield
    finally:
        sys.stderr = saved
