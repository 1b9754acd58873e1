"""The fail API as WSGI middleware: :class:`BackchannelFailMiddleware`."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Literal

from .auth import Principal, TokenVerifier
from .errors import (
    ApiError,
    ConfigurationError,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    StoreError,
    StoreFailed,
    Unauthorized,
)
from .events import FailEvent, Observer
from .reasons import Action, Reason
from .request import FailParams, check_fields, read_params
from .response import HEADERS, SUCCESS_CODE, FailResponse, error_body, status_line, success_json
from .stores.base import TicketStore, ticket_hash, well_formed

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["BackchannelFailMiddleware"]

log = logging.getLogger(__name__)

_SUFFIX = "/backchannel/authentication/fail"
_REALM = "ciba-middleware"
_BEARER = f'Bearer realm="{_REALM}"'
_BASIC = f'Basic realm="{_REALM}", charset="UTF-8"'
# RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_STATUS_200 = status_line(200)
_ROUTES_CACHED = 256
_ROUTE_CACHED_LENGTH = 256

Route = tuple[Literal["v3", "v2"], str | None]


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

    :param app: the WSGI application that gets every other request.
    :param store: where tickets live (:func:`ciba_middleware.stores.store_from_url`).
    :param verifier: who may call (:class:`ciba_middleware.StaticTokenVerifier` or your own).
    :param prefix: a path in front of ``/api``, e.g. ``/authlete``, so the routes can live
        beside an app that already uses ``/api``. Empty by default, as in Authlete.
    :param max_body_bytes: the largest body accepted (413 beyond). A real call is well under
        1 KiB; the limit keeps a misbehaving caller from making the server buffer megabytes.
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
        if prefix and (not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix):
            raise ConfigurationError(f"prefix must be empty or start with '/' and not end with one, not {prefix!r}")
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise ConfigurationError(f"max_body_bytes must be a positive integer, not {max_body_bytes!r}")
        if not isinstance(store, TicketStore):
            raise ConfigurationError(f"store must be a TicketStore, not {type(store).__name__}")
        if not isinstance(verifier, TokenVerifier):
            raise ConfigurationError(f"verifier must be a TokenVerifier, not {type(verifier).__name__}")
        self.app = app
        self.store = store
        self.verifier = verifier
        self.prefix = prefix
        self.max_body_bytes = max_body_bytes
        self.observers = tuple(observers)
        self._v2_head = f"{prefix}/api"
        self._v3_head = f"{prefix}/api/"
        # The answer for each reason without description or URI, encoded once.
        self._plain: dict[Reason, tuple[tuple[tuple[str, str], ...], bytes]] = {
            reason: _with_length(success_json(reason)) for reason in Reason
        }
        # PATH_INFO -> route, for paths already matched: a caller uses one or a few.
        self._routes: dict[str, Route] = {}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if not path.endswith(_SUFFIX):
            return self.app(environ, start_response)
        route = self._routes.get(path)
        if route is None:
            route = self._match(path)
            if route is None:
                return self.app(environ, start_response)
            # Bounded, so that a caller inventing service IDs cannot grow it without end.
            if len(self._routes) < _ROUTES_CACHED and len(path) <= _ROUTE_CACHED_LENGTH:
                self._routes[path] = route
        return self._serve(environ, start_response, route)

    def _match(self, path: str) -> Route | None:
        head = path[: -len(_SUFFIX)]
        if head == self._v2_head:
            return ("v2", None)
        if head.startswith(self._v3_head):
            service = head[len(self._v3_head) :]
            if service and "/" not in service:
                # PATH_INFO carries the raw bytes as latin-1 (PEP 3333); IDs are UTF-8.
                return ("v3", service.encode("latin-1", "replace").decode("utf-8", "replace"))
        return None

    # -- HTTP -------------------------------------------------------------------------

    def _serve(self, environ: WSGIEnvironment, start_response: StartResponse, route: Route) -> Iterable[bytes]:
        started = time.perf_counter() if self.observers else 0.0
        principal: Principal | None = None
        service: str | None = route[1]
        params: FailParams | None = None
        deleted: bool | None = None
        try:
            if environ.get("REQUEST_METHOD") != "POST":
                raise MethodNotAllowed(f"use POST, not {_ascii(environ.get('REQUEST_METHOD', ''))}.")
            principal, service = self._authenticate(environ, route)
            if not principal.covers(service):
                raise Forbidden(f"the credentials do not cover the service {_ascii(service)}.")
            params = read_params(environ, self.max_body_bytes)
            deleted = self._delete(service, params.ticket)
        except ApiError as exc:
            error = exc
        except Exception:
            # The one place an unexpected exception becomes an answer; the traceback holds
            # no secret (tokens are never kept in locals of a frame that can fail).
            log.exception("unexpected error in the fail API")
            error = InternalError("an unexpected error occurred; see the server log.")
        else:
            if params.error_description is None and params.error_uri is None:
                fixed, body = self._plain[params.reason]
                # A list of its own each time: whoever gets it may append to it.
                headers = list(fixed)
            else:
                body = success_json(params.reason, params.error_description, params.error_uri)
                headers = [*HEADERS, ("Content-Length", str(len(body)))]
            start_response(_STATUS_200, headers)
            if self.observers:
                self._notify_http(environ, route, service, principal, params, deleted, None, started)
            return [body]

        body = error_body(error)
        headers = [*HEADERS, *error.headers, ("Content-Length", str(len(body)))]
        start_response(status_line(error.status), headers)
        if self.observers:
            self._notify_http(environ, route, service, principal, params, deleted, error, started)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return [body]

    def _authenticate(self, environ: WSGIEnvironment, route: Route) -> tuple[Principal, str]:
        """The caller and the service it asks for; whether it covers that is checked by the
        caller, so a 403's event still names who tried."""
        header: str = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, credentials = header.partition(" ")
        credentials = credentials.strip(" ")
        if route[1] is not None:
            service = route[1]
            if not header:
                raise Unauthorized("Authorization header is missing.", _BEARER, "missing")
            if scheme != "Bearer" and scheme.lower() != "bearer":
                raise Unauthorized("the Authorization header must use the Bearer scheme.", _BEARER, "scheme")
            if not _B64TOKEN.fullmatch(credentials):
                raise Unauthorized("the access token is malformed.", _bearer_error("malformed"), "malformed")
            principal = self.verifier.verify_bearer(credentials)
            if principal is None:
                raise Unauthorized("the access token is not valid.", _bearer_error("not valid"), "invalid")
        else:
            if not header:
                raise Unauthorized("Authorization header is missing.", _BASIC, "missing")
            if scheme.lower() != "basic":
                raise Unauthorized("the Authorization header must use the Basic scheme.", _BASIC, "scheme")
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                decoded = ""
            api_key, colon, api_secret = decoded.partition(":")
            if not colon or not api_key:
                raise Unauthorized("the Basic credentials are malformed.", _BASIC, "malformed")
            service = api_key
            principal = self.verifier.verify_api_key(api_key, api_secret)
            if principal is None:
                raise Unauthorized("the API key and secret are not valid.", _BASIC, "invalid")
        return principal, service

    def _delete(self, service_id: str, ticket: str | None) -> bool | None:
        if not ticket:
            return None
        if not well_formed(ticket):
            return False
        try:
            return self.store.delete(service_id, ticket)
        except StoreError as exc:
            log.error("ticket store failed deleting ticket %s of service %s: %s", ticket_hash(ticket), service_id, exc)
            raise StoreFailed("the ticket store failed; the ticket may not have been deleted.") from exc

    # -- in process -------------------------------------------------------------------

    def fail(
        self,
        service_id: str,
        ticket: str | None = None,
        reason: Reason | str | Enum | None = None,
        error_description: str | None = None,
        error_uri: str | None = None,
    ) -> FailResponse:
        """Fail a backchannel authentication request without HTTP, from the wrapped app.

        Same checks and same answer as the HTTP API, minus authentication (the caller is
        this process). ``reason`` may be a :class:`Reason`, its name, or an Authlete DTO
        enum. A bad argument raises :class:`ciba_middleware.errors.InvalidParameter`
        (a ``ValueError``); a failing store gives a response with action
        ``INTERNAL_SERVER_ERROR`` and result code ``A185101``, so the client still gets
        ``server_error``.

        >>> response = middleware.fail("715948317", ticket, Reason.ACCESS_DENIED)  # doctest: +SKIP
        >>> response.action                                                         # doctest: +SKIP
        <Action.FORBIDDEN: 'FORBIDDEN'>
        """
        started = time.perf_counter()
        if isinstance(reason, Enum) and not isinstance(reason, str):
            reason = reason.name
        params = check_fields(
            {"ticket": ticket, "reason": reason, "errorDescription": error_description, "errorUri": error_uri}
        )
        deleted: bool | None = None
        try:
            deleted = self._delete(service_id, params.ticket)
        except StoreFailed as exc:
            response = FailResponse.from_error(exc)
            status = exc.status
        else:
            response = FailResponse.success(params.reason, params.error_description, params.error_uri)
            status = 200
        if self.observers:
            self._notify(
                FailEvent(
                    via="in_process",
                    route=None,
                    service_id=service_id,
                    principal=None,
                    status=status,
                    result_code=response.result_code,
                    reason=params.reason,
                    action=response.action,
                    ticket_hash=ticket_hash(params.ticket) if params.ticket else None,
                    deleted=deleted,
                    store_error=status != 200,
                    duration=time.perf_counter() - started,
                )
            )
        return response

    # -- observers --------------------------------------------------------------------

    def _notify_http(
        self,
        environ: WSGIEnvironment,
        route: Route,
        service: str | None,
        principal: Principal | None,
        params: FailParams | None,
        deleted: bool | None,
        error: ApiError | None,
        started: float,
    ) -> None:
        action: Action | None
        if error is None:
            assert params is not None
            status, result_code, action = 200, SUCCESS_CODE, params.reason.action
        else:
            status, result_code = error.status, error.result_code
            action = Action.INTERNAL_SERVER_ERROR if error.with_action else None
        request_id = environ.get("HTTP_X_REQUEST_ID", "")
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        self._notify(
            FailEvent(
                via="http",
                route=route[0],
                service_id=service,
                principal=principal,
                status=status,
                result_code=result_code,
                reason=params.reason if params else None,
                action=action,
                ticket_hash=ticket_hash(params.ticket) if params and params.ticket else None,
                deleted=deleted,
                auth_failure=error.auth_failure if error else None,
                store_error=isinstance(error, StoreFailed),
                client_addr=environ.get("REMOTE_ADDR"),
                request_id=request_id,
                duration=time.perf_counter() - started,
            )
        )

    def _notify(self, event: FailEvent) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception:
                log.exception("fail API observer %r raised; ignored", observer)


def _with_length(body: bytes) -> tuple[tuple[tuple[str, str], ...], bytes]:
    return (*HEADERS, ("Content-Length", str(len(body)))), body


def _bearer_error(what: str) -> str:
    return f'{_BEARER}, error="invalid_token", error_description="The access token is {what}"'


def _ascii(value: str, limit: int = 64) -> str:
    """A caller-controlled value made safe for a message: short, quoted, ASCII-escaped."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return ascii(shown)
