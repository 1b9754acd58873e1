"""Django integration: :class:`CibaMiddleware`, :func:`issue_ticket`, :func:`fail`, checks, ``manage.py ciba``.

``pip install "ciba-middleware[django]"``, then in ``settings.py``::

    INSTALLED_APPS = [..., "ciba_middleware.django"]        # checks and `manage.py ciba`
    MIDDLEWARE = ["ciba_middleware.django.CibaMiddleware", ...]   # first
    CIBA_MIDDLEWARE = {"TOKENS": [...], "STORE_URL": "sqlite:///tickets.sqlite3", "SERVICE_ID": "715948317"}

The keys of ``CIBA_MIDDLEWARE`` are the ``CIBA_*`` variables without their prefix
(:mod:`ciba_middleware.config`), plus ``SERVICE_ID`` and ``SERVER_ERROR_STATUS``
(:mod:`ciba_middleware.views`); a key left out is read from the environment
(``CIBA_TOKENS``, ...). Nothing is read or built until the fail API or a view first needs
it, once per process, so ``manage.py`` commands that do not serve need no configuration.

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

from ..config import Settings
from ..core import API_PATH, Answer, FailApi, pick_request_id
from ..dpop import request_url
from ..errors import ConfigurationError, InternalError
from ..reasons import Reason
from ..redact import mask_url
from ..request import Body
from ..response import HEADERS, FailResponse, client_response, error_body
from ..stores.base import TicketStore, ticket_hash
from ..views import BackchannelFail, server_error_status, view_service

__all__ = [
    "KEYS",
    "SETTING",
    "CibaMiddleware",
    "CibaState",
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
#: The keys it knows: the ``CIBA_*`` variables without their prefix.
KEYS = (
    "STORE_URL",
    "TOKENS",
    "TOKENS_FILE",
    "PATH_PREFIX",
    "MAX_BODY_BYTES",
    "TICKET_TTL",
    "AUDIT_LOG",
    "AUDIT_FLUSH",
    "SERVICE_ID",
    "SERVER_ERROR_STATUS",
)
_ENV_PREFIX = "CIBA_"
_NAME = re.compile(r"\bCIBA_([A-Z0-9_]+)\b")


@dataclass(frozen=True)
class CibaState:
    """What the integration builds once per process from the configuration."""

    api: FailApi
    settings: Settings
    service_id: str
    server_error_status: int

    @property
    def store(self) -> TicketStore:
        return self.api.store


def configuration() -> tuple[dict[str, Any], frozenset[str]]:
    """The ``CIBA_*`` mapping the settings describe, and which of its keys came from the environment.

    ``CIBA_MIDDLEWARE[key]`` comes first; ``CIBA_<key>`` from the environment fills in what
    it leaves out. Raises :class:`ConfigurationError` when the setting is not a dict.
    """
    given = getattr(django_settings, SETTING, None)
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ConfigurationError(f"{SETTING} must be a dict, not {type(given).__name__}")
    values: dict[str, Any] = {}
    from_env = set()
    for name, value in os.environ.items():
        if name.startswith(_ENV_PREFIX):
            values[name] = value
            from_env.add(name)
    for key, value in given.items():
        name = f"{_ENV_PREFIX}{key}"
        if key in KEYS and value is not None:
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
        if settings.metrics_path:
            raise ConfigurationError(
                "CIBA_METRICS_PATH is set, but the Django middleware does not serve metrics: unset it"
            )
        api, _ = settings.build_api()
        return CibaState(
            api=api,
            settings=settings,
            service_id=view_service(values.get("CIBA_SERVICE_ID"), api.verifier),
            server_error_status=server_error_status(values.get("CIBA_SERVER_ERROR_STATUS")),
        )
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
                log.info(
                    "fail API served under %s/api/ for service %s, tickets in %s",
                    current.settings.prefix,
                    current.service_id,
                    mask_url(current.settings.store_url),
                )
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

    List it first in ``MIDDLEWARE``: the two fail routes are answered before URL routing
    and before any other middleware's view processing (CSRF, sessions, authentication do
    not apply to them). Every other request goes to the rest of the stack untouched; a
    :class:`BackchannelFail` raised by a view becomes the client's response (status, JSON
    body, no-store headers). Works in sync and async stacks (``runserver``, gunicorn,
    ``get_asgi_application()`` under uvicorn); in an async stack the fail API's work runs
    in a worker thread, off the event loop.

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
        if request.path_info.endswith(API_PATH):
            response = _serve(request)
            if response is not None:
                return response
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        if request.path_info.endswith(API_PATH):
            # Off the event loop: the store (and, on first use, building the state).
            response = await sync_to_async(_serve, thread_sensitive=False)(request)
            if response is not None:
                return response
        return await get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, BackchannelFail):
            return None
        current = state()
        answer = current.api.fail(
            current.service_id, exception.ticket, exception.reason, exception.description, exception.uri
        )
        log.debug(
            "backchannel authentication request failed: %s, ticket %s",
            exception.reason.value,
            ticket_hash(exception.ticket) if exception.ticket else None,
        )
        reply = client_response(answer, server_error_status=current.server_error_status)
        return HttpResponse(reply.body, status=reply.status, headers=dict(reply.headers))


_UNCONFIGURED = InternalError("the fail API is not configured; see the server log.")


def _serve(request: HttpRequest) -> HttpResponse | None:
    """The fail API's answer to ``request``, or None when the request is not for it."""
    try:
        api = state().api
    except ConfigurationError as exc:
        log.error("the fail API cannot serve %s: configuration error: %s", request.path_info, exc)
        body = error_body(_UNCONFIGURED)
        return _response(Answer(500, [*HEADERS, ("Content-Length", str(len(body)))], body))
    # PATH_INFO as WSGI has it (raw bytes as latin-1), whichever handler made the request.
    path = request.path_info
    route = api.route(path if path.isascii() else path.encode("utf-8").decode("latin-1"))
    if route is None:
        return None
    meta = request.META
    dpop = meta.get("HTTP_DPOP", "")
    environ: Mapping[str, Any] | None = getattr(request, "environ", None)
    wsgi_input = environ.get("wsgi.input") if environ is not None else None
    if environ is not None and wsgi_input is not None:
        # Under WSGI, the server's stream: Django's own reads nothing of a chunked body.
        read, terminated = wsgi_input.read, bool(environ.get("wsgi.input_terminated"))
    else:
        # Under ASGI, Django has read the whole body already.
        read, terminated = request.read, True
    return _response(
        api.respond(
            route,
            request.method or "",
            meta.get("HTTP_AUTHORIZATION", ""),
            Body(
                meta.get("CONTENT_TYPE", ""),
                meta.get("CONTENT_LENGTH", ""),
                read,
                terminated=terminated,
                chunked=bool(meta.get("HTTP_TRANSFER_ENCODING")),
            ),
            meta.get("REMOTE_ADDR"),
            pick_request_id(meta.get("HTTP_REQUEST_ID"), meta.get("HTTP_X_REQUEST_ID")),
            dpop,
            request_url(request.scheme or "http", _host(meta), meta.get("SCRIPT_NAME", "") + path) if dpop else "",
        )
    )


def _host(meta: Mapping[str, Any]) -> str:
    """The host the request was sent to, with its port when not the scheme's default (PEP 3333)."""
    host: str = meta.get("HTTP_HOST") or meta.get("SERVER_NAME", "")
    port = meta.get("SERVER_PORT", "")
    if not meta.get("HTTP_HOST") and port and port not in ("80", "443"):
        host = f"{host}:{port}"
    return host


def _response(answer: Answer) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status, headers=dict(answer.headers))
    # Each call is in the audit log already; Django would log every 4xx again as a warning.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response
