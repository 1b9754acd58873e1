"""The fail API as native ASGI 3 middleware: :class:`BackchannelFailMiddleware`.

A translation only (:mod:`ciba_middleware.adapter` holds the rules): the scope read into the
core's :class:`~ciba_middleware.core.Request` (:mod:`ciba_middleware.scope`), the body from
``receive`` once the caller is authenticated, the :class:`~ciba_middleware.core.Answer`
written back as two messages. For Starlette, FastAPI, Django's ``get_asgi_application()`` or
any ASGI app, under uvicorn or hypercorn::

    application = from_env(app)          # uvicorn main:application
    uvicorn ciba_middleware.asgi:application   # the fail API alone, every other path a 404

The event loop never waits: a store with a path for the loop (Redis, PostgreSQL, SQLite:
:class:`~ciba_middleware.stores.base.AsyncTicketStore`) is awaited on it, the memory store
with static grants (no I/O) runs on it, anything else in a worker thread (:func:`in_thread`);
docs/asgi.md says what runs where. Every other scope reaches the app untouched. No web
framework is imported, but Starlette's ``Response`` by the exception handler for Starlette
and FastAPI apps, when it runs.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from .adapter import Adapter, BackchannelFail, Site, server_error_status, unconfigured, view_service
from .auth import StaticTokenVerifier, TokenVerifier
from .config import Settings
from .core import REQUEST_ID_HEADER, ROUTED_SUFFIXES, Answer, FailApi, FailApiOptions
from .errors import ConfigurationError
from .grants import ReloadingVerifier, first_start
from .reasons import Reason
from .request import Body
from .response import FailResponse
from .scope import (
    CONTENT_LENGTH,
    CONTENT_TYPE,
    TRANSFER_ENCODING,
    Scope,
    endpoint_headers,
    scope_headers,
    scope_paths,
    scope_request,
)
from .stores.base import AsyncTicketStore, TicketStore
from .stores.memory import MemoryTicketStore
from .tuples import new_tuple

if TYPE_CHECKING:
    from starlette.responses import Response as StarletteResponse

__all__ = ["ASGIApp", "ASGIMiddleware", "BackchannelFailMiddleware", "application", "from_env", "not_found_app"]

log = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")


class BackchannelFailMiddleware(Adapter):
    """Serve Authlete's ``/backchannel/authentication/fail`` API in front of an ASGI app.

    The same routes and answers as the WSGI :class:`ciba_middleware.BackchannelFailMiddleware`;
    the parameters after ``app`` are :class:`ciba_middleware.core.FailApi`'s. Under a mount
    (``root_path``) the routes are matched below it, as Starlette's routing does. Built from
    settings (:func:`from_env`), it serves the health and metrics endpoints too.

    For the app's views: :meth:`fail` and :meth:`issue_ticket` are coroutines (the store call
    runs in a worker thread), and :meth:`exception_handler` answers a
    :class:`ciba_middleware.BackchannelFail` raised in a Starlette or FastAPI view.
    ``service_id`` is the service of those calls (default: the only service of the grants);
    ``server_error_status`` is the client's status for ``server_error``.
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
        self._setup(app, _site(api, service_id, server_error_status))

    @classmethod
    def around(
        cls, app: ASGIApp, site: Site | FailApi, *, service_id: str | None = None, server_error_status: int = 500
    ) -> BackchannelFailMiddleware:
        """The middleware serving an existing ``site`` (or only a fail API) in front of ``app``."""
        middleware = cls.__new__(cls)
        middleware._setup(app, site if isinstance(site, Site) else _site(site, service_id, server_error_status))
        return middleware

    def _setup(self, app: ASGIApp, site: Site) -> None:
        self.app = app
        self._serve(site)
        api = site.api
        # What may run on the loop, decided once. The memory store and static grants do no
        # I/O (exactly these classes: a subclass may do anything): the whole call runs on it.
        # Authentication without a DPoP proof (whose replay check asks the store) does no I/O
        # with the package's own verifiers. A store with a path for the loop deletes on it.
        verifier = type(api.verifier)
        self._inline = type(api.store) is MemoryTicketStore and verifier is StaticTokenVerifier
        self._admit_inline = verifier is StaticTokenVerifier or verifier is ReloadingVerifier
        self._async_store = api.store if not self._inline and isinstance(api.store, AsyncTicketStore) else None
        # A Content-Length with fewer digits than the body limit is within it: most calls
        # need no more than len() to know (_over_limit).
        self._length_digits = len(str(api.max_body_bytes))

    def _over_limit(self, length: bytes) -> bool:
        """Whether the Content-Length header ``length`` announces more than the body limit:
        then nothing is read, and the core answers 413 from the header."""
        return len(length) >= self._length_digits and length.isdigit() and int(length) > self.api.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"].endswith(ROUTED_SUFFIXES) or self.endpoints):
            return await self.app(scope, receive, send)
        root, path = scope_paths(scope)
        api = self.api
        route = api.route(path)
        if route is None:
            endpoint = self.endpoint(path)
            if endpoint is None:
                return await self.app(scope, receive, send)
            # A health probe may wait for the store's ping: off the loop.
            answer = await in_thread(endpoint.answer, scope["method"], *endpoint_headers(scope_headers(scope)))
            return await _send(send, answer)
        headers = scope_headers(scope)
        request = scope_request(scope, headers, route, root, path, _UNREAD)
        if self._inline or (self._admit_inline and not request.dpop):
            admitted = api.admit(request)
        else:
            admitted = await in_thread(api.admit, request)
        body = b""
        length = headers.get(CONTENT_LENGTH, b"")
        # Authenticated (or refused, reading nothing): only now is the body read; one over the
        # limit by its Content-Length is left unread, the core answers 413 from the header.
        if admitted[-1] is None and not self._over_limit(length):
            message = await receive()
            if message["type"] != "http.request":
                return None  # http.disconnect: the client went away, nothing was done
            body = message.get("body", b"")
            if message.get("more_body", False):
                rest = await _read_rest(receive, body, api.max_body_bytes)
                if rest is None:
                    return None
                body = rest
        request_body = new_tuple(
            Body,
            (
                headers.get(CONTENT_TYPE, b"").decode("latin-1"),
                length.decode("latin-1"),
                io.BytesIO(body).read,
                True,  # terminated: the body is in memory, read to its end or past the limit
                TRANSFER_ENCODING in headers,  # chunked
            ),
        )
        if self._inline or admitted[-1] is not None:
            answer = api.complete(admitted, request_body)
        elif self._async_store is not None and route.endpoint == "fail":
            answer = await api.complete_async(admitted, request_body, self._async_store)
        else:
            answer = await in_thread(api.complete, admitted, request_body)
        await send({"type": "http.response.start", "status": answer.status, "headers": asgi_headers(answer.headers)})
        await send({"type": "http.response.body", "body": answer.body})
        return None

    # -- for the app's views ------------------------------------------------------------

    async def fail(
        self,
        service_id: str,
        ticket: str | None = None,
        reason: Reason | str | Enum | None = None,
        error_description: str | None = None,
        error_uri: str | None = None,
    ) -> FailResponse:
        """:meth:`FailApi.fail <ciba_middleware.core.FailApi.fail>` as a coroutine: the same
        arguments and answer, the call made in a worker thread, off the event loop."""
        return await in_thread(self.api.fail, service_id, ticket, reason, error_description, error_uri)

    async def issue_ticket(self, ttl: float | None = None) -> str:
        """A new ticket for :attr:`service_id`, living ``ttl`` seconds (the store's default TTL by default).

        Raises :class:`ciba_middleware.StoreError` when the store fails.
        """
        return await in_thread(self.api.store.issue, self.service_id, ttl)

    async def exception_handler(self, request: object, exc: Exception) -> StarletteResponse:
        """Starlette's and FastAPI's handler for :class:`BackchannelFail`::

            app.add_exception_handler(BackchannelFail, middleware.exception_handler)

        Fails the request in process, off the loop (deleting its ticket), and answers the
        client (:meth:`~ciba_middleware.adapter.Adapter.view_failed`) with a Starlette
        ``Response``. Any other exception is raised again.
        """
        if not isinstance(exc, BackchannelFail):
            raise exc
        from starlette.responses import Response  # only a Starlette app calls this

        answer = await in_thread(self.view_failed, exc)
        return Response(answer.body, status_code=answer.status, headers=dict(answer.headers))


#: The ASGI adapter by what it is, beside :class:`ciba_middleware.middleware.WSGIMiddleware`.
ASGIMiddleware = BackchannelFailMiddleware


def _site(api: FailApi, service_id: str | None, status: object) -> Site:
    return Site(
        api,
        # Checked now when given; when not, needed (and the grants asked) only by a view.
        service_id=None if service_id is None else view_service(service_id, api.verifier, "service_id"),
        server_error_status=server_error_status(status, "server_error_status"),
    )


async def in_thread(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` in the loop's default thread pool, awaited: for what may block."""
    return await asyncio.get_running_loop().run_in_executor(None, call, *args)


async def _read_rest(receive: Receive, body: bytes, limit: int) -> bytes | None:
    """A body sent in several messages, after its first part ``body``, up to its end or its
    first ``limit + 1`` bytes (the core answers 413 for more, and the rest is never read);
    None when the client left."""
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


# The body the core's admit() sees: it reads none (the adapter reads it after).
_UNREAD = Body("", "", io.BytesIO().read, True, False)

# Headers as ASGI sends them, for the answers that recur. The core's answers end with the
# call's own Request-Id: what comes before it is one of a few dozen lists (each reason's,
# each error's), encoded once; only the ID is encoded per call. Bounded, so answers with
# descriptions (their own Content-Length) cannot grow it.
_ENCODED: dict[tuple[tuple[str, str], ...], list[tuple[bytes, bytes]]] = {}
_ENCODED_MAX = 256
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode("latin-1")


def asgi_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """``headers`` as ASGI sends them (lower-case names, latin-1 bytes): a new list each time,
    which the server may keep or change."""
    if headers and (last := headers[-1])[0] == REQUEST_ID_HEADER:
        key = tuple(headers[:-1])
        tail = [(_REQUEST_ID_NAME, last[1].encode("latin-1"))]
    else:
        key, tail = tuple(headers), []
    encoded = _ENCODED.get(key)
    if encoded is None:
        encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in key]
        if len(_ENCODED) < _ENCODED_MAX:
            _ENCODED[key] = encoded
    return [*encoded, *tail]


async def _send(send: Send, answer: Answer) -> None:
    """Write ``answer`` as ASGI's two messages."""
    await send({"type": "http.response.start", "status": answer.status, "headers": asgi_headers(answer.headers)})
    await send({"type": "http.response.body", "body": answer.body})


_NOT_FOUND = b'{"error":"not_found"}'
_NOT_FOUND_ANSWER = Answer(
    404, [("Content-Type", "application/json;charset=UTF-8"), ("Content-Length", str(len(_NOT_FOUND)))], _NOT_FOUND
)


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
        await _send(send, _NOT_FOUND_ANSWER)


def from_env(app: ASGIApp | None = None, environ: Mapping[str, str] | None = None) -> BackchannelFailMiddleware:
    """Build the ASGI middleware around ``app`` (default :func:`not_found_app`) from ``CIBA_*``.

    It serves the health and metrics endpoints when they are configured, and reads
    ``CIBA_SERVICE_ID`` and ``CIBA_SERVER_ERROR_STATUS`` for the views, as every integration
    does. Raises :class:`ConfigurationError` naming the variable at fault.
    """
    settings = Settings.from_mapping(os.environ if environ is None else environ)
    return BackchannelFailMiddleware.around(app if app is not None else not_found_app, settings.build_api())


class _Application:
    """``ciba_middleware.asgi:application``: :func:`from_env`, built at the server's start-up.

    An object of the module, so every server finds it (hypercorn looks names up in the
    module's namespace); the environment is read when the server starts the app (the
    lifespan's startup) or, without a lifespan, at the first request, not at import. A bad
    configuration fails the server's first start with one line (uvicorn then exits with
    status 3); a worker started later (:func:`~ciba_middleware.grants.first_start`) serves
    instead, every other path as usual and the fail API a clean 500, the error in the log.
    Without a lifespan, every request of the fail API gets that 500.
    """

    def __init__(self) -> None:
        self._middleware: BackchannelFailMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            middleware = self._middleware or self._build()
        except ConfigurationError as exc:
            message = f"ciba-middleware: configuration error: {exc}"
        else:
            return await middleware(scope, receive, send)
        # Outside the except clause: the server's own error, if it raises one, is not chained to ours.
        if scope["type"] == "lifespan":
            if not first_start():
                log.error("%s; the fail API answers 500 in this process until it is fixed", message)
                return await not_found_app(scope, receive, send)
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.failed", "message": message})
            return None
        log.error("%s", message)
        if scope["type"] == "http":
            await _send(send, unconfigured())
        return None

    def _build(self) -> BackchannelFailMiddleware:
        self._middleware = from_env()
        return self._middleware


application = _Application()
