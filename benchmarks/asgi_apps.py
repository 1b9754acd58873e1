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
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from ciba_middleware import StaticTokenVerifier
from ciba_middleware.asgi import ASGIApp, BackchannelFailMiddleware, not_found_app
from ciba_middleware.stores import store_from_url

from .apps import _FLOOR_BODY, _FLOOR_HEADERS, GRANTS

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


APPS: dict[str, Callable[[], ASGIApp]] = {
    "asgi_floor": lambda: floor,
    "asgi_fail": lambda: fail_api_around(not_found_app),
    "asgi_bare": lambda: hello,
    "asgi_wrapped": lambda: fail_api_around(hello),
}


def _from_env() -> ASGIApp | None:
    name = os.environ.get("BENCH_APP")
    if not name:
        return None
    return APPS[name]()


application = _from_env()
