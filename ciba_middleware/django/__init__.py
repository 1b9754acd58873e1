"""Django integration: :class:`CibaMiddleware`, :func:`issue_ticket`, :func:`fail`, checks, ``manage.py ciba``.

``pip install "ciba-middleware[django]"``, then in ``settings.py``::

    INSTALLED_APPS = [..., "ciba_middleware.django"]        # checks and `manage.py ciba`
    MIDDLEWARE = ["ciba_middleware.django.CibaMiddleware", ...]   # first
    CIBA_MIDDLEWARE = {"TOKENS": [...], "STORE_URL": "sqlite:///tickets.sqlite3", "SERVICE_ID": "715948317"}

The keys of ``CIBA_MIDDLEWARE`` are the ``CIBA_*`` variables without their prefix, every one
of :data:`ciba_middleware.config.VARIABLES` (``SERVICE_ID`` and ``SERVER_ERROR_STATUS``, the
views' two, included); a key it does not know is an error, and a key left out is read from
the environment (``CIBA_TOKENS``, ...). Nothing is read or built until the first request
or a view needs it, once per process, so ``manage.py`` commands that do not serve need no
configuration. The middleware is a translation (:mod:`ciba_middleware.adapter` holds the
rules): it serves the fail API, and the health and metrics endpoints when configured.

In a view::

    from ciba_middleware import BackchannelFail, Reason
    from ciba_middleware.django import issue_ticket

    def backchannel_authentication(request):
        ticket = issue_ticket()
        ...
        raise BackchannelFail(Reason.UNKNOWN_USER_ID, ticket=ticket)
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from ..adapter import Adapter, BackchannelFail, unconfigured
from ..config import VARIABLES, Settings
from ..core import ROUTED_SUFFIXES, Answer, FailApi
from ..errors import ConfigurationError
from ..middleware import environ_request
from ..reasons import Reason
from ..request import Body
from ..response import FailResponse
from ..scope import Scope, scope_headers, scope_paths, scope_request
from ..stores.base import TicketStore

__all__ = [
    "KEYS",
    "SETTING",
    "CibaMiddleware",
    "CibaState",
    "DjangoMiddleware",
    "afail",
    "aissue_ticket",
    "configuration",
    "fail",
    "issue_ticket",
    "reset",
    "state",
]

log = logging.getLogger(__name__)

#: The Django setting holding the configuration.
SETTING = "CIBA_MIDDLEWARE"
_ENV_PREFIX = "CIBA_"
#: The keys it knows: the ``CIBA_*`` variables without their prefix.
KEYS = tuple(name.removeprefix(_ENV_PREFIX) for name in VARIABLES)
_NAME = re.compile(r"\bCIBA_([A-Z0-9_]+)\b")


@dataclass(frozen=True)
class CibaState:
    """What the integration builds once per process from the configuration: the adapter's
    base (:class:`~ciba_middleware.adapter.Adapter`, serving its settings' site)."""

    adapter: Adapter
    settings: Settings

    @property
    def api(self) -> FailApi:
        return self.adapter.api

    @property
    def service_id(self) -> str:
        return self.adapter.service_id

    @property
    def server_error_status(self) -> int:
        return self.adapter.server_error_status

    @property
    def store(self) -> TicketStore:
        return self.adapter.api.store


def configuration() -> tuple[dict[str, Any], frozenset[str]]:
    """The ``CIBA_*`` mapping the settings describe, and which of its keys came from the environment.

    ``CIBA_MIDDLEWARE[key]`` comes first; ``CIBA_<key>`` from the environment fills in what
    it leaves out. Raises :class:`ConfigurationError` when the setting is not a dict or has
    a key that is not a setting (:data:`KEYS`).
    """
    given = getattr(django_settings, SETTING, None)
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ConfigurationError(f"{SETTING} must be a dict, not {type(given).__name__}")
    unknown = sorted(str(key) for key in given if key not in KEYS)
    if unknown:
        raise ConfigurationError(
            f"{SETTING} has keys that are not settings: {', '.join(unknown)} (known: {', '.join(KEYS)})"
        )
    values: dict[str, Any] = {}
    from_env = set()
    for name, value in os.environ.items():
        if name.startswith(_ENV_PREFIX):
            values[name] = value
            from_env.add(name)
    for key, value in given.items():
        name = f"{_ENV_PREFIX}{key}"
        if value is not None:
            values[name] = value
            from_env.discard(name)
    return values, frozenset(from_env)


def named(message: str, from_env: frozenset[str]) -> str:
    """``message`` with each ``CIBA_X`` it names written as the setting's key ``CIBA_MIDDLEWARE["X"]``,
    unless it came from the environment or is not a key of the setting."""
    return _NAME.sub(lambda m: m[0] if m[0] in from_env or m[1] not in KEYS else f'{SETTING}["{m[1]}"]', message)


def build() -> CibaState:
    """Build the state from the configuration; a :class:`ConfigurationError` names the key at fault."""
    values, from_env = configuration()
    try:
        settings = Settings.from_mapping(values)
        # The views' service is settled before the store is opened (views=True).
        adapter = Adapter()
        adapter._serve(settings.build_api(views=True))
        return CibaState(adapter=adapter, settings=settings)
    except ConfigurationError as exc:
        raise ConfigurationError(named(str(exc), from_env)) from None


_state: CibaState | None = None
_lock = threading.Lock()


def state() -> CibaState:
    """The process's state, built on first use (:func:`build`); raises :class:`ConfigurationError`."""
    global _state
    current = _state
    if current is None:
        with _lock:
            current = _state
            if current is None:
                current = _state = build()
    return current


def reset() -> None:
    """Forget the state (closing its store), so the next use builds it again from the settings."""
    global _state
    with _lock:
        old, _state = _state, None
    if old is not None:
        old.store.close()


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    # override_settings(CIBA_MIDDLEWARE=...) in tests: the next request sees the new value.
    if setting == SETTING:
        reset()


# -- for views ------------------------------------------------------------------------------


def issue_ticket(ttl: float | None = None) -> str:
    """A new ticket for the configured service, living ``ttl`` seconds (``TICKET_TTL`` by default).

    Issue it when a backchannel authentication request arrives; pass it to
    :class:`BackchannelFail` when the request is rejected. Raises
    :class:`ciba_middleware.StoreError` when the store fails.
    """
    current = state()
    return current.store.issue(current.service_id, ttl)


def fail(
    reason: Reason | str | Enum,
    ticket: str | None = None,
    description: str | None = None,
    uri: str | None = None,
) -> FailResponse:
    """Fail in process and return the API's answer, for views that build their own response."""
    current = state()
    return current.api.fail(current.service_id, ticket, reason, description, uri)


async def aissue_ticket(ttl: float | None = None) -> str:
    """:func:`issue_ticket` for async views: the store call runs in a worker thread."""
    return await sync_to_async(issue_ticket, thread_sensitive=False)(ttl)


async def afail(
    reason: Reason | str | Enum,
    ticket: str | None = None,
    description: str | None = None,
    uri: str | None = None,
) -> FailResponse:
    """:func:`fail` for async views: the store call runs in a worker thread."""
    return await sync_to_async(fail, thread_sensitive=False)(reason, ticket, description, uri)


# -- the middleware -------------------------------------------------------------------------


class CibaMiddleware:
    """Serve the fail API in a Django project, and answer :class:`BackchannelFail` from its views.

    List it first in ``MIDDLEWARE``: the two fail routes (and the health and metrics paths,
    when configured) are answered before URL routing and before any other middleware's view
    processing (CSRF, sessions, authentication do not apply to them). Every other request
    goes to the rest of the stack untouched; a :class:`BackchannelFail` raised by a view
    becomes the client's response (status, JSON body, no-store headers). Works in sync and
    async stacks (``runserver``, gunicorn, ``get_asgi_application()`` under uvicorn); in an
    async stack the fail API's work runs in a worker thread, off the event loop.

    When the configuration is bad, the fail API answers a clean 500 (and logs the error)
    while every other request keeps being served; ``manage.py check`` reports it.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        if _passes(request):
            return self.get_response(request)
        response = _serve(request)
        if response is not None:
            return response
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        if not _passes(request):
            # Off the event loop: the store (and, on first use, building the state).
            response = await sync_to_async(_serve, thread_sensitive=False)(request)
            if response is not None:
                return response
        return await get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, BackchannelFail):
            return None
        return _response(state().adapter.view_failed(exception))


#: The Django middleware by what it is, beside the Flask extension
#: (:class:`ciba_middleware.flask.FlaskExtension`).
DjangoMiddleware = CibaMiddleware


def _passes(request: HttpRequest) -> bool:
    """Whether ``request`` surely goes to the rest of the stack: once built, without health or
    metrics, only the fail API's paths are looked at."""
    current = _state
    return current is not None and not current.adapter.endpoints and not request.path_info.endswith(ROUTED_SUFFIXES)


def _serve(request: HttpRequest) -> HttpResponse | None:
    """The answer to ``request`` of the fail API or of an endpoint beside it, or None when it is for neither."""
    # Django's requests: a WSGIRequest has the server's environ, an ASGIRequest its scope.
    scope: Scope | None = getattr(request, "scope", None)
    if scope is None:
        environ: dict[str, Any] = request.environ  # type: ignore[attr-defined]
        # Django rewrites PATH_INFO and SCRIPT_NAME decoded as UTF-8: back to the bytes as latin-1.
        root, path = _latin1(environ.get("SCRIPT_NAME", "")), _latin1(environ.get("PATH_INFO", ""))
    else:
        root, path = scope_paths(scope)
    try:
        adapter = state().adapter
    except ConfigurationError as exc:
        if not path.endswith(ROUTED_SUFFIXES):
            return None
        log.error("the fail API cannot serve %s: configuration error: %s", request.path_info, exc)
        return _response(unconfigured())
    route = adapter.route(path)
    if route is None:
        endpoint = adapter.endpoint(path)
        if endpoint is None:
            return None
        meta = request.META
        return _response(
            endpoint.answer(request.method or "", meta.get("HTTP_AUTHORIZATION", ""), meta.get("HTTP_ACCEPT", ""))
        )
    if scope is None:
        # The server's stream: Django's own reads nothing of a chunked body.
        return _response(adapter.api.respond(environ_request(environ, route, path)._replace(root=root)))
    meta = request.META
    # Under ASGI, Django has read the whole body already.
    body = Body(
        meta.get("CONTENT_TYPE", ""),
        meta.get("CONTENT_LENGTH", ""),
        request.read,
        terminated=True,
        chunked=bool(meta.get("HTTP_TRANSFER_ENCODING")),
    )
    return _response(adapter.api.respond(scope_request(scope, scope_headers(scope), route, root, path, body)))


def _latin1(text: str) -> str:
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("latin-1")


def _response(answer: Answer) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status, headers=dict(answer.headers))
    # Each call is in the audit log already; Django would log every 4xx again as a warning.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response
