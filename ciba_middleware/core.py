"""The fail API without a transport: :class:`FailApi`.

An adapter (the WSGI middleware, and any other server's) hands :meth:`FailApi.respond`
what an HTTP request to the API carries and writes back the :class:`Answer` it gets. The
order of the checks, and what each failure answers, live here and nowhere else::

    match -> method -> authenticate -> coverage -> parse -> validate -> store -> render

:meth:`FailApi.fail` is the same call made in process by the wrapped app, without HTTP
and without authentication.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Sequence
from enum import Enum
from typing import Generic, Literal, NamedTuple, TypedDict, TypeVar, overload

from .auth import Principal, TokenVerifier, authenticate
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
from .events import FailEvent, Observer, notify
from .reasons import Action, Reason
from .request import Body, FailParams, check_fields, read_params
from .response import HEADERS, PLAIN_ANSWERS, STATUS_LINES, SUCCESS_CODE, FailResponse, error_body, success_json
from .stores.base import ReplayCache, TicketStore, ticket_hash, well_formed

__all__ = [
    "API_PATH",
    "REQUEST_ID_HEADER",
    "Adapter",
    "Answer",
    "FailApi",
    "FailApiOptions",
    "Route",
    "new_request_id",
    "pick_request_id",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``("v3", service ID)`` for ``/api/{serviceId}/...``, ``("v2", None)`` for ``/api/...``.
Route = tuple[Literal["v3", "v2"], str | None]

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


# tuple.__new__ directly: a named tuple's own __new__ is a Python function, one more call.
_new_answer = _new_event = tuple.__new__


class FailApiOptions(TypedDict, total=False):
    """:class:`FailApi`'s optional settings, for an adapter that takes them through (``**options``)."""

    prefix: str
    max_body_bytes: int
    observers: Sequence[Observer]


class FailApi:
    """Authlete's ``/backchannel/authentication/fail`` API, as a function of a request.

    :param store: where tickets live (:func:`ciba_middleware.stores.store_from_url`).
    :param verifier: who may call (:class:`ciba_middleware.StaticTokenVerifier` or your own).
    :param prefix: a path in front of ``/api``, e.g. ``/authlete``; empty by default, as in
        Authlete.
    :param max_body_bytes: the largest body accepted (413 beyond).
    :param observers: callables given a :class:`~ciba_middleware.events.FailEvent` after
        each call, for metrics and audit logs.
    """

    def __init__(
        self,
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
        self._v2_head = f"{prefix}/api"
        self._v3_head = f"{prefix}/api/"
        # path -> route, for paths already matched: a caller uses one or a few.
        self._routes: dict[str, Route] = {}

    # -- matching ---------------------------------------------------------------------

    def route(self, path: str) -> Route | None:
        """The route ``path`` names, or None when the request is not for the fail API.

        ``path`` is the request's path as WSGI's ``PATH_INFO`` has it: the raw bytes
        decoded as latin-1 (PEP 3333). Anything that does not end with the API's path
        costs one string comparison.
        """
        if not path.endswith(API_PATH):
            return None
        route = self._routes.get(path)
        if route is None:
            route = self._match(path)
            # Bounded, so that a caller inventing service IDs cannot grow it without end.
            if route is not None and len(self._routes) < _ROUTES_CACHED and len(path) <= _ROUTE_CACHED_LENGTH:
                self._routes[path] = route
        return route

    def _match(self, path: str) -> Route | None:
        head = path[: -len(API_PATH)]
        if head == self._v2_head:
            return ("v2", None)
        if head.startswith(self._v3_head):
            service = head[len(self._v3_head) :]
            if service and "/" not in service:
                # Service IDs are UTF-8 on the wire.
                return ("v3", service.encode("latin-1", "replace").decode("utf-8", "replace"))
        return None

    # -- over HTTP --------------------------------------------------------------------

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
        """Answer one HTTP request to ``route`` (from :meth:`route`).

        ``method`` and the ``Authorization`` header are given as sent ("" when absent);
        ``body`` is the request's :class:`~ciba_middleware.request.Body`. ``request_id`` is
        the caller's ``Request-Id`` or ``X-Request-Id``, kept when well formed (else a new
        one is made): every answer carries it as ``Request-Id``, and so do the event and the
        log lines of the call. ``dpop`` is the ``DPoP`` header and ``url`` the URL the
        request was sent to (scheme, host and path), for DPoP-bound tokens; ``traceparent``
        joins the caller's trace (W3C Trace Context), for tracing. Never raises:
        this is the one place where an unexpected exception becomes an answer.
        """
        started = time.perf_counter() if self.observers else 0.0
        if request_id is None or not _well_formed_id(request_id):
            request_id = new_request_id()
        principal: Principal | None = None
        service: str | None = route[1]
        params: FailParams | None = None
        deleted: bool | None = None
        error: ApiError | None = None
        store_started: float | None = None
        store_duration: float | None = None
        try:
            if method != "POST":
                raise MethodNotAllowed(f"use POST, not {_ascii(method)}.")
            principal, service = authenticate(
                self.verifier, authorization, service, dpop=dpop, method=method, url=url, replay=self.replay
            )
            if service not in principal.services:  # Principal.covers, without the call
                raise Forbidden(f"the credentials do not cover the service {_ascii(service)}.")
            params = read_params(body, self.max_body_bytes)
            if self.observers and params.ticket:
                store_started = time.perf_counter()
            deleted = self._delete(service, params.ticket, request_id)
            store_duration = _since(store_started)
        except ApiError as exc:
            error = exc
        except Exception:
            # The traceback holds no secret: tokens are never kept in locals of a frame
            # that can fail.
            log.exception("unexpected error in the fail API (request %s)", request_id)
            error = InternalError("an unexpected error occurred; see the server log.")
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
            if method == "HEAD":
                answer = b""
            if store_duration is None:
                store_duration = _since(store_started)  # the store failed: the time until it did
        event = None
        if self.observers:
            event = self._event(
                route[0],
                service,
                principal,
                params,
                deleted,
                error,
                started,
                client_addr,
                request_id,
                store_duration,
                method,
                traceparent,
            )
        return _new_answer(Answer, (status, headers, answer, event))

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
            log.error(
                "ticket store failed deleting ticket %s of service %s%s: %s",
                ticket_hash(ticket),
                service_id,
                f" (request {request_id})" if request_id else "",
                exc,
            )
            raise StoreFailed("the ticket store failed; the ticket may not have been deleted.") from exc

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
            status, result_code, action = 200, SUCCESS_CODE, params.reason.action
        else:
            status, result_code = error.status, error.result_code
            action = Action.INTERNAL_SERVER_ERROR if error.with_action else None
        # Positional, in FailEvent's field order, through tuple.__new__: a fifth of the
        # cost of the named tuple's own keyword __new__.
        event: FailEvent = _new_event(
            FailEvent,
            (
                "in_process" if route is None else "http",  # via
                route,
                service,  # service_id
                principal,
                status,
                result_code,
                params.reason if params else None,
                action,
                ticket_hash(params.ticket) if params and params.ticket else None,
                deleted,
                error.auth_failure if error else None,
                isinstance(error, StoreFailed),  # store_error
                client_addr,
                request_id,
                time.perf_counter() - started,  # duration
                store_duration,
                method,
                traceparent,
                None,  # trace_id
                None,  # span_id
            ),
        )
        return notify(self.observers, event)


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


class _ReadThrough(Generic[T]):
    """An adapter's attribute that is its FailApi's attribute of the same name, read-only."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, adapter: None, owner: type) -> _ReadThrough[T]: ...
    @overload
    def __get__(self, adapter: Adapter, owner: type) -> T: ...
    def __get__(self, adapter: Adapter | None, owner: type) -> T | _ReadThrough[T]:
        if adapter is None:
            return self
        value: T = getattr(adapter.api, self.name)
        return value

    def __set__(self, adapter: Adapter, value: T) -> None:
        raise AttributeError(f"{self.name} is the FailApi's setting: build another middleware to change it")


class Adapter:
    """The base of a transport's adapter (WSGI, ASGI): ``api``, and its settings read through.

    One object holds the settings, the :class:`FailApi`; an adapter only translates.
    """

    api: FailApi
    store = _ReadThrough[TicketStore]()
    verifier = _ReadThrough[TokenVerifier]()
    prefix = _ReadThrough[str]()
    max_body_bytes = _ReadThrough[int]()
    observers = _ReadThrough[tuple[Observer, ...]]()


def _ascii(value: str, limit: int = 64) -> str:
    """A caller-controlled value made safe for a message: short, quoted, ASCII-escaped."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return ascii(shown)
