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
import time
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from ciba_middleware import Reason, StaticTokenVerifier
from ciba_middleware.asgi import ASGIApp, BackchannelFailMiddleware, not_found_app
from ciba_middleware.core import REQUEST_ID_HEADER, Answer, FailApi, Route, pick_request_id
from ciba_middleware.request import Body
from ciba_middleware.response import PLAIN_ANSWERS
from ciba_middleware.stores import new_ticket, store_from_url

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

    def respond(
        self,
        route: Route,
        method: str,
        authorization: str,
        body: Body,
        client_addr: str | None = None,
        request_id: str | None = None,
        dpop: str = "",
        url: str = "",
        traceparent: str | None = None,
    ) -> Answer:
        fixed, answer = PLAIN_ANSWERS[Reason.ACCESS_DENIED]
        return Answer(200, [*fixed, (REQUEST_ID_HEADER, pick_request_id(request_id))], answer)


def adapter_alone() -> BackchannelFailMiddleware:
    store = store_from_url(os.environ.get("CIBA_STORE_URL", "memory://"))
    return BackchannelFailMiddleware.around(
        not_found_app, FixedAnswer(store=store, verifier=StaticTokenVerifier(GRANTS))
    )


APPS: dict[str, Callable[[], ASGIApp]] = {
    "asgi_floor": lambda: floor,
    "asgi_fail": lambda: fail_api_around(not_found_app),
    "asgi_bare": lambda: hello,
    "asgi_wrapped": lambda: fail_api_around(hello),
    "asgi_adapter": adapter_alone,
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
