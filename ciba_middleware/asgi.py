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
from .core import API_PATH, REQUEST_ID_HEADER, Adapter, FailApi, FailApiOptions, pick_request_id
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
_TRACEPARENT = b"traceparent"
_WANTED = frozenset(
    (
        *(_AUTHORIZATION, _CONTENT_TYPE, _CONTENT_LENGTH, _TRANSFER_ENCODING, _REQUEST_ID, _X_REQUEST_ID),
        *(_DPOP, _HOST, _TRACEPARENT),
    )
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
        # A Content-Length with fewer digits than the body limit is within it: most calls
        # need no more than this to know. (Were the api's limit changed afterwards, a body over
        # it might be read before the 413, never answered otherwise.)
        self._length_digits = len(str(api.max_body_bytes))
        self.server_error_status = server_error_status(status, "server_error_status")
        # Checked now when given; when not, needed (and the grants asked) only by a view.
        self._service_id = None if service_id is None else view_service(service_id, api.verifier, "service_id")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (path := scope["path"]).endswith(API_PATH):
            return await self.app(scope, receive, send)
        # What follows runs on every call of the API, written in line: a Python call, a
        # coroutine or an allocation here costs as much as one of the core's checks.
        if scope.get("root_path") or not path.isascii():
            path = _wsgi_path(scope)
        api = self.api
        route = api.route(path)
        if route is None:
            return await self.app(scope, receive, send)
        raw = scope["headers"]
        if type(raw) is not list:
            raw = list(raw)  # any iterable, as ASGI allows
        # All the headers at once, in C; when a name comes twice, the ones read here are
        # joined as a WSGI server joins them.
        headers: dict[bytes, bytes] = dict(raw)
        if len(headers) != len(raw):
            headers = _joined(raw)
        get = headers.get
        length = get(_CONTENT_LENGTH, b"")
        # A Content-Length over the limit is not read at all: the API answers 413 from the
        # header alone. One with fewer digits than the limit cannot be over it.
        if len(length) >= self._length_digits and length.isdigit() and int(length) > api.max_body_bytes:
            body = b""
        else:
            message = await receive()
            if message["type"] != "http.request":
                return None  # http.disconnect: the client went away, nothing was done
            body = message.get("body", b"")
            if message.get("more_body", False):
                rest = await _read_rest(receive, body, api.max_body_bytes)
                if rest is None:
                    return None
                body = rest
        # Neither sent (the usual case): None, and the core makes the ID.
        request_id = None
        if _REQUEST_ID in headers or _X_REQUEST_ID in headers:
            request_id = _caller_request_id(get(_REQUEST_ID), get(_X_REQUEST_ID))
        dpop = url = ""
        if _DPOP in headers and (proof := headers[_DPOP]):
            dpop = proof.decode("latin-1")
            url = _url(scope, get(_HOST, b"").decode("latin-1"))
        client = scope.get("client")
        traceparent = get(_TRACEPARENT)
        args = (
            route,
            scope["method"],
            get(_AUTHORIZATION, b"").decode("latin-1"),
            _new_body(
                Body,
                (
                    get(_CONTENT_TYPE, b"").decode("latin-1"),
                    length.decode("latin-1"),
                    io.BytesIO(body).read if body else _NO_BODY.read,
                    True,  # terminated: the body is in memory, read to its end or past the limit
                    _TRANSFER_ENCODING in headers,  # chunked
                ),
            ),
            client[0] if client else None,
            request_id,
            dpop,
            url,
            None if traceparent is None else traceparent.decode("latin-1"),
        )
        if self._inline:
            answer = api.respond(*args)
        else:
            answer = await asyncio.get_running_loop().run_in_executor(None, api.respond, *args)
        # The core's answers end with the call's Request-Id: the headers before it recur (each
        # reason's, each error's) and are encoded once; only the ID is encoded per call.
        out = answer.headers
        if out and (last := out[-1])[0] == REQUEST_ID_HEADER and (head := _ENCODED.get(tuple(out[:-1]))):
            encoded = [*head, (_REQUEST_ID_NAME, last[1].encode("latin-1"))]
        else:
            encoded = _raw_headers(out)  # the first answer of its kind, or not the core's
        await send({"type": "http.response.start", "status": answer.status, "headers": encoded})
        await send({"type": "http.response.body", "body": answer.body})
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


def _joined(raw: list[Any]) -> dict[bytes, bytes]:
    """The headers the API reads, each sent more than once joined with commas, as a WSGI server joins them."""
    headers: dict[bytes, bytes] = {}
    for name, value in raw:
        if name in _WANTED:
            headers[name] = headers[name] + b"," + value if name in headers else value
    return headers


async def _read_rest(receive: Receive, body: bytes, limit: int) -> bytes | None:
    """A body sent in several messages, after its first part ``body``; None when the client left.

    Read up to its end or its first ``limit + 1`` bytes, whichever comes first: the API answers
    413 for more, and the rest is never read.
    """
    chunks = [body]
    size = len(body)
    while size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        chunk: bytes = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _caller_request_id(given: bytes | None, forwarded: bytes | None) -> str | None:
    """The caller's ``Request-Id``, else its ``X-Request-Id``, for the core to keep when well formed.

    With both sent, the first well-formed one (:func:`pick_request_id`); with neither, None.
    """
    if given is None:
        return None if forwarded is None else forwarded.decode("latin-1")
    if forwarded is None:
        return given.decode("latin-1")
    return pick_request_id(given.decode("latin-1"), forwarded.decode("latin-1"))


# The body of a request without one: reading it gives b"", whoever reads it.
_NO_BODY = io.BytesIO()
# tuple.__new__ directly: a named tuple's own __new__ is a Python function, one more call.
_new_body = tuple.__new__

# Headers as ASGI sends them (lower-case names, bytes), for the answers that recur. The core's
# answers end with the call's own Request-Id: what comes before it is one of a few dozen lists
# (each reason's, each error's), encoded once; only the ID is encoded per call. Bounded, so
# answers with descriptions (their own Content-Length) cannot grow it.
_ENCODED: dict[tuple[tuple[str, str], ...], list[tuple[bytes, bytes]]] = {}
_ENCODED_MAX = 256
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode("latin-1")


def _raw_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """``headers`` as ASGI sends them: a new list each time (the server may keep or change it)."""
    last = headers[-1] if headers else None
    tail: list[tuple[bytes, bytes]] = []
    if last is not None and last[0] == REQUEST_ID_HEADER:
        key = tuple(headers[:-1])
        tail.append((_REQUEST_ID_NAME, last[1].encode("latin-1")))
    else:
        key = tuple(headers)
    encoded = _ENCODED.get(key)
    if encoded is None:
        encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in key]
        if len(_ENCODED) < _ENCODED_MAX:
            _ENCODED[key] = encoded
    return [*encoded, *tail]


async def _send(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _raw_headers(headers)})
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
