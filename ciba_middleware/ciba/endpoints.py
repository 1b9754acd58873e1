"""A CIBA authorization server's two endpoints, with hooks: :class:`CibaEndpoints`.

The protocol's steps are the library's; the application fills in what it alone knows,
in a :class:`Hooks` subclass: who the hint names, whether a user code is right, and how
to reach the user's authentication device. The sequence follows authlete-java-jaxrs's
backchannel authentication handler, calling the family in process (no HTTP)::

    client authentication (Basic or the form), the family's checks   -> 400 / 401
    Hooks.find_user                  None          -> fail UNKNOWN_USER_ID
    Hooks.login_hint_token_expired   True          -> fail EXPIRED_LOGIN_HINT_TOKEN
    Hooks.user_code_valid            False         -> fail INVALID_USER_CODE
    Hooks.binding_message_valid      False         -> fail INVALID_BINDING_MESSAGE
    Hooks.check                      (raise Reject for any other reason)
    issue: auth_req_id, expires_in, interval
    Hooks.start_device               the app reaches the user; it later calls complete()

Each rejection goes through the fail API (:meth:`~ciba_middleware.core.FailApi.fail`), so
the ticket is deleted and the client gets Authlete's answer. When the user decides, the
app calls :meth:`CibaEndpoints.complete`; a ping or push client's notification is handed
to a :class:`~ciba_middleware.ciba.delivery.Notifier`.

Answers are framework-free :class:`ClientResponse` values; :mod:`~ciba_middleware.ciba.mount`
turns an endpoint into a Flask, Django or Starlette view in one line::

    endpoints = CibaEndpoints(api, "715948317", MyHooks(), notifier=Notifier())
    app.add_url_rule("/backchannel/authentication", view_func=flask_view(endpoints.backchannel_authentication),
                     methods=["POST"])
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus

from ..reasons import Reason
from ..response import HEADERS, ClientResponse, client_response
from ..stores.base import ticket_hash

if TYPE_CHECKING:
    from ..core import FailApi
    from .delivery import Notifier

__all__ = [
    "AuthenticationRequest",
    "BindingMessagePolicy",
    "CibaEndpoints",
    "ClientResponse",
    "Completion",
    "CompletionRefused",
    "EndpointRequest",
    "Hooks",
    "PendingRequest",
    "Reject",
]

log = logging.getLogger(__name__)

_FORM = "application/x-www-form-urlencoded"
_HINT_NAMES = {"LOGIN_HINT": "login_hint", "LOGIN_HINT_TOKEN": "login_hint_token", "ID_TOKEN_HINT": "id_token_hint"}
_RESULTS = ("AUTHORIZED", "ACCESS_DENIED", "TRANSACTION_FAILED")


@dataclass(frozen=True)
class EndpointRequest:
    """What an endpoint reads of an HTTP request: the ``Authorization`` and ``Content-Type``
    headers as sent ("" when absent) and the raw body."""

    authorization: str
    content_type: str
    body: bytes


@dataclass(frozen=True)
class AuthenticationRequest:
    """A backchannel authentication request the family found well formed, as the hooks see it."""

    service_id: str
    #: The client's ``client_id`` as configured.
    client_id: str
    #: ``poll``, ``ping`` or ``push``.
    delivery_mode: str
    #: ``login_hint``, ``login_hint_token`` or ``id_token_hint``: the one hint sent.
    hint_type: str
    hint: str
    #: For ``id_token_hint``: the ``sub`` of an ID token this server signed (checked already).
    subject: str | None
    scopes: tuple[str, ...]
    acr_values: tuple[str, ...]
    binding_message: str | None
    user_code: str | None
    user_code_required: bool
    #: Seconds the client asked the request to live (``requested_expiry``), or None.
    requested_expiry: int | None
    resources: tuple[str, ...]


@dataclass(frozen=True)
class PendingRequest:
    """A request issued an auth_req_id and waiting for the user: what :meth:`Hooks.start_device` gets.

    ``ticket`` is the handle the app gives :meth:`CibaEndpoints.complete`; keep it
    server-side (it is not a secret for the client, which never sees it, but it decides
    the request). ``short_id`` tells identical requests apart on a device page.
    """

    ticket: str
    request: AuthenticationRequest
    user: Any
    created_at: float
    expires_in: int

    @property
    def short_id(self) -> str:
        return ticket_hash(self.ticket)

    @property
    def expires_at(self) -> float:
        return self.created_at + self.expires_in


class Reject(Exception):
    """Raised by a hook to refuse the request for ``reason``; the fail API answers the client.

    >>> raise Reject(Reason.ACCESS_DENIED, "The user blocked this client.")
    Traceback (most recent call last):
    ...
    ciba_middleware.ciba.endpoints.Reject: ACCESS_DENIED: The user blocked this client.
    """

    def __init__(self, reason: Reason, description: str | None = None) -> None:
        super().__init__(f"{reason.value}: {description}" if description else reason.value)
        self.reason = reason
        self.description = description


@dataclass(frozen=True)
class BindingMessagePolicy:
    """The default rule for ``binding_message`` (CIBA Core 7.1: shown on both devices, so short).

    A message passes when it has 1 to ``max_length`` characters, none of them a control or
    format character (Unicode categories C*: no line breaks, no bidi overrides), and, when
    ``pattern`` is set, matches it whole. Non-ASCII letters pass by default: users read
    their own language. oidc-provider's default is stricter (``^[a-zA-Z0-9-._+/!?#]{1,20}$``);
    pass ``pattern`` and ``max_length`` to get it.
    """

    max_length: int = 64
    pattern: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"max_length must be a positive integer, not {self.max_length!r}")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a regular expression: {exc}") from None

    def allows(self, message: str) -> bool:
        if not 1 <= len(message) <= self.max_length:
            return False
        if any(unicodedata.category(ch).startswith("C") for ch in message):
            return False
        return self.pattern is None or re.fullmatch(self.pattern, message) is not None


class Hooks:
    """What the application alone knows. Subclass it; :meth:`find_user` and
    :meth:`start_device` have no default. Any hook may raise :class:`Reject` to refuse the
    request with another reason (``ACCESS_DENIED``, ``UNAUTHORIZED_CLIENT``, ``INVALID_TARGET``);
    any other exception fails it with ``SERVER_ERROR`` (logged with its traceback).

    ::

        class MyHooks(Hooks):
            def find_user(self, request):
                return USERS.get(request.subject or request.hint)

            def start_device(self, user, pending):
                push_to_phone(user, pending.request.binding_message, pending.ticket)
    """

    #: The default :meth:`binding_message_valid` rule; replace it on a subclass or instance.
    binding_message_policy: BindingMessagePolicy = BindingMessagePolicy()

    def find_user(self, request: AuthenticationRequest) -> Any:
        """The user the hint names, or None (``unknown_user_id``). For ``login_hint_token``
        the app verifies the token itself; for ``id_token_hint`` the family already checked
        the signature and gives ``request.subject``."""
        raise NotImplementedError("Hooks.find_user: override it to look the hint's user up")

    def login_hint_token_expired(self, request: AuthenticationRequest) -> bool:
        """Whether the ``login_hint_token`` has expired (``expired_login_hint_token``).

        By default: the token's ``exp`` when it is a JWT whose payload carries a numeric
        one, else not expired. The signature is not checked here: that is
        :meth:`find_user`'s work.
        """
        parts = request.hint.split(".")
        if len(parts) != 3:
            return False
        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, binascii.Error):
            return False
        exp = payload.get("exp") if isinstance(payload, dict) else None
        return isinstance(exp, int | float) and not isinstance(exp, bool) and exp <= time.time()

    def user_code_valid(self, user: Any, request: AuthenticationRequest) -> bool:
        """Whether the user code is the user's (``invalid_user_code`` when not). Called only
        when a user code was sent; the family already refused a missing one for a client that
        requires it. By default a code is refused: a server that takes codes must check them."""
        return False

    def binding_message_valid(self, request: AuthenticationRequest) -> bool:
        """Whether the binding message can be shown (``invalid_binding_message`` when not).
        Called only when one was sent; by default :attr:`binding_message_policy`."""
        assert request.binding_message is not None
        return self.binding_message_policy.allows(request.binding_message)

    def check(self, user: Any, request: AuthenticationRequest) -> None:
        """The app's other rules, last before issue: raise :class:`Reject` to refuse. None by default."""

    def start_device(self, user: Any, pending: PendingRequest) -> None:
        """Reach the user's authentication device; the user's decision comes back later through
        :meth:`CibaEndpoints.complete` with ``pending.ticket``. Should return quickly: the
        client waits for its auth_req_id meanwhile."""
        raise NotImplementedError("Hooks.start_device: override it to reach the user's device")


@dataclass(frozen=True)
class Completion:
    """What :meth:`CibaEndpoints.complete` did: the family's ``action`` (``NO_ACTION`` for a
    poll client, ``NOTIFICATION`` for ping and push) and whether a notification was queued."""

    action: str
    notified: bool


class CompletionRefused(Exception):
    """The request cannot be completed: unknown ticket, already completed, expired, or the
    store failed. ``result_code`` is the family's."""

    def __init__(self, message: str, result_code: str) -> None:
        super().__init__(message)
        self.result_code = result_code


@dataclass
class CibaEndpoints:
    """The backchannel authentication endpoint, the token endpoint's CIBA grant and
    ``complete``, for one service, on a :class:`~ciba_middleware.core.FailApi` that serves
    the family (``CIBA_CLIENTS``).

    :param api: the fail API with its family, e.g. ``Settings.from_env().build_api().api``.
    :param service_id: the service whose clients and requests these endpoints serve.
    :param hooks: the application's :class:`Hooks`.
    :param notifier: delivers ping and push notifications
        (:class:`~ciba_middleware.ciba.delivery.Notifier`); None: only poll clients can be
        completed.
    :param server_error_status: the status of a ``server_error`` answer (as
        :func:`~ciba_middleware.client_response`).
    :param realm: the Basic realm of a 401's ``WWW-Authenticate``.
    :param fail: fails a ticket, given the ticket, the reason and the description, and
        returns what :func:`~ciba_middleware.client_response` reads (a ``FailResponse``, the
        API's JSON as a dict, or authlete-python's response); by default the api's own
        :meth:`~ciba_middleware.core.FailApi.fail`, in process. For a server that calls the
        fail API over HTTP instead.
    """

    api: FailApi
    service_id: str
    hooks: Hooks
    notifier: Notifier | None = None
    server_error_status: int = 500
    realm: str = "ciba"
    fail: Callable[[str, Reason, str | None], object] | None = None
    _headers: tuple[tuple[str, str], ...] = field(default=HEADERS, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.api.family is None:
            from ..errors import ConfigurationError

            raise ConfigurationError("CibaEndpoints needs the CIBA family: set CIBA_CLIENTS or CIBA_CLIENTS_FILE")
        if not 400 <= self.server_error_status <= 599:
            raise ValueError(f"server_error_status must be 400-599, not {self.server_error_status}")

    # -- the backchannel authentication endpoint ------------------------------------------

    def backchannel_authentication(self, request: EndpointRequest) -> ClientResponse:
        """``POST /backchannel/authentication`` (CIBA Core 7)."""
        read = self._read(request)
        if isinstance(read, ClientResponse):
            return read
        form, fields = read
        _, payload = self.api.call("backchannel/authentication", self.service_id, {"parameters": form, **fields})
        action = payload.get("action")
        if action != "USER_IDENTIFICATION":
            return self._refusal(payload, unauthorized="UNAUTHORIZED")
        ticket: str = payload["ticket"]
        asked = self._request(payload)
        try:
            user = self._run_hooks(asked)
        except Reject as rejected:
            log.info(
                "backchannel request of %s refused (ticket %s): %s",
                asked.client_id,
                ticket_hash(ticket),
                rejected.reason.value,
            )
            return self._fail(ticket, rejected.reason, rejected.description)
        except Exception:
            log.exception("a hook failed (ticket %s)", ticket_hash(ticket))
            return self._fail(ticket, Reason.SERVER_ERROR, "The authorization server failed; try again later.")
        _, issued = self.api.call("backchannel/authentication/issue", self.service_id, {"ticket": ticket})
        if issued.get("action") != "OK":
            log.error("issue failed for ticket %s: %s", ticket_hash(ticket), issued.get("resultCode"))
            return self._server_error()
        content = json.loads(issued["responseContent"])
        pending = PendingRequest(ticket, asked, user, time.time(), int(content["expires_in"]))
        try:
            self.hooks.start_device(user, pending)
        except Exception:
            # The ticket is issued: the fail API no longer knows it. Close the request so
            # that nothing waits for a device that was never reached.
            log.exception("start_device failed (ticket %s); the request is closed", ticket_hash(ticket))
            self.api.call(
                "backchannel/authentication/complete",
                self.service_id,
                {"ticket": ticket, "result": "TRANSACTION_FAILED", "errorDescription": "The device was not reached."},
            )
            return self._server_error()
        log.info("backchannel request of %s accepted (ticket %s)", asked.client_id, ticket_hash(ticket))
        return self._answer(200, issued["responseContent"])

    def _run_hooks(self, request: AuthenticationRequest) -> Any:
        hooks = self.hooks
        user = hooks.find_user(request)
        if user is None:
            raise Reject(Reason.UNKNOWN_USER_ID, "No user matches the hint.")
        if request.hint_type == "login_hint_token" and hooks.login_hint_token_expired(request):
            raise Reject(Reason.EXPIRED_LOGIN_HINT_TOKEN, "The login_hint_token has expired.")
        if request.user_code is not None and not hooks.user_code_valid(user, request):
            raise Reject(Reason.INVALID_USER_CODE, "The user code is wrong.")
        if request.binding_message is not None and not hooks.binding_message_valid(request):
            raise Reject(Reason.INVALID_BINDING_MESSAGE, "The binding_message cannot be shown.")
        hooks.check(user, request)
        return user

    def _request(self, payload: dict[str, Any]) -> AuthenticationRequest:
        expiry = payload.get("requestedExpiry") or None
        return AuthenticationRequest(
            service_id=self.service_id,
            client_id=payload.get("clientIdAlias") or str(payload["clientId"]),
            delivery_mode=str(payload.get("deliveryMode", "POLL")).lower(),
            hint_type=_HINT_NAMES[payload["hintType"]],
            hint=payload["hint"],
            subject=payload.get("sub"),
            scopes=tuple(s["name"] for s in payload.get("scopes") or ()),
            acr_values=tuple(payload.get("acrs") or ()),
            # A parameter sent empty is one not sent (RFC 6749 3.1).
            binding_message=payload.get("bindingMessage") or None,
            user_code=payload.get("userCode") or None,
            user_code_required=bool(payload.get("userCodeRequired")),
            requested_expiry=int(expiry) if expiry else None,
            resources=tuple(payload.get("resources") or ()),
        )

    def _fail(self, ticket: str, reason: Reason, description: str | None) -> ClientResponse:
        if self.fail is not None:
            failed = self.fail(ticket, reason, description)
        else:
            failed = self.api.fail(self.service_id, ticket, reason, description)
        return client_response(failed, server_error_status=self.server_error_status)

    # -- the token endpoint -----------------------------------------------------------------

    def token(self, request: EndpointRequest) -> ClientResponse:
        """``POST /token`` for the CIBA grant (CIBA Core 10.1); other grants get
        ``unsupported_grant_type``."""
        read = self._read(request)
        if isinstance(read, ClientResponse):
            return read
        form, fields = read
        _, payload = self.api.call("auth/token", self.service_id, {"parameters": form, **fields})
        if payload.get("action") == "OK":
            return self._answer(200, payload["responseContent"])
        return self._refusal(payload, unauthorized="INVALID_CLIENT")

    # -- the user's decision ----------------------------------------------------------------

    def complete(
        self,
        ticket: str,
        result: str,
        *,
        subject: str | None = None,
        auth_time: int | None = None,
        acr: str | None = None,
        claims: dict[str, Any] | None = None,
        scopes: list[str] | None = None,
        error_description: str | None = None,
        error_uri: str | None = None,
    ) -> Completion:
        """Record the user's decision on the request of ``ticket`` (from :class:`PendingRequest`).

        ``result`` is ``AUTHORIZED`` (with ``subject``), ``ACCESS_DENIED`` or
        ``TRANSACTION_FAILED`` (the client gets ``expired_token``). A ping or push client's
        notification goes to the notifier, off this thread. Raises
        :class:`CompletionRefused` when the request cannot be completed, and
        :class:`ValueError` for a bad argument.
        """
        if result not in _RESULTS:
            raise ValueError(f"result must be one of {', '.join(_RESULTS)}, not {result!r}")
        if result == "AUTHORIZED" and not subject:
            raise ValueError("an AUTHORIZED result needs the user's subject")
        fields: dict[str, Any] = {"ticket": ticket, "result": result}
        for name, value in (
            ("subject", subject),
            ("authTime", auth_time),
            ("acr", acr),
            ("claims", claims),
            ("scopes", scopes),
            ("errorDescription", error_description),
            ("errorUri", error_uri),
        ):
            if value is not None:
                fields[name] = value
        status, payload = self.api.call("backchannel/authentication/complete", self.service_id, fields)
        action = payload.get("action")
        if status != 200 or action not in ("NO_ACTION", "NOTIFICATION"):
            message = str(payload.get("resultMessage", "complete failed"))
            raise CompletionRefused(message, str(payload.get("resultCode")))
        if action == "NO_ACTION":
            return Completion("NO_ACTION", False)
        if self.notifier is None:
            log.error(
                "the request of ticket %s needs a %s notification, but no notifier is configured: it is lost",
                ticket_hash(ticket),
                payload.get("deliveryMode", "").lower(),
            )
            return Completion("NOTIFICATION", False)
        from .delivery import Notification

        queued = self.notifier.submit(
            Notification(
                service_id=self.service_id,
                client_id=payload.get("clientIdAlias") or str(payload.get("clientId")),
                mode=str(payload.get("deliveryMode", "")).lower(),
                endpoint=payload["clientNotificationEndpoint"],
                token=payload["clientNotificationToken"],
                body=payload["responseContent"],
                ticket_hash=ticket_hash(ticket),
            )
        )
        return Completion("NOTIFICATION", queued)

    # -- shared -----------------------------------------------------------------------------

    def _read(self, request: EndpointRequest) -> tuple[str, dict[str, str]] | ClientResponse:
        """The form, and the client's credentials from Basic (RFC 6749 2.3.1), or the answer
        refusing the request."""
        media = request.content_type.partition(";")[0].strip().lower()
        if media != _FORM:
            return self._error(400, "invalid_request", f"The request body must be {_FORM}.")
        try:
            form = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(400, "invalid_request", "The request body is not UTF-8.")
        scheme, _, credentials = request.authorization.strip().partition(" ")
        if not scheme:
            return form, {}
        if scheme.lower() != "basic":
            return self._error(401, "invalid_client", "Authenticate the client with HTTP Basic or the form.")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return self._error(401, "invalid_client", "The Basic credentials are malformed.")
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            return self._error(401, "invalid_client", "The Basic credentials are malformed.")
        sent = {name for name, _ in parse_qsl(form, keep_blank_values=True)}
        if "client_secret" in sent or "client_assertion" in sent:
            return self._error(400, "invalid_request", "Use one client authentication method only.")
        return form, {"clientId": unquote_plus(client_id), "clientSecret": unquote_plus(secret)}

    def _refusal(self, payload: dict[str, Any], *, unauthorized: str) -> ClientResponse:
        action = payload.get("action")
        content = payload.get("responseContent")
        if action == "BAD_REQUEST" and content:
            return self._answer(400, content)
        if action == unauthorized and content:
            return self._answer(401, content, (("WWW-Authenticate", f'Basic realm="{self.realm}"'),))
        if action not in ("INTERNAL_SERVER_ERROR", None):
            log.error("unexpected action %s (%s)", action, payload.get("resultCode"))
        return self._server_error()

    def _server_error(self) -> ClientResponse:
        return self._error(self.server_error_status, "server_error", "The authorization server failed; try again.")

    def _error(self, status: int, error: str, description: str) -> ClientResponse:
        body = json.dumps({"error": error, "error_description": description}, separators=(",", ":"))
        extra = (("WWW-Authenticate", f'Basic realm="{self.realm}"'),) if status == 401 else ()
        return self._answer(status, body, extra)

    def _answer(self, status: int, body: str, extra: tuple[tuple[str, str], ...] = ()) -> ClientResponse:
        return ClientResponse(status, [*self._headers, *extra], body)
