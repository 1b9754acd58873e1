"""The base every adapter stands on: :class:`Site` (what is served) and :class:`Adapter`.

An adapter (WSGI :mod:`ciba_middleware.middleware`, ASGI :mod:`ciba_middleware.asgi`,
Django :mod:`ciba_middleware.django`; Flask's extension wraps the WSGI one) does two things
only: it reads its server's request into the core's :class:`~ciba_middleware.core.Request`
and writes the :class:`~ciba_middleware.core.Answer` it gets back. Every rule it needs lives
here or in the core, once:

- which path is whose: :meth:`Adapter.route` (the fail API's routes) and
  :meth:`Adapter.endpoint` (health and metrics, core answers too: :class:`Site`);
- the request ID (:func:`ciba_middleware.core.pick_request_id`) and the URL a request was sent
  to (:func:`ciba_middleware.core.request_url`, ``CIBA_PUBLIC_URL`` first);
- authentication before any body is read (:meth:`ciba_middleware.core.FailApi.admit`);
- what a view's :class:`BackchannelFail` answers the client (:meth:`Adapter.view_failed`);
- the answer of a fail API that is not configured (:func:`unconfigured`).

Also here, for the app's views whatever the framework: :class:`BackchannelFail` and the two
settings that say how it is answered, ``SERVICE_ID`` (:func:`view_service`) and
``SERVER_ERROR_STATUS`` (:func:`server_error_status`). Framework-free: nothing here imports a
web framework.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, Protocol, TypeVar, overload

from .auth import TokenVerifier
from .core import Answer, FailApi, Route, new_answer
from .errors import ConfigurationError, InternalError
from .events import Observer
from .reasons import Reason
from .request import check_fields
from .response import HEADERS, client_response, error_body
from .stores.base import TicketStore, number_option, ticket_hash

__all__ = [
    "Adapter",
    "BackchannelFail",
    "Endpoint",
    "Site",
    "server_error_status",
    "unconfigured",
    "view_service",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Endpoint(Protocol):
    """A path served beside the fail API (health, metrics): its answer to a request."""

    path: str

    def answer(self, method: str, authorization: str = "", accept: str = "") -> Answer: ...


@dataclass(frozen=True)
class Site:
    """Everything an adapter serves, built once (:meth:`ciba_middleware.Settings.build_api`).

    ``api`` is the fail API; ``health`` and ``metrics`` the endpoints beside it, when
    configured; ``service_id`` the service of the views' in-process calls (None: the only
    service the grants cover, looked up when a view first needs it) and
    ``server_error_status`` the client's status for ``server_error``.
    """

    api: FailApi
    health: Endpoint | None = None
    metrics: Endpoint | None = None
    service_id: str | None = None
    server_error_status: int = 500
    #: Path -> endpoint, for :meth:`Adapter.endpoint`.
    endpoints: Mapping[str, Endpoint] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        found = {e.path: e for e in (self.health, self.metrics) if e is not None}
        object.__setattr__(self, "endpoints", found)


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
    """The base of a transport's adapter: its :class:`Site`, and the rules it shares.

    A subclass calls :meth:`_serve` with the site once, then per request :meth:`route` (and
    :meth:`endpoint` when that finds nothing) on the path as WSGI's ``PATH_INFO`` has it, and
    hands the core a :class:`~ciba_middleware.core.Request`. The settings of the
    :class:`FailApi` read through (``adapter.store``, ``adapter.prefix``, ...).
    """

    site: Site
    api: FailApi
    store = _ReadThrough[TicketStore]()
    verifier = _ReadThrough[TokenVerifier]()
    prefix = _ReadThrough[str]()
    max_body_bytes = _ReadThrough[int]()
    observers = _ReadThrough[tuple[Observer, ...]]()
    public_url = _ReadThrough[str]()

    def _serve(self, site: Site) -> None:
        self.site = site
        self.api = site.api
        #: Path -> health or metrics endpoint; empty (and false) when neither is configured.
        self.endpoints = dict(site.endpoints)
        self._service_id = site.service_id
        self.server_error_status = site.server_error_status

    def route(self, path: str) -> Route | None:
        """The fail API's route of ``path`` (raw bytes as latin-1), or None."""
        return self.api.route(path)

    def endpoint(self, path: str) -> Endpoint | None:
        """The health or metrics endpoint at ``path``, or None."""
        return self.endpoints.get(path) if self.endpoints else None

    @property
    def service_id(self) -> str:
        """The service of the views' in-process calls (:func:`view_service`)."""
        if self._service_id is None:
            self._service_id = view_service(None, self.api.verifier, "service_id")
        return self._service_id

    def view_failed(self, exc: BackchannelFail) -> Answer:
        """A view's :class:`BackchannelFail` as the client's answer: the request failed in
        process (its ticket deleted), and the status, JSON body and no-store headers of
        :func:`ciba_middleware.client_response`, with ``Content-Length``. Calls the store."""
        answer = self.api.fail(self.service_id, exc.ticket, exc.reason, exc.description, exc.uri)
        log.debug(
            "backchannel authentication request failed: %s, ticket %s",
            exc.reason.value,
            ticket_hash(exc.ticket) if exc.ticket else None,
        )
        reply = client_response(answer, server_error_status=self.server_error_status)
        body = reply.body.encode("utf-8")
        return new_answer(reply.status, [*reply.headers, ("Content-Length", str(len(body)))], body)


_UNCONFIGURED = InternalError("the fail API is not configured; see the server log.")


def unconfigured() -> Answer:
    """The fail API's answer in a process whose configuration could not be built: the
    contract's clean 500, the reason only in the server log (which the adapter writes)."""
    body = error_body(_UNCONFIGURED)
    return new_answer(500, [*HEADERS, ("Content-Length", str(len(body)))], body)


# -- for the app's views ---------------------------------------------------------------------


class BackchannelFail(Exception):
    """Raise from a view to reject a backchannel authentication request (CIBA Core 13).

    The integration's handler fails the request in process, which deletes ``ticket``
    from the store, and answers the client with the matching status and
    ``{"error": ...}`` body (:meth:`Adapter.view_failed`).

    ``reason`` is a :class:`ciba_middleware.Reason`, its name, or an Authlete DTO enum
    member. ``description`` and ``uri`` become ``error_description`` and ``error_uri``;
    they are checked here, against RFC 6749's character sets, so a bad one raises
    :class:`ciba_middleware.InvalidParameter` (a ``ValueError``) where the view raises,
    not later in the handler.

    >>> raise BackchannelFail(Reason.ACCESS_DENIED, ticket=ticket)  # doctest: +SKIP
    """

    def __init__(
        self,
        reason: Reason | str | Enum,
        ticket: str | None = None,
        description: str | None = None,
        uri: str | None = None,
    ) -> None:
        name = reason.name if isinstance(reason, Enum) and not isinstance(reason, str) else reason
        params = check_fields({"ticket": ticket, "reason": name, "errorDescription": description, "errorUri": uri})
        super().__init__(params.reason.value if description is None else f"{params.reason.value}: {description}")
        self.reason: Reason = params.reason
        self.ticket: str | None = params.ticket
        self.description: str | None = params.error_description
        self.uri: str | None = params.error_uri


def view_service(value: object, verifier: TokenVerifier, name: str = "CIBA_SERVICE_ID") -> str:
    """The service of in-process calls: ``value``, else the only service the grants cover.

    A number (as ``Flask.config.from_prefixed_env`` leaves ``715948317``) is taken as its
    digits. Raises :class:`ConfigurationError` naming ``name``.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if value not in (None, ""):
        raise ConfigurationError(f"{name} must be a service ID (a string), not {value!r}")
    # StaticTokenVerifier and the reloading one both say which services they cover.
    found = getattr(verifier, "services", None)
    services: list[str] = sorted(found) if isinstance(found, frozenset) else []
    if len(services) == 1:
        return services[0]
    raise ConfigurationError(
        f"{name} is not set and the grants do not name exactly one service "
        f"({', '.join(services) or 'none'}): set it to the service whose tickets this app issues"
    )


def server_error_status(value: object, name: str = "CIBA_SERVER_ERROR_STATUS") -> int:
    """The client's status for ``server_error``: ``value`` (400-599, an int or its digits), else 500."""
    if value is None or value == "":
        return 500
    try:
        status: int = number_option(name, name, value, integer=True, minimum=400, maximum=599)
    except ConfigurationError:
        raise ConfigurationError(f"{name} must be an HTTP error status (400-599), not {value!r}") from None
    return status
