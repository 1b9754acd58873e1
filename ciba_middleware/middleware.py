"""The fail API as WSGI middleware: :class:`BackchannelFailMiddleware`."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import TYPE_CHECKING

from .auth import TokenVerifier
from .core import FailApi
from .events import Observer
from .reasons import Reason
from .response import FailResponse
from .stores.base import TicketStore

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["BackchannelFailMiddleware"]

_NO_BODY = io.BytesIO()


class BackchannelFailMiddleware:
    """Serve Authlete's ``/backchannel/authentication/fail`` API in front of a WSGI app.

    Owns two routes and passes every other request to ``app`` untouched::

        POST {prefix}/api/{serviceId}/backchannel/authentication/fail   (API v3, Bearer)
        POST {prefix}/api/backchannel/authentication/fail               (API v2, Basic)

    Usage with Flask::

        from ciba_middleware import BackchannelFailMiddleware, StaticTokenVerifier
        from ciba_middleware.stores import store_from_url

        app.wsgi_app = BackchannelFailMiddleware(
            app.wsgi_app,
            store=store_from_url("sqlite:///tickets.db"),
            verifier=StaticTokenVerifier([{"service": "715948317", "token_sha256": "..."}]),
        )

    The parameters after ``app`` are :class:`ciba_middleware.core.FailApi`'s, which does
    the work; this class only translates WSGI to it and back. ``fail()`` is the in-process
    call (:meth:`FailApi.fail`), for the wrapped app.

    :param app: the WSGI application that gets every other request.
    :param store: where tickets live (:func:`ciba_middleware.stores.store_from_url`).
    :param verifier: who may call (:class:`ciba_middleware.StaticTokenVerifier` or your own).
    :param prefix: a path in front of ``/api``, e.g. ``/authlete``.
    :param max_body_bytes: the largest body accepted (413 beyond).
    :param observers: callables given a :class:`ciba_middleware.events.FailEvent` after each
        call, for metrics and audit logs.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        store: TicketStore,
        verifier: TokenVerifier,
        prefix: str = "",
        max_body_bytes: int = 16384,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.app = app
        self.api = FailApi(
            store=store, verifier=verifier, prefix=prefix, max_body_bytes=max_body_bytes, observers=observers
        )

    @classmethod
    def around(cls, app: WSGIApplication, api: FailApi) -> BackchannelFailMiddleware:
        """The middleware serving an existing ``api`` in front of ``app``."""
        middleware = cls.__new__(cls)
        middleware.app, middleware.api = app, api
        return middleware

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        route = self.api.route(environ.get("PATH_INFO", ""))
        if route is None:
            return self.app(environ, start_response)
        get = environ.get
        answer = self.api.respond(
            route,
            get("REQUEST_METHOD", ""),
            get("HTTP_AUTHORIZATION", ""),
            get("CONTENT_TYPE", ""),
            get("CONTENT_LENGTH", ""),
            get("wsgi.input", _NO_BODY).read,
            terminated=bool(get("wsgi.input_terminated")),
            chunked=bool(get("HTTP_TRANSFER_ENCODING")),
            client_addr=get("REMOTE_ADDR"),
            request_id=get("HTTP_X_REQUEST_ID"),
            traceparent=get("HTTP_TRACEPARENT"),
        )
        start_response(answer.status_line, answer.headers)
        return [answer.body]

    def fail(
        self,
        service_id: str,
        ticket: str | None = None,
        reason: Reason | str | Enum | None = None,
        error_description: str | None = None,
        error_uri: str | None = None,
    ) -> FailResponse:
        """Fail a request in process, from the wrapped app: :meth:`FailApi.fail`."""
        return self.api.fail(service_id, ticket, reason, error_description, error_uri)

    # The API's settings, read through: one object holds them.

    @property
    def store(self) -> TicketStore:
        return self.api.store

    @property
    def verifier(self) -> TokenVerifier:
        return self.api.verifier

    @property
    def prefix(self) -> str:
        return self.api.prefix

    @property
    def max_body_bytes(self) -> int:
        return self.api.max_body_bytes

    @property
    def observers(self) -> tuple[Observer, ...]:
        return self.api.observers
