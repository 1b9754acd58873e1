"""The fail API as WSGI middleware: :class:`BackchannelFailMiddleware`.

A translation only (:mod:`ciba_middleware.adapter` holds the rules): the WSGI environ read
into the core's :class:`~ciba_middleware.core.Request`, the :class:`~ciba_middleware.core.Answer`
written back through ``start_response``.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Unpack

from .adapter import Adapter, BackchannelFail, Site
from .auth import TokenVerifier
from .core import FailApi, FailApiOptions, Request, Route
from .request import Body
from .response import STATUS_LINES
from .stores.base import TicketStore
from .tuples import new_tuple

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["BackchannelFailMiddleware", "WSGIMiddleware", "environ_request"]

_NO_BODY = io.BytesIO()


class BackchannelFailMiddleware(Adapter):
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

    ``app`` gets every other request. The other parameters (``store``, ``verifier``,
    ``prefix``, ``max_body_bytes``, ``observers``, ``public_url``) are
    :class:`ciba_middleware.core.FailApi`'s, which does the work; this class only translates
    WSGI to it and back. ``fail()`` is the in-process call (:meth:`FailApi.fail`), for the
    wrapped app, and a :class:`~ciba_middleware.BackchannelFail` that the app raises becomes
    its client's answer (:meth:`~ciba_middleware.adapter.Adapter.view_failed`). Built from
    settings (:meth:`ciba_middleware.Settings.build_middleware`), it also serves the health
    and metrics endpoints.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        store: TicketStore,
        verifier: TokenVerifier,
        **options: Unpack[FailApiOptions],
    ) -> None:
        self.app = app
        self._serve(Site(FailApi(store=store, verifier=verifier, **options)))

    @classmethod
    def around(cls, app: WSGIApplication, site: Site | FailApi) -> BackchannelFailMiddleware:
        """The middleware serving an existing ``site`` (or only a fail API) in front of ``app``."""
        middleware = cls.__new__(cls)
        middleware.app = app
        middleware._serve(site if isinstance(site, Site) else Site(site))
        return middleware

    def _serve(self, site: Site) -> None:
        super()._serve(site)
        #: Fail a request in process, from the wrapped app: :meth:`FailApi.fail`.
        self.fail = site.api.fail

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        route = self.api.route(path)
        if route is not None:
            answer = self.api.respond(environ_request(environ, route, path))
        elif self.endpoints and path in self.endpoints:
            get = environ.get
            answer = self.endpoints[path].answer(
                get("REQUEST_METHOD", ""), get("HTTP_AUTHORIZATION", ""), get("HTTP_ACCEPT", "")
            )
        else:
            try:
                return self.app(environ, start_response)
            except BackchannelFail as exc:
                # A view of a plain WSGI app rejected the request: its client's answer.
                answer = self.view_failed(exc)
                start_response(STATUS_LINES[answer.status], answer.headers, sys.exc_info())
                return [answer.body]
        start_response(STATUS_LINES[answer.status], answer.headers)
        return [answer.body]


def environ_request(environ: WSGIEnvironment, route: Route, path: str) -> Request:
    """The core's :class:`~ciba_middleware.core.Request` of a WSGI environ (``path``: its ``PATH_INFO``)."""
    get = environ.get
    host = get("HTTP_HOST", "")
    return new_tuple(
        Request,
        (
            route,
            get("REQUEST_METHOD", ""),
            get("HTTP_AUTHORIZATION", ""),
            new_tuple(
                Body,
                (
                    get("CONTENT_TYPE", ""),
                    get("CONTENT_LENGTH", ""),
                    get("wsgi.input", _NO_BODY).read,
                    bool(get("wsgi.input_terminated")),
                    bool(get("HTTP_TRANSFER_ENCODING")),
                ),
            ),
            get("REMOTE_ADDR"),
            get("HTTP_REQUEST_ID"),
            get("HTTP_X_REQUEST_ID"),
            get("HTTP_DPOP", ""),
            get("HTTP_TRACEPARENT"),
            get("wsgi.url_scheme", "http"),
            host,
            None if host else (get("SERVER_NAME", ""), get("SERVER_PORT", "")),
            get("SCRIPT_NAME", ""),
            path,
        ),
    )


#: The WSGI adapter by what it is, beside :class:`ciba_middleware.asgi.ASGIMiddleware`.
WSGIMiddleware = BackchannelFailMiddleware
