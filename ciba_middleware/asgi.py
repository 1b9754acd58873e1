"""The fail API as native ASGI 3 middleware: :class:`BackchannelFailMiddleware`.

For Starlette, FastAPI, Django's ``get_asgi_application()`` or any ASGI app, under uvicorn
or hypercorn::

    from ciba_middleware.asgi import from_env

    app = FastAPI()
    ...
    application = from_env(app)          # uvicorn main:application

``ciba_middleware.asgi:application`` is the fail API alone (every other path a JSON 404),
configured from ``CIBA_*`` when the server starts it::

    uvicorn ciba_middleware.asgi:application

The adapter reads the request's body from ``receive`` (a chunked body too, bounded by
``max_body_bytes``) and hands it, already read, to :class:`ciba_middleware.core.FailApi`,
which does the work; the call runs in a worker thread, so a ticket store's network round
trip never holds the event loop (with the ``memory://`` store and static grants, which do
no I/O, it runs on the loop: the hop to a thread would cost more than the call). Every
other scope (``http``, ``websocket``, ``lifespan``) reaches the app untouched. Nothing
here imports a web framework.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping, MutableMapping
from typing import Any, Concatenate, ParamSpec, TypeVar, Unpack

from .auth import StaticTokenVerifier, TokenVerifier
from .config import Settings
from .core import API_PATH, Adapter, FailApi, FailApiOptions, pick_request_id
from .dpop import request_url
from .errors import ConfigurationError, InternalError
from .redact import mask_url
from .request import Body
from .response import HEADERS, client_response, error_body
from .stores.base import TicketStore, ticket_hash
from .stores.memory import MemoryTicketStore
from .views import BackchannelFail, server_error_status, view_service

__all__ = ["ASGIApp", "BackchannelFailMiddleware", "application", "from_env", "not_found_app"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The request headers the fail API reads, by their ASGI (lower-case byte) names.
_AUTHORIZATION = b"authorization"
_CONTENT_TYPE = b"content-type"
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
_REQUEST_ID = b"request-id"
_X_REQUEST_ID = b"x-request-id"
_DPOP = b"dpop"
_HOST = b"host"
_WANTED = frozenset(
    (_AUTHORIZATION, _CONTENT_TYPE, _CONTENT_LENGTH, _TRANSFER_ENCODING, _REQUEST_ID, _X_REQUEST_ID, _DPOP, _HOST)
)


P = ParamSpec("P")
T = TypeVar("T")


def _off_the_loop(
    method: Callable[Concatenate[FailApi, P], T],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    """``method`` of the adapter's FailApi as a coroutine method that runs it in a worker thread."""

    async def call(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        work = functools.partial(method, self.api, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, work)

    call.__doc__ = f"{method.__doc__}\n\nA coroutine here: the call runs in a worker thread."
    return call


class BackchannelFailMiddleware(Adapter):
    """Serve Authlete's ``/backchannel/authentication/fail`` API in front of an ASGI app.

    The same two routes and the same answers as the WSGI
    :class:`ciba_middleware.BackchannelFailMiddleware`; the parameters after ``app`` are
    :class:`ciba_middleware.core.FailApi`'s. Under a mount (``root_path``), the routes are
    matched on the path below it, as Starlette's routing does.

    For the app's views: :meth:`fail` and :meth:`issue_ticket` are coroutines (the store
    call runs in a worker thread), and :meth:`exception_handler` answers a
    :class:`ciba_middleware.BackchannelFail` raised in a Starlette or FastAPI view.
    ``service_id`` is the service those calls are for (default: the only service of the
    grants); ``server_error_status`` is the client's status for ``server_error``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: TicketStore,
        verifier: TokenVerifier,
        service_id: str | None = None,
        server_error_status: int = 500,
        **options: Unpack[FailApiOptions],
    ) -> None:
        api = FailApi(store=store, verifier=verifier, **options)
        self._setup(app, api, service_id, server_error_status)

    @classmethod
    def around(
        cls, app: ASGIApp, api: FailApi, *, service_id: str | None = None, server_error_status: int = 500
    ) -> BackchannelFailMiddleware:
        """The middleware serving an existing ``api`` in front of ``app``."""
        middleware = cls.__new__(cls)
        middleware._setup(app, api, service_id, server_error_status)
        return middleware

    def _setup(self, app: ASGIApp, api: FailApi, service_id: str | None, status: object) -> None:
        self.app = app
        self.api = api
        # The memory store and static grants do no I/O: their calls are as quick as the
        # hop to a thread and back, which would cost more than the call. Anything else
        # (a store on a file or a network, a verifier of the caller's) runs in a thread.
        # Exactly these classes: a subclass may do anything.
        self._inline = type(api.store) is MemoryTicketStore and type(api.verifier) is StaticTokenVerifier
        self.server_error_status = server_error_status(status, "server_error_status")
        # Checked now when given; when not, needed (and the grants asked) only by a view.
        self._service_id = None if service_id is None else view_service(service_id, api.verifier, "service_id")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(API_PATH):
            return await self.app(scope, receive, send)
        route = self.api.route(_wsgi_path(scope))
        if route is None:
            return await self.app(scope, receive, send)
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                # Repeated headers are joined, as a WSGI server joins them.
                headers[name] = headers[name] + b"," + value if name in headers else value
        get = headers.get
        content_length = get(_CONTENT_LENGTH, b"").decode("latin-1")
        body = await _read_body(receive, content_length, self.api.max_body_bytes)
        if body is None:
            return None  # the client went away before its body arrived: nothing was done
        client = scope.get("client")
        dpop = get(_DPOP, b"").decode("latin-1")
        respond = functools.partial(
            self.api.respond,
            route,
            scope["method"],
            get(_AUTHORIZATION, b"").decode("latin-1"),
            Body(
                get(_CONTENT_TYPE, b"").decode("latin-1"),
                content_length,
                io.BytesIO(body).read,
                terminated=True,
                chunked=_TRANSFER_ENCODING in headers,
            ),
            client[0] if client else None,
            pick_request_id(get(_REQUEST_ID, b"").decode("latin-1"), get(_X_REQUEST_ID, b"").decode("latin-1")),
            dpop,
            _url(scope, get(_HOST, b"").decode("latin-1")) if dpop else "",
        )
        answer = respond() if self._inline else await asyncio.get_running_loop().run_in_executor(None, respond)
        await _send(send, answer.status, answer.headers, answer.body)
        return None

    # -- for the app's views ------------------------------------------------------------

    @property
    def service_id(self) -> str:
        """The service of :meth:`issue_ticket` and :meth:`exception_handler`."""
        if self._service_id is None:
            self._service_id = view_service(None, self.api.verifier, "service_id")
        return self._service_id

    #: :meth:`FailApi.fail <ciba_middleware.core.FailApi.fail>` as a coroutine: the same
    #: arguments, the call made in a worker thread, off the event loop.
    fail = _off_the_loop(FailApi.fail)

    async def issue_ticket(self, ttl: float | None = None) -> str:
        """A new ticket for :attr:`service_id`, living ``ttl`` seconds (the store's default TTL by default).

        Raises :class:`ciba_middleware.StoreError` when the store fails.
        """
        call = functools.partial(self.api.store.issue, self.service_id, ttl)
        return await asyncio.get_running_loop().run_in_executor(None, call)

    async def exception_handler(self, request: object, exc: Exception) -> ClientReply:
        """Starlette's and FastAPI's handler for :class:`BackchannelFail`::

            app.add_exception_handler(BackchannelFail, middleware.exception_handler)

        Fails the request in process (deleting its ticket) and answers the client with the
        status, JSON body and no-store headers of :func:`ciba_middleware.client_response`.
        Any other exception is raised again.
        """
        if not isinstance(exc, BackchannelFail):
            raise exc
        answer = await self.fail(self.service_id, exc.ticket, exc.reason, exc.description, exc.uri)
        log.debug(
            "backchannel authentication request failed: %s, ticket %s",
            exc.reason.value,
            ticket_hash(exc.ticket) if exc.ticket else None,
        )
        reply = client_response(answer, server_error_status=self.server_error_status)
        body = reply.body.encode("utf-8")
        return ClientReply(reply.status, [*reply.headers, ("Content-Length", str(len(body)))], body)


class ClientReply:
    """A response as an ASGI app, which is what Starlette's exception handlers may return."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send(send, self.status_code, self.headers, self.body)


def _url(scope: Scope, host: str) -> str:
    """The URL the request was sent to, without query: a DPoP proof's ``htu``.

    The path is the one sent (``raw_path``, where the server gives it), so a mount does not
    change it; behind a proxy, the server must be told the public scheme and host
    (uvicorn's ``--proxy-headers``).
    """
    if not host:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else ""
    raw: bytes | None = scope.get("raw_path")
    if raw is not None:
        path = raw.partition(b"?")[0].decode("latin-1")
    else:
        path = scope.get("root_path", "") + _wsgi_path(scope) if "root_path" in scope else scope["path"]
    return request_url(scope.get("scheme", "http"), host, path)


def _wsgi_path(scope: Scope) -> str:
    """The path below ``root_path``, as WSGI's ``PATH_INFO`` has it (raw bytes as latin-1).

    ASGI servers give ``path`` decoded as UTF-8, and ``root_path`` inside it; servers from
    before that rule give ``path`` without it.
    """
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        path = path[len(root) :]
    return path if path.isascii() else path.encode("utf-8").decode("latin-1")


async def _read_body(receive: Receive, content_length: str, limit: int) -> bytes | None:
    """The body, or its first ``limit + 1`` bytes when longer; None when the client left.

    A ``Content-Length`` over the limit is not read at all: the API answers 413 from the
    header alone.
    """
    if content_length.isascii() and content_length.isdigit() and int(content_length) > limit:
        return b""
    message = await receive()
    if message["type"] != "http.request":
        return None  # http.disconnect
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body  # the usual case: the whole body in one message
    chunks = [body]
    size = len(body)
    while size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


# Headers as ASGI sends them, for the answers that recur (each reason's, each error's): most
# calls get one of a few dozen. Bounded, so answers with descriptions cannot grow it.
_ENCODED: dict[tuple[tuple[str, str], ...], list[tuple[bytes, bytes]]] = {}
_ENCODED_MAX = 256


async def _send(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    key = tuple(headers)
    encoded = _ENCODED.get(key)
    if encoded is None:
        encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        if len(_ENCODED) < _ENCODED_MAX:
            _ENCODED[key] = encoded
    # A list of its own each time: the server may keep or change it.
    await send({"type": "http.response.start", "status": status, "headers": list(encoded)})
    await send({"type": "http.response.body", "body": body})


_NOT_FOUND = b'{"error":"not_found"}'


async def not_found_app(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app that answers every HTTP request with a JSON 404 (and serves the lifespan)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1000})
    else:
        headers = [("Content-Type", "application/json;charset=UTF-8"), ("Content-Length", str(len(_NOT_FOUND)))]
        await _send(send, 404, headers, _NOT_FOUND)


def from_env(app: ASGIApp | None = None, environ: Mapping[str, str] | None = None) -> BackchannelFailMiddleware:
    """Build the ASGI middleware around ``app`` from ``CIBA_*`` environment variables.

    With no ``app``, it wraps :func:`not_found_app`. ``CIBA_SERVICE_ID`` and
    ``CIBA_SERVER_ERROR_STATUS`` are read for the views, as by the Flask extension.
    Raises :class:`ConfigurationError` naming the variable at fault.
    """
    values = os.environ if environ is None else environ
    settings = Settings.from_mapping(values)
    if settings.metrics_path:
        raise ConfigurationError(
            "CIBA_METRICS_PATH is set, but the ASGI middleware does not serve metrics: unset it, "
            "or serve the fail API through the WSGI middleware"
        )
    service = values.get("CIBA_SERVICE_ID") or None
    status = server_error_status(values.get("CIBA_SERVER_ERROR_STATUS"))
    api, _ = settings.build_api()
    if service is not None:
        service = view_service(service, api.verifier)
    middleware = BackchannelFailMiddleware.around(
        app if app is not None else not_found_app, api, service_id=service, server_error_status=status
    )
    log.info("fail API (ASGI) served under %s/api/, tickets in %s", settings.prefix, mask_url(settings.store_url))
    return middleware


class _Application:
    """``ciba_middleware.asgi:application``: :func:`from_env`, built at the server's start-up.

    An object of the module, so every server finds it (hypercorn looks names up in the
    module's namespace); the environment is read when the server starts the app (the
    lifespan's startup) or, without a lifespan, at the first request, not at import. A bad
    configuration fails the startup with one line (uvicorn then exits with status 3); without
    a lifespan, every request gets a clean 500 and the error is logged.
    """

    def __init__(self) -> None:
        self._middleware: BackchannelFailMiddleware | None = None

    def _build(self) -> BackchannelFailMiddleware:
        if self._middleware is None:
            self._middleware = from_env()
        return self._middleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            middleware = self._build()
        except ConfigurationError as exc:
            message = f"ciba-middleware: configuration error: {exc}"
        else:
            return await middleware(scope, receive, send)
        # Outside the except clause: the server's own error, if it raises one, is not chained to ours.
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.failed", "message": message})
            return None
        log.error("%s", message)
        if scope["type"] == "http":
            body = error_body(_UNCONFIGURED)
            await _send(send, 500, [*HEADERS, ("Content-Length", str(len(body)))], body)
        return None


_UNCONFIGURED = InternalError("the fail API is not configured; see the server log.")

application = _Application()
