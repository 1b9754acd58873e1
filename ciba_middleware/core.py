"""The fail API without a transport: :class:`FailApi`.

An adapter (WSGI, ASGI, Django; :mod:`ciba_middleware.adapter` is their base) reads what an
HTTP request to the API carries into one :class:`Request` value, hands it to
:meth:`FailApi.respond`, and writes back the :class:`Answer` it gets. The order of the
checks, and what each failure answers, live here and nowhere else::

    route -> method -> authenticate -> coverage -> read the body -> validate -> store -> render

Nothing of the body is read before the caller is authenticated: :meth:`FailApi.respond` is
:meth:`FailApi.admit` (up to coverage) and then :meth:`FailApi.complete` (from the body on),
and an adapter whose body arrives asynchronously (ASGI) calls the two itself, reading the
body in between. The rules every adapter shares live here too: which request ID a call
carries (:func:`pick_request_id`) and which URL a request was sent to (:func:`request_url`).

:meth:`FailApi.fail` is the same call made in process by the wrapped app, without HTTP
and without authentication.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict
from urllib.parse import urlsplit

from .auth import Principal, TokenVerifier, authenticate
from .ciba.answers import (
    ENDPOINTS,
    SUFFIXES,
    ApiAction,
    Endpoint,
    FamilyError,
    Reply,
    StoreDown,
    encode_answer,
    error_content,
)
from .dpop import quoted_path
from .errors import (
    API_PATH,
    ApiError,
    ConfigurationError,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    StoreError,
    StoreFailed,
)
from .events import FailEvent, Observer, by_position, notify
from .reasons import Action, Reason
from .request import Body, FailParams, check_fields, read_fields, read_params
from .response import HEADERS, PLAIN_ANSWERS, STATUS_LINES, SUCCESS_CODE, FailResponse, error_body, success_json
from .stores.base import AsyncTicketStore, ReplayCache, TicketStore, ticket_hash, well_formed
from .tuples import new_tuple

if TYPE_CHECKING:
    from .ciba.family import Family

__all__ = [
    "API_PATH",
    "REQUEST_ID_HEADER",
    "ROUTED_SUFFIXES",
    "Admitted",
    "Answer",
    "FailApi",
    "FailApiOptions",
    "Request",
    "Route",
    "check_public_url",
    "new_answer",
    "new_request_id",
    "pick_request_id",
    "request_url",
]

log = logging.getLogger(__name__)


class Route(NamedTuple):
    """What a path names: ``Route("v3", service ID)`` for ``{prefix}/api/{serviceId}/...``,
    ``Route("v2", None)`` for ``{prefix}/api/...``, and which endpoint below it (``"fail"``
    for ``/backchannel/authentication/fail``; the CIBA family's routes name theirs)."""

    version: Literal["v3", "v2"]
    service: str | None
    endpoint: str = "fail"


#: The endings of every path the API may serve: an adapter that looks at the path before
#: :meth:`FailApi.route` passes on the others with one ``str.endswith``.
ROUTED_SUFFIXES = (API_PATH, *SUFFIXES)

#: The response header naming the call, as Authlete's responses do (authlete-java-common
#: 4.23 exposes response headers for it).
REQUEST_ID_HEADER = "Request-Id"
_well_formed_id = re.compile(r"[A-Za-z0-9._:\-]{1,128}").fullmatch
_random_bits = random.getrandbits
_ROUTES_CACHED = 256
_ROUTE_CACHED_LENGTH = 256


class Answer(NamedTuple):
    """What to send back: ``status``, ``headers`` (a list of the caller's own), ``body``.

    ``event`` is what was handed to the observers, or None when there are none.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    event: FailEvent | None = None

    @property
    def status_line(self) -> str:
        """``200 OK``: the status as WSGI's ``start_response`` takes it."""
        return STATUS_LINES[self.status]


def new_answer(status: int, headers: list[tuple[str, str]], body: bytes, event: FailEvent | None = None) -> Answer:
    """``Answer(status, headers, body, event)``, without the named tuple's own ``__new__``."""
    return new_tuple(Answer, (status, headers, body, event))


class Request(NamedTuple):
    """One HTTP request to the API, as an adapter reads it from its server.

    Strings are as the server gives them: headers decoded as latin-1, "" (or None) when
    absent; ``root`` and ``path`` are the raw path's bytes decoded as latin-1, as WSGI's
    ``SCRIPT_NAME`` and ``PATH_INFO`` have them (PEP 3333), whatever the transport.
    """

    #: What :meth:`FailApi.route` found for ``path``.
    route: Route
    method: str
    #: The ``Authorization`` header.
    authorization: str
    #: The body, read only after the caller is authenticated.
    body: Body
    #: The client's address, for the audit log.
    client_addr: str | None = None
    #: The caller's ``Request-Id`` and ``X-Request-Id`` headers (:func:`pick_request_id`).
    request_id: str | None = None
    x_request_id: str | None = None
    #: The ``DPoP`` header.
    dpop: str = ""
    #: The ``traceparent`` header (W3C Trace Context).
    traceparent: str | None = None
    #: The URL's scheme, the ``Host`` header, and, for a request without ``Host`` only, the
    #: address the server listens on as ``(name, port)`` (:func:`request_url`).
    scheme: str = "http"
    host: str = ""
    server: tuple[str, str | int] | None = None
    #: The path the app is mounted at (``SCRIPT_NAME``, ASGI's ``root_path``) and the path below it.
    root: str = ""
    path: str = ""


#: What :meth:`FailApi.admit` found, for :meth:`FailApi.complete`: ``(request, request ID,
#: start, principal, service, error)``, the last the refusal when there is one
#: (``admitted[-1]``). A plain tuple: a named tuple's allocation and release cost about
#: 2,000 instructions more, on every call (callgrind).
Admitted = tuple[Request, str, float, Principal | None, str | None, ApiError | None]


def request_url(request: Request, public_url: str = "") -> str:
    """The URL ``request`` was sent to, without query: what a DPoP proof's ``htu`` must name.

    The one rule of every adapter: ``public_url`` (``CIBA_PUBLIC_URL``, the server's public
    base URL, :func:`check_public_url`) when set, else the request's scheme and ``Host``
    (without ``Host``, the server's name and its port unless it is the scheme's default), then
    the mount and the path, percent-encoded again from their raw bytes.
    """
    path = quoted_path(request.root + request.path)
    if public_url:
        return public_url + path
    host = request.host
    if not host and request.server is not None:
        name, port = request.server
        port = str(port)
        host = name if not port or port == _DEFAULT_PORTS.get(request.scheme) else f"{name}:{port}"
    return f"{request.scheme}://{host}{path}"


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def check_public_url(url: str, name: str = "public_url") -> str:
    """``url`` if it can be a server's public base URL: ``http(s)://host[:port][/path]``,
    without query, fragment, user or trailing ``/``; else :class:`ConfigurationError`."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or url.endswith("/")
        or "?" in url
        or "#" in url
    ):
        raise ConfigurationError(f"{name} must look like https://as.example.com[:port][/path], not {url!r}")
    return url


class FailApiOptions(TypedDict, total=False):
    """:class:`FailApi`'s optional settings, for an adapter that takes them through (``**options``)."""

    prefix: str
    max_body_bytes: int
    observers: Sequence[Observer]
    public_url: str
    family: Family | None


class FailApi:
    """Authlete's ``/backchannel/authentication/fail`` API, as a function of a request.

    :param store: where tickets live (:func:`ciba_middleware.stores.store_from_url`).
    :param verifier: who may call (:class:`ciba_middleware.StaticTokenVerifier` or your own).
    :param prefix: a path in front of ``/api``, e.g. ``/authlete``; empty by default, as in
        Authlete.
    :param max_body_bytes: the largest body accepted (413 beyond).
    :param observers: callables given a :class:`~ciba_middleware.events.FailEvent` after
        each call, for metrics and audit logs.
    :param public_url: the server's public base URL (``https://as.example.com``), which DPoP
        proofs name in ``htu``; empty: the URL each request says it was sent to
        (:func:`request_url`).
    :param family: the rest of Authlete's CIBA API family
        (:class:`~ciba_middleware.ciba.family.Family`), served beside the fail API after the
        same checks of the caller; None (the default): only the fail API.
    """

    def __init__(
        self,
        *,
        store: TicketStore,
        verifier: TokenVerifier,
        prefix: str = "",
        max_body_bytes: int = 16384,
        observers: Sequence[Observer] = (),
        public_url: str = "",
        family: Family | None = None,
    ) -> None:
        if public_url:
            check_public_url(public_url)
        if prefix and (not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix):
            raise ConfigurationError(f"prefix must be empty or start with '/' and not end with one, not {prefix!r}")
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise ConfigurationError(f"max_body_bytes must be a positive integer, not {max_body_bytes!r}")
        if not isinstance(store, TicketStore):
            raise ConfigurationError(f"store must be a TicketStore, not {type(store).__name__}")
        if not isinstance(verifier, TokenVerifier):
            raise ConfigurationError(f"verifier must be a TokenVerifier, not {type(verifier).__name__}")
        # DPoP proofs' jti are remembered in the store, shared by every worker and host.
        self.replay: ReplayCache | None = store if isinstance(store, ReplayCache) else None
        if self.replay is None and getattr(verifier, "dpop_bound", False):
            raise ConfigurationError(
                f"grants bind tokens to DPoP keys (dpop_jkt), but the store {type(store).__name__} cannot remember "
                "DPoP proofs (it has no claim()); use a memory, sqlite, redis or postgresql store"
            )
        self.store = store
        self.verifier = verifier
        self.prefix = prefix
        self.max_body_bytes = max_body_bytes
        self.observers = tuple(observers)
        self.public_url = public_url
        self.family = family
        self._v2_head = f"{prefix}/api"
        self._v3_head = f"{prefix}/api/"
        # path -> route, for paths already matched: a caller uses one or a few.
        self._routes: dict[str, Route] = {}

    # -- matching ---------------------------------------------------------------------

    def route(self, path: str) -> Route | None:
        """The route ``path`` names, or None when the request is not for the fail API.

        ``path`` is the request's path as WSGI's ``PATH_INFO`` has it: the raw bytes
        decoded as latin-1 (PEP 3333). Anything that does not end with the API's path
        costs one string comparison (two when the CIBA family is served: one ``endswith``
        of its routes' endings).
        """
        if not path.endswith(API_PATH) and (self.family is None or not path.endswith(SUFFIXES)):
            return None
        route = self._routes.get(path)
        if route is None:
            route = self._match(path)
            # Bounded, so that a caller inventing service IDs cannot grow it without end.
            if route is not None and len(self._routes) < _ROUTES_CACHED and len(path) <= _ROUTE_CACHED_LENGTH:
                self._routes[path] = route
        return route

    def _match(self, path: str) -> Route | None:
        if path.endswith(API_PATH):
            return self._head(path[: -len(API_PATH)], "fail")
        for endpoint in ENDPOINTS.values():
            if path.endswith(endpoint.suffix):
                return self._head(path[: -len(endpoint.suffix)], endpoint.name)
        return None

    def _head(self, head: str, endpoint: str) -> Route | None:
        """The route of ``endpoint`` under ``head``, the path before the route's own, or None."""
        if head == self._v2_head:
            return Route("v2", None, endpoint)
        if head.startswith(self._v3_head):
            service = head[len(self._v3_head) :]
            if service and "/" not in service:
                # Service IDs are UTF-8 on the wire.
                return Route("v3", service.encode("latin-1", "replace").decode("utf-8", "replace"), endpoint)
        return None

    # -- over HTTP --------------------------------------------------------------------

    def respond(self, request: Request) -> Answer:
        """Answer one HTTP request to the API (its ``route`` from :meth:`route`).

        Every answer carries a ``Request-Id`` (:func:`pick_request_id`), and so do the event
        and the log lines of the call. Never raises: this is the one place where an
        unexpected exception becomes an answer. The body is read only once the caller is
        authenticated (:meth:`admit`, then :meth:`complete`).
        """
        return self.complete(self.admit(request), request.body)

    def admit(self, request: Request) -> Admitted:
        """The checks before the body: method, credentials (DPoP proofs included), coverage.

        Nothing of ``request.body`` is read. What :meth:`complete` goes on from
        (:data:`Admitted`): when its last item, the error, is set, the call is refused and
        :meth:`complete` reads no body.
        """
        started = time.perf_counter() if self.observers else 0.0
        # One unpacking: a named tuple's attributes are a descriptor call each.
        route, method, authorization, _, _, request_id, x_request_id, dpop, _, _, _, _, _, _ = request
        if x_request_id is not None:
            request_id = pick_request_id(request_id, x_request_id)
        elif request_id is None or not _well_formed_id(request_id):
            request_id = new_request_id()
        principal: Principal | None = None
        service: str | None = route.service
        error: ApiError | None = None
        try:
            endpoint = route.endpoint
            if method != "POST" if endpoint == "fail" else method not in ENDPOINTS[endpoint].methods:
                raise _method_not_allowed(endpoint, method)
            principal, service = authenticate(
                self.verifier,
                authorization,
                service,
                dpop=dpop,
                method=method,
                url=request_url(request, self.public_url) if dpop else "",
                replay=self.replay,
            )
            if service not in principal.services:  # Principal.covers, without the call
                raise Forbidden(f"the credentials do not cover the service {_ascii(service)}.")
        except ApiError as exc:
            error = exc
        except Exception:
            log.exception("unexpected error in %s (request %s)", _api_name(route.endpoint), request_id)
            error = InternalError("an unexpected error occurred; see the server log.")
        return (request, request_id, started, principal, service, error)

    def complete(self, admitted: Admitted, body: Body) -> Answer:
        """The rest of a call after :meth:`admit`: read ``body``, check it, delete the
        ticket, answer (or only answer the refusal ``admit`` found, reading nothing)."""
        request, request_id, _, _, service, error = admitted
        if request.route.endpoint != "fail":
            return self._complete_family(admitted, body)
        params, error = self._read_fail(body, request_id, error)
        deleted: bool | None = None
        store_duration: float | None = None
        if params is not None:
            store_started = time.perf_counter() if self.observers and params.ticket else None
            try:
                deleted = self._delete(service, params.ticket, request_id)  # type: ignore[arg-type]
            except ApiError as exc:
                error = exc
            except Exception as exc:
                error = _unexpected(request_id, exc)
            store_duration = _since(store_started)  # the store failed: the time until it did
        return self._fail_answer(admitted, params, deleted, error, store_duration)

    async def complete_async(self, admitted: Admitted, body: Body, store: AsyncTicketStore) -> Answer:
        """:meth:`complete` for the fail route on an event loop: the same checks and answer,
        the ticket deleted by ``store``'s ``delete_async`` (the API's own store seen through
        its async path, :class:`~ciba_middleware.stores.base.AsyncTicketStore`), awaited.

        The family's routes are not served here: the caller runs :meth:`complete` for them.
        """
        _, request_id, _, _, service, error = admitted
        params, error = self._read_fail(body, request_id, error)
        deleted: bool | None = None
        store_duration: float | None = None
        if params is not None:
            store_started = time.perf_counter() if self.observers and params.ticket else None
            try:
                deleted = await self._delete_async(store, service, params.ticket, request_id)  # type: ignore[arg-type]
            except ApiError as exc:
                error = exc
            except Exception as exc:
                error = _unexpected(request_id, exc)
            store_duration = _since(store_started)
        return self._fail_answer(admitted, params, deleted, error, store_duration)

    def _read_fail(
        self, body: Body, request_id: str, error: ApiError | None
    ) -> tuple[FailParams | None, ApiError | None]:
        """The fail call's checked parameters, or the error: ``admit``'s refusal (nothing is
        read then), the body's, or an unexpected one."""
        if error is not None:
            return None, error
        try:
            return read_params(body, self.max_body_bytes), None
        except ApiError as exc:
            return None, exc
        except Exception as exc:
            return None, _unexpected(request_id, exc)

    def _fail_answer(
        self,
        admitted: Admitted,
        params: FailParams | None,
        deleted: bool | None,
        error: ApiError | None,
        store_duration: float | None,
    ) -> Answer:
        """The fail route's answer (and event) once its ticket is dealt with."""
        request, request_id, started, principal, service, _ = admitted
        if error is None:
            assert params is not None
            status = 200
            if params.error_description is None and params.error_uri is None:
                fixed, answer = PLAIN_ANSWERS[params.reason]
                # A list of its own each time: whoever gets it may append to it.
                headers = [*fixed, (REQUEST_ID_HEADER, request_id)]
            else:
                answer = success_json(params.reason, params.error_description, params.error_uri)
                headers = [*HEADERS, ("Content-Length", str(len(answer))), (REQUEST_ID_HEADER, request_id)]
        else:
            status = error.status
            answer = error_body(error)
            headers = [*HEADERS, *error.headers, ("Content-Length", str(len(answer))), (REQUEST_ID_HEADER, request_id)]
            if request.method == "HEAD":
                answer = b""
        event = None
        if self.observers:
            event = self._event(
                request.route.version,
                service,
                principal,
                params,
                deleted,
                error,
                started,
                request.client_addr,
                request_id,
                store_duration,
                request.method,
                request.traceparent,
            )
        return new_tuple(Answer, (status, headers, answer, event))

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
        """
        started = time.perf_counter()
        if isinstance(reason, Enum) and not isinstance(reason, str):
            reason = reason.name
        params = check_fields(
            {"ticket": ticket, "reason": reason, "errorDescription": error_description, "errorUri": error_uri}
        )
        error: StoreFailed | None = None
        deleted: bool | None = None
        store_started = time.perf_counter() if self.observers and params.ticket else None
        try:
            deleted = self._delete(service_id, params.ticket)
        except StoreFailed as exc:
            error = exc
            store_duration = _since(store_started)
            response = FailResponse.from_error(exc)
        else:
            store_duration = _since(store_started)
            response = FailResponse.success(params.reason, params.error_description, params.error_uri)
        if self.observers:
            self._event(None, service_id, None, params, deleted, error, started, None, None, store_duration)
        return response

    # -- shared -----------------------------------------------------------------------

    def _delete(self, service_id: str, ticket: str | None, request_id: str | None = None) -> bool | None:
        if not ticket:
            return None
        if not well_formed(ticket):
            return False
        try:
            return self.store.delete(service_id, ticket)
        except StoreError as exc:
            raise _store_failed(exc, service_id, ticket, request_id) from exc

    async def _delete_async(
        self, store: AsyncTicketStore, service_id: str, ticket: str | None, request_id: str | None
    ) -> bool | None:
        """:meth:`_delete`, awaited on ``store``'s async path."""
        if not ticket:
            return None
        if not well_formed(ticket):
            return False
        try:
            return await store.delete_async(service_id, ticket)
        except StoreError as exc:
            raise _store_failed(exc, service_id, ticket, request_id) from exc

    def _event(
        self,
        route: Literal["v3", "v2"] | None,
        service: str | None,
        principal: Principal | None,
        params: FailParams | None,
        deleted: bool | None,
        error: ApiError | None,
        started: float,
        client_addr: str | None,
        request_id: str | None,
        store_duration: float | None,
        method: str | None = None,
        traceparent: str | None = None,
    ) -> FailEvent:
        """Build the call's event (``route`` None: in process), hand it to the observers,
        and return it as the last of them left it."""
        action: Action | None
        if error is None:
            assert params is not None
            # Reason.action from a table: the property is a Python call, 2,500 instructions.
            status, result_code, action = 200, SUCCESS_CODE, _ACTIONS[params.reason]
        else:
            status, result_code = error.status, error.result_code
            action = Action.INTERNAL_SERVER_ERROR if error.with_action else None
        # By position, in the order of _EVENT_FIELDS (checked against FailEvent's at import).
        event: FailEvent = new_tuple(
            FailEvent,
            (
                "in_process" if route is None else "http",
                route,
                service,
                principal,
                status,
                result_code,
                params.reason if params else None,
                action,
                ticket_hash(params.ticket) if params and params.ticket else None,
                deleted,
                error.auth_failure if error else None,
                isinstance(error, StoreFailed),
                client_addr,
                request_id,
                time.perf_counter() - started,
                store_duration,
                method,
                traceparent,
                None,
                None,
                None,
            ),
        )
        return notify(self.observers, event)

    # -- the CIBA family --------------------------------------------------------------

    def _complete_family(self, admitted: Admitted, body: Body) -> Answer:
        """:meth:`complete` for a route of the family: read the body (POST routes), then
        the family's handler; every failure is answered here."""
        request, request_id, started, principal, service, error = admitted
        endpoint = ENDPOINTS[request.route.endpoint]
        reply: Reply | None = None
        if error is None:
            try:
                if self.family is None:  # routed only when served; a family removed since
                    raise InternalError("the CIBA family is not configured.")
                fields = read_fields(body, self.max_body_bytes) if endpoint.methods == ("POST",) else {}
                reply = self._family_reply(endpoint, service, fields, request_id)  # type: ignore[arg-type]
            except ApiError as exc:
                error = exc
            except Exception:
                log.exception("unexpected error in %s (request %s)", endpoint.suffix, request_id)
                error = InternalError("an unexpected error occurred; see the server log.")
        wire = reply.wire if reply is not None and request.method != "HEAD" else None
        if wire is not None:  # encoded once (a remembered refusal: every pending poll's)
            assert reply is not None
            status, payload = 200, reply.body
            fixed, answer = wire
            headers = [*fixed, (REQUEST_ID_HEADER, request_id)]
        else:
            status, payload = family_answer(endpoint, reply, error)
            answer = b"" if request.method == "HEAD" else encode_answer(payload)
            headers = [*HEADERS, *(error.headers if error else ()), ("Content-Length", str(len(answer)))]
            headers.append((REQUEST_ID_HEADER, request_id))
        event = None
        if self.observers:
            event = self._family_event(
                endpoint,
                request.route.version,
                service,
                principal,
                status,
                payload,
                reply,
                error,
                started,
                request.client_addr,
                request_id,
                request.method,
                request.traceparent,
            )
            event = notify(self.observers, event)
        return new_answer(status, headers, answer, event)

    def call(self, endpoint: str, service_id: str, fields: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """A call of the family's ``endpoint`` (a name of :data:`~ciba_middleware.ciba.answers.ENDPOINTS`)
        in process, from the wrapped app: no HTTP, no caller authentication. Returns the
        HTTP status and the JSON body the route would answer."""
        if self.family is None:
            raise ConfigurationError("the CIBA family is not configured (CIBA_CLIENTS or CIBA_CLIENTS_FILE)")
        started = time.perf_counter()
        spec = ENDPOINTS[endpoint]
        reply: Reply | None = None
        error: ApiError | None = None
        try:
            reply = self._family_reply(spec, service_id, fields, None)
        except ApiError as exc:
            error = exc
        except Exception:
            log.exception("unexpected error in %s (in process)", spec.suffix)
            error = InternalError("an unexpected error occurred; see the server log.")
        status, payload = family_answer(spec, reply, error)
        if self.observers:
            notify(
                self.observers,
                self._family_event(spec, None, service_id, None, status, payload, reply, error, started, None, None),
            )
        return status, payload

    def _family_reply(
        self, endpoint: Endpoint, service: str, fields: Mapping[str, Any], request_id: str | None
    ) -> Reply:
        assert self.family is not None
        try:
            return self.family.handle(endpoint.name, service, fields)
        except StoreDown:
            log.error("%s failed on the store for service %s (request %s)", endpoint.suffix, service, request_id)
            raise

    def _family_event(
        self,
        endpoint: Endpoint,
        route: Literal["v3", "v2"] | None,
        service: str | None,
        principal: Principal | None,
        status: int,
        payload: Mapping[str, Any],
        reply: Reply | None,
        error: ApiError | None,
        started: float,
        client_addr: str | None,
        request_id: str | None,
        method: str | None = None,
        traceparent: str | None = None,
    ) -> FailEvent:
        action = reply.action if reply is not None else _api_action(payload.get("action"))
        ticket = reply.ticket if reply is not None else None
        # By position, in the order of _EVENT_FIELDS (checked against FailEvent's at import).
        event: FailEvent = new_tuple(
            FailEvent,
            (
                "in_process" if route is None else "http",
                route,
                service,
                principal,
                status,
                payload.get("resultCode", reply.result_code if reply else ""),
                None,
                action,
                ticket_hash(ticket) if ticket else None,
                None,
                error.auth_failure if error else None,
                isinstance(error, StoreDown),
                client_addr,
                request_id,
                time.perf_counter() - started,
                None,
                method,
                traceparent,
                None,
                None,
                endpoint.name,
            ),
        )
        return event


_EVENT_FIELDS = (
    *("via", "route", "service_id", "principal", "status", "result_code", "reason", "action", "ticket_hash"),
    *("deleted", "auth_failure", "store_error", "client_addr", "request_id", "duration", "store_duration"),
    *("method", "traceparent", "trace_id", "span_id", "endpoint"),
)
by_position(_EVENT_FIELDS, "core.FailApi._event")
#: :attr:`Reason.action` of each reason, for the event.
_ACTIONS: dict[Reason, Action] = {reason: reason.action for reason in Reason}


def family_answer(endpoint: Endpoint, reply: Reply | None, error: ApiError | None) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a family call: the reply's (200), or the error's with
    Authlete's ``resultCode`` and ``resultMessage`` naming the route, and the route's
    server action when the error reaches the request."""
    if error is None:
        assert reply is not None
        # Absent values are left out, as Authlete leaves them out; its SDKs read them as null.
        return 200, {name: value for name, value in reply.body.items() if value is not None}
    code = f"A{endpoint.number}{error.code}" if isinstance(error, FamilyError) else error.result_code
    payload: dict[str, Any] = {"resultCode": code, "resultMessage": f"[{code}] {endpoint.suffix}, {error.detail}"}
    if error.with_action and endpoint.server_action is not None:
        payload["action"] = endpoint.server_action.value
        payload["responseContent"] = error_content("server_error")
    return error.status, payload


def _api_name(endpoint: str) -> str:
    """How log lines name ``endpoint``: "the fail API", or its path below ``/api[/{serviceId}]``."""
    return "the fail API" if endpoint == "fail" else ENDPOINTS[endpoint].suffix


def _method_not_allowed(endpoint: str, method: str) -> MethodNotAllowed:
    """The refusal of ``method`` at ``endpoint``: 405, naming the methods it takes."""
    methods = ("POST",) if endpoint == "fail" else ENDPOINTS[endpoint].methods
    refused = MethodNotAllowed(f"use {' or '.join(methods)}, not {_ascii(method)}.")
    if endpoint != "fail":
        refused.headers = (("Allow", ", ".join(methods)),)
    return refused


def _store_failed(exc: StoreError, service_id: str, ticket: str, request_id: str | None) -> StoreFailed:
    """The API's error for a store that failed deleting ``ticket``, logged (the ticket as its hash)."""
    log.error(
        "ticket store failed deleting ticket %s of service %s%s: %s",
        ticket_hash(ticket),
        service_id,
        f" (request {request_id})" if request_id else "",
        exc,
    )
    return StoreFailed("the ticket store failed; the ticket may not have been deleted.")


def _unexpected(request_id: str, exc: Exception) -> InternalError:
    """Log an unexpected exception of a fail call (its traceback holds no secret: tokens are
    never kept in locals of a frame that can fail) and give the caller's answer."""
    log.error("unexpected error in the fail API (request %s)", request_id, exc_info=exc)
    return InternalError("an unexpected error occurred; see the server log.")


def _api_action(value: object) -> ApiAction | None:
    """A refused family call's ``action`` (its answer has the name) as the member the event
    carries, as an answered call's does: every observer reads ``action.value``."""
    if value is None:
        return None
    try:
        return ApiAction(str(value))
    except ValueError:
        log.error("a family answer's action %r is not an API action", value)
        return None


def _since(started: float | None) -> float | None:
    """Seconds since ``started``, or None when it was never set."""
    return None if started is None else time.perf_counter() - started


def pick_request_id(*candidates: str | None) -> str:
    """The first well-formed caller's request ID among ``candidates``, else a new one.

    Well formed: 1-128 of ``A-Z a-z 0-9 . _ : -``. New: 32 hex digits (:func:`new_request_id`).
    """
    for candidate in candidates:
        if candidate and _well_formed_id(candidate):
            return candidate
    return new_request_id()


def new_request_id() -> str:
    """32 random hex digits: a name for one call, unique, not a secret.

    From :mod:`random` (which Python reseeds in a forked child), not :func:`os.urandom`:
    a system call for each request cost more here than the rest of the ID's work, and
    nothing is protected by an ID being hard to guess (a caller may choose its own).
    """
    return "%032x" % _random_bits(128)  # noqa: UP031 (faster than an f-string spec here)


def _ascii(value: str, limit: int = 64) -> str:
    """A caller-controlled value made safe for a message: short, quoted, ASCII-escaped."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return ascii(shown)
