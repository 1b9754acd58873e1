"""The fail API as WSGI middleware: :class:`BackchannelFailMiddleware`."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Unpack

from .auth import TokenVerifier
from .core import Adapter, FailApi, FailApiOptions, pick_request_id
from .dpop import request_url
from .request import Body
from .response import STATUS_LINES
from .stores.base import TicketStore

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["BackchannelFailMiddleware"]

_NO_BODY = io.BytesIO()
# tuple.__new__ directly: a named tuple's own __new__ is a Python function, one more call.
_new_body = tuple.__new__


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
    ``prefix``, ``max_body_bytes``, ``observers``) are :class:`ciba_middleware.core.FailApi`'s,
    which does the work; this class only translates WSGI to it and back. ``fail()`` is the
    in-process call (:meth:`FailApi.fail`), for the wrapped app.
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
        self.api = FailApi(store=store, verifier=verifier, **options)
        #: Fail a request in process, from the wrapped app: :meth:`FailApi.fail`.
        self.fail = self.api.fail

    @classmethod
    def around(cls, app: WSGIApplication, api: FailApi) -> BackchannelFailMiddleware:
        """The middleware serving an existing ``api`` in front of ``app``."""
        middleware = cls.__new__(cls)
        middleware.app, middleware.api, middleware.fail = app, api, api.fail
        return middleware

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        route = self.api.route(environ.get("PATH_INFO", ""))
        if route is None:
            return self.app(environ, start_response)
        get = environ.get
        dpop = get("HTTP_DPOP", "")
        # One header is checked by respond; two are picked from first.
        request_id = get("HTTP_REQUEST_ID")
        x_request_id = get("HTTP_X_REQUEST_ID")
        if x_request_id is not None:
            request_id = pick_request_id(request_id, x_request_id)
        answer = self.api.respond(
            route,
            get("REQUEST_METHOD", ""),
            get("HTTP_AUTHORIZATION", ""),
            _new_body(
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
            request_id,
            dpop,
            _url(environ) if dpop else "",
            get("HTTP_TRACEPARENT"),
        )
        start_response(STATUS_LINES[answer.status], answer.headers)
        return [answer.body]


def _url(environ: WSGIEnvironment) -> str:
    """The URL the request was sent to, without query: a DPoP proof's ``htu`` (PEP 3333's recipe).

    Behind a proxy, the WSGI server must be told the public scheme and host (gunicorn's
    ``forwarded_allow_ips``, or werkzeug's ``ProxyFix`` in front of this middleware).
    """
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "")
        port = environ.get("SERVER_PORT", "")
        if port and port != {"https": "443", "http": "80"}.get(scheme):
            host = f"{host}:{port}"
    return request_url(scheme, host, environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
