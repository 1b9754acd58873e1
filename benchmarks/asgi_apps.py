"""The ASGI applications of section 5, each importable by uvicorn.

``application`` is chosen by ``BENCH_APP`` (one of :data:`APPS`), so every variant runs
under the same uvicorn with the same settings::

    BENCH_APP=asgi_floor uvicorn benchmarks.asgi_apps:application

``asgi_floor``
    A raw ASGI app that reads the JSON body from ``receive``, parses it and sends a fixed
    JSON answer with the same headers as the fail API: the least any ASGI implementation of
    the endpoint costs.
``asgi_fail``
    The fail API (:class:`ciba_middleware.asgi.BackchannelFailMiddleware` around a 404 app)
    with the store named by ``CIBA_STORE_URL`` (``memory://`` by default).
``asgi_bare`` / ``asgi_wrapped``
    A minimal ASGI app answering ``GET /hello``, alone and inside the middleware: the cost
    measured is the middleware's pass-through check.
``asgi_adapter``
    The middleware around a core that checks nothing and answers every call with the same
    fixed answer: what the ASGI adapter costs on its own, beside ``asgi_fail``.
``asgi_from_env``
    What a user runs: :func:`ciba_middleware.asgi.from_env` around a 404 app, configured by
    ``CIBA_*`` alone (the audit line on), the store named by ``CIBA_STORE_URL``.
``asgi_floor_postgresql``
    A reference, not a product: the floor plus the PostgreSQL store's ``DELETE``, prepared,
    awaited on a psycopg ``AsyncConnection`` of its own (no pool: one per overlapping call,
    kept): the ceiling, on this machine, of
    an ASGI fail API that waits for PostgreSQL (``BENCH_STORE_URL`` names it).
``asgi_floor_sqlite``
    The same for SQLite: the floor plus the store's ``DELETE``, run on the loop on a
    connection of its own to the store's file.
``asgi_floor_redis``
    The same for Redis: the floor plus one ``EVALSHA`` of the store's delete script, packed
    by hand and awaited on an asyncio stream of its own (one per overlapping call, kept).

``python -m benchmarks.asgi_apps [APP ...]`` runs them in process instead, without a server,
each call made as uvicorn makes it (:func:`drive`), and prints the time per call of each::

    python -m benchmarks.asgi_apps asgi_floor asgi_fail asgi_adapter
    valgrind --tool=callgrind python -m benchmarks.asgi_apps --calls 2000 --rounds 1 asgi_fail

Under callgrind, the difference between the instructions of two runs (``--calls 2000`` and
``--calls 4000``), divided by 2,000, is the cost of one call without the start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from ciba_middleware import Reason, StaticTokenVerifier
from ciba_middleware.asgi import ASGIApp, BackchannelFailMiddleware, from_env, not_found_app
from ciba_middleware.core import REQUEST_ID_HEADER, Admitted, Answer, FailApi, Request, pick_request_id
from ciba_middleware.request import Body
from ciba_middleware.response import PLAIN_ANSWERS
from ciba_middleware.stores import new_ticket, store_from_url
from ciba_middleware.stores.redis import _DELETE_SCRIPT, DEFAULT_KEY_PREFIX, _pack

from .apps import _FLOOR_BODY, _FLOOR_HEADERS, FAIL_PATH, GRANTS, HELLO_PATH, SERVICE, TOKEN
from .workload import bodies

_FLOOR_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(name.lower().encode(), value.encode()) for name, value in _FLOOR_HEADERS],
}
_FLOOR_ANSWER = {"type": "http.response.body", "body": _FLOOR_BODY}
_HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"13")],
}
_HELLO_ANSWER = {"type": "http.response.body", "body": b"Hello, World!"}


async def floor(scope: Any, receive: Any, send: Any) -> None:
    """Read and parse the JSON body, answer a fixed JSON."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if body:
        json.loads(body)
    await send(_FLOOR_START)
    await send(_FLOOR_ANSWER)


async def hello(scope: Any, receive: Any, send: Any) -> None:
    """``Hello, World!`` for every HTTP request (``/__ready__`` included)."""
    if scope["type"] != "http":
        return
    await send(_HELLO_START)
    await send(_HELLO_ANSWER)


def fail_api_around(app: ASGIApp) -> BackchannelFailMiddleware:
    store = store_from_url(os.environ.get("CIBA_STORE_URL", "memory://"))
    return BackchannelFailMiddleware(app, store=store, verifier=StaticTokenVerifier(GRANTS))


class FixedAnswer(FailApi):
    """A core that checks nothing: every call gets ACCESS_DENIED's answer, with its Request-Id."""

    def admit(self, request: Request) -> Admitted:
        return (request, pick_request_id(request.request_id), 0.0, None, None, None)

    def complete(self, admitted: Admitted, body: Body) -> Answer:
        fixed, answer = PLAIN_ANSWERS[Reason.ACCESS_DENIED]
        return Answer(200, [*fixed, (REQUEST_ID_HEADER, admitted[1])], answer)


def adapter_alone() -> BackchannelFailMiddleware:
    store = store_from_url(os.environ.get("CIBA_STORE_URL", "memory://"))
    return BackchannelFailMiddleware.around(
        not_found_app, FixedAnswer(store=store, verifier=StaticTokenVerifier(GRANTS))
    )


class _Ceiling:
    """The floor plus one statement of a store's (:meth:`statement`, on the call's ticket):
    the least an ASGI fail API on that store costs. Subclasses make the statement.

    The body is read as :func:`floor` reads it, written out again rather than shared: a
    call more in the floor would move the baseline every row is measured against."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if body:
            await self.statement(json.loads(body)["ticket"])
        await send(_FLOOR_START)
        await send(_FLOOR_ANSWER)

    async def statement(self, ticket: str) -> None:
        raise NotImplementedError


class FloorPostgreSQL(_Ceiling):
    """The floor plus one awaited DELETE of the PostgreSQL store's, on a connection of its own."""

    def __init__(self) -> None:
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(os.environ["BENCH_STORE_URL"])
        table = parse_qs(url.query).get("table", ["ciba_tickets"])[0]
        # The store's own statement (stores/postgresql.py), on the bench's own table.
        self.delete = f'DELETE FROM "{table}" WHERE ticket = %s AND service = %s AND expires_at > now()'.encode()
        self.conninfo = f"postgresql://{url.netloc}{url.path}"
        # Idle connections, taken by a call and given back after: as many as calls overlap.
        self.idle: list[Any] = []

    async def statement(self, ticket: str) -> None:
        import psycopg

        idle = self.idle
        conn = idle.pop() if idle else await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        await conn.execute(self.delete, (ticket, SERVICE), prepare=True)
        idle.append(conn)

    async def aclose(self) -> None:
        """Close the connections (in process, before the loop ends)."""
        while self.idle:
            await self.idle.pop().close()


class FloorRedis(_Ceiling):
    """The floor plus one awaited ``EVALSHA`` of the Redis store's delete script, written by
    hand on an asyncio stream of its own: what any ASGI fail API waiting for Redis costs at least."""

    def __init__(self) -> None:
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(os.environ["BENCH_STORE_URL"])
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 6379
        self.db = (url.path or "/0").strip("/") or "0"
        self.script = _DELETE_SCRIPT.encode()
        # The store's keys, on the bench's own prefix.
        self.prefix = parse_qs(url.query).get("key_prefix", [DEFAULT_KEY_PREFIX])[0].encode()
        self.sha = b""
        # Idle connections, taken by a call and given back after: as many as calls overlap.
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(_pack(b"SELECT", self.db.encode()) + _pack(b"SCRIPT", b"LOAD", self.script))
        await writer.drain()
        if await reader.readline() != b"+OK\r\n":
            raise RuntimeError("redis: SELECT failed")
        await reader.readline()  # $40
        self.sha = (await reader.readline()).rstrip()
        return reader, writer

    async def statement(self, ticket: str) -> None:
        reader, writer = self.idle.pop() if self.idle else await self._connect()
        writer.write(_pack(b"EVALSHA", self.sha, b"1", self.prefix + ticket.encode(), SERVICE.encode()))
        await writer.drain()
        reply = await reader.readline()
        if reply[:1] != b":":
            raise RuntimeError(f"redis: {reply!r}")
        self.idle.append((reader, writer))

    async def aclose(self) -> None:
        """Close the connections (in process, before the loop ends)."""
        while self.idle:
            writer = self.idle.pop()[1]
            writer.close()
            await writer.wait_closed()


class FloorSQLite(_Ceiling):
    """The floor plus the SQLite store's ``DELETE``, run on the loop on a connection of its own
    (WAL, ``synchronous = NORMAL``, as the store opens its file): what any ASGI fail API that
    deletes from SQLite costs at least."""

    def __init__(self) -> None:
        from ciba_middleware.stores.sqlite import SQLiteTicketStore

        store = store_from_url(os.environ["BENCH_STORE_URL"])
        assert isinstance(store, SQLiteTicketStore)
        store.exists(SERVICE, new_ticket())  # the file and its table made, as the store makes them
        self.path, table = store.path, store.table
        store.close()
        self.delete = f"DELETE FROM {table} WHERE ticket = ? AND service = ? AND expires_at > ?"
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.cursor = self.conn.cursor()

    async def statement(self, ticket: str) -> None:
        self.cursor.execute(self.delete, (ticket, SERVICE, time.time()))

    async def aclose(self) -> None:
        """Close the connection (in process, before the loop ends)."""
        self.conn.close()


APPS: dict[str, Callable[[], ASGIApp]] = {
    "asgi_floor": lambda: floor,
    "asgi_fail": lambda: fail_api_around(not_found_app),
    "asgi_bare": lambda: hello,
    "asgi_wrapped": lambda: fail_api_around(hello),
    "asgi_adapter": adapter_alone,
    "asgi_from_env": lambda: from_env(),
    "asgi_floor_postgresql": FloorPostgreSQL,
    "asgi_floor_redis": FloorRedis,
    "asgi_floor_sqlite": FloorSQLite,
}


def _from_env() -> ASGIApp | None:
    name = os.environ.get("BENCH_APP")
    if not name:
        return None
    return APPS[name]()


application = _from_env()


# -- in process ------------------------------------------------------------------------------
#
# The apps above driven without a server, each call as uvicorn makes it: a new scope per
# request (uvicorn's keys), ``receive`` and ``send`` bound methods of a new object, the
# body in one ``http.request`` message. What a server costs beyond that (parsing, writing)
# is the same for every app and is left out: the ratios here are the apps' own.


class _Cycle:
    """One request's ``receive`` and ``send``, like uvicorn's ``RequestResponseCycle``."""

    __slots__ = ("body", "status")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.status = 0

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


def fail_requests(payloads: list[bytes]) -> list[tuple[dict[str, Any], bytes]]:
    """A scope (uvicorn's keys, wrk's headers) and a body for each payload."""
    path = FAIL_PATH
    out = []
    for body in payloads:
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "root_path": "",
            "headers": headers,
            "state": {},
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
        }
        out.append((scope, body))
    return out


def hello_requests() -> list[tuple[dict[str, Any], bytes]]:
    scope, _ = fail_requests([b""])[0]
    scope.update(method="GET", path=HELLO_PATH, raw_path=HELLO_PATH.encode())
    scope["headers"] = [(b"host", b"127.0.0.1:8000")]
    return [(scope, b"")]


async def drive(app: ASGIApp, requests: list[tuple[dict[str, Any], bytes]], count: int, start: int = 0) -> int:
    """``count`` calls of ``app``, one after the other on the running loop; the last status."""
    size = len(requests)
    status = 0
    for i in range(start, start + count):
        template, body = requests[i % size]
        scope = template.copy()
        scope["headers"] = list(template["headers"])
        cycle = _Cycle(body)
        await app(scope, cycle.receive, cycle.send)
        status = cycle.status
    return status


def prepared(name: str, tickets: int) -> tuple[ASGIApp, list[tuple[dict[str, Any], bytes]]]:
    """App ``name`` and its requests: for the fail API, one per ticket issued in its store."""
    app = APPS[name]()
    if name in ("asgi_bare", "asgi_wrapped"):
        return app, hello_requests()
    if isinstance(app, BackchannelFailMiddleware):
        issued = [app.store.issue(SERVICE, 3600) for _ in range(tickets)]
    else:
        issued = [new_ticket() for _ in range(tickets)]
    return app, fail_requests(bodies(issued))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.asgi_apps", description=__doc__.split("\n")[0])
    parser.add_argument(
        "apps", nargs="*", metavar="APP", default=["asgi_floor", "asgi_fail", "asgi_adapter"], help=", ".join(APPS)
    )
    parser.add_argument("--calls", type=int, default=20000, help="calls per round and app (default 20000)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds, the apps alternating (default 10)")
    parser.add_argument("--tickets", type=int, default=10000, help="tickets issued, whatever the calls (default 10000)")
    args = parser.parse_args(argv)
    for name in args.apps:
        if name not in APPS:
            parser.error(f"unknown app {name!r}; one of {', '.join(APPS)}")
    apps = {name: prepared(name, args.tickets) for name in args.apps}
    best = dict.fromkeys(apps, float("inf"))

    async def run() -> None:
        for app, requests in apps.values():
            await drive(app, requests, 200)  # warm: caches filled, code specialized
        for round_ in range(args.rounds):
            for name, (app, requests) in apps.items():
                started = time.perf_counter()
                status = await drive(app, requests, args.calls, 200 + round_ * args.calls)
                best[name] = min(best[name], (time.perf_counter() - started) / args.calls)
                assert status == 200, f"{name} answered {status}"

    asyncio.run(run())
    first = next(iter(best.values()), 1.0)
    for name, seconds in best.items():
        print(f"{name:14} {seconds * 1e6:8.2f} us per call  {first / seconds:8.1%} of {args.apps[0]}'s rate")


if __name__ == "__main__":
    main()
