"""Authlete's CIBA API family, without a transport: :class:`Family`.

:meth:`Family.handle` takes a route's name, the service (the caller already authenticated
and covering it: :class:`~ciba_middleware.core.FailApi` did that) and the request's fields,
and gives a :class:`~ciba_middleware.ciba.answers.Reply` or raises a
:class:`~ciba_middleware.ciba.answers.FamilyError`. The sequence (authlete-java-jaxrs's)::

    backchannel/authentication -> USER_IDENTIFICATION + ticket     (the ticket store's ticket)
    [backchannel/authentication/fail, served by the fail API]
    backchannel/authentication/issue -> OK + auth_req_id            (store.delete takes the ticket)
    auth/token (poll, ping) -> authorization_pending / slow_down / ... / OK + tokens
    backchannel/authentication/complete -> NO_ACTION / NOTIFICATION
    auth/introspection -> OK + usable ...

The ticket lives in the ticket store, as every ticket does, so ``delete`` decides
atomically between a fail call and an issue: a failed ticket cannot be issued, an issued
one is unknown to the fail API. The request's details and state are records
(:mod:`~ciba_middleware.ciba.records`).
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, unquote

from ..errors import ConfigurationError, StoreError
from ..stores.base import RecordStore, TicketStore, well_formed
from .answers import ApiAction, FamilyError, Reply, StoreDown, error_content, wired
from .clients import Client, ClientRegistry
from .keys import SigningKey
from .records import Records, State, digest_key, encode, pending_state, request_key

__all__ = ["GRANT_TYPE", "Family", "FamilyOptions"]

GRANT_TYPE = "urn:openid:params:grant-type:ciba"
#: The ID token claim naming the request in push mode (CIBA Core 10.3.1).
AUTH_REQ_ID_CLAIM = "urn:openid:params:jwt:claim:auth_req_id"
#: Seconds a request's state is kept after it expires, so that a late poll gets
#: ``expired_token`` rather than ``invalid_grant``.
RETAIN_EXPIRED = 600
#: The largest ``requested_expiry`` a client may ask for: a day.
MAX_REQUESTED_EXPIRY = 86400
#: CIBA Core 7.1 leaves the notification token's length open; oidc-provider and Keycloak take 1024.
MAX_NOTIFICATION_TOKEN = 1024
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_DIGITS = re.compile(r"[0-9]{1,10}")
_HINTS = (("login_hint", "LOGIN_HINT"), ("login_hint_token", "LOGIN_HINT_TOKEN"), ("id_token_hint", "ID_TOKEN_HINT"))
# Parameters a client may send once only (RFC 6749 3.1); ``resource`` repeats (RFC 8707).
_REPEATABLE = frozenset({"resource"})
_RESULTS = ("AUTHORIZED", "ACCESS_DENIED", "TRANSACTION_FAILED")
#: The CIBA grant type escaped as ``urlencode`` escapes it, with upper- and lowercase hex.
_ESCAPED = {quote(GRANT_TYPE, safe=""): GRANT_TYPE, quote(GRANT_TYPE, safe="").lower(): GRANT_TYPE}
# Claims of the ID token that a complete call's ``claims`` cannot replace.
_RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "auth_time", "at_hash", "nonce", "acr", "azp"})


@dataclass(frozen=True)
class FamilyOptions:
    """The family's settings (``CIBA_*`` variables, :mod:`ciba_middleware.config`)."""

    #: ``iss`` of the ID tokens (``CIBA_ISSUER``).
    issuer: str
    #: Seconds an auth_req_id lives when the client asks no ``requested_expiry``.
    auth_req_id_lifetime: int = 600
    #: Seconds a client must wait between two polls (``interval``).
    interval: int = 5
    #: Seconds an access token lives; ID tokens live as long.
    access_token_lifetime: int = 3600
    #: Discovery fields answered by ``/service/configuration`` when set.
    jwks_uri: str | None = None
    token_endpoint: str | None = None
    backchannel_authentication_endpoint: str | None = None


class Family:
    """The family's handlers on one store, one set of clients and one signing key.

    :param store: a :class:`TicketStore` that is also a :class:`RecordStore`.
    :param clients: the clients, or a callable giving those in force (a reloading file).
    """

    def __init__(
        self,
        *,
        store: TicketStore,
        clients: ClientRegistry | Callable[[], ClientRegistry],
        key: SigningKey,
        options: FamilyOptions,
    ) -> None:
        if not isinstance(store, RecordStore):
            raise ConfigurationError(
                f"the CIBA family keeps records, which the store {type(store).__name__} cannot "
                "(it has no add/get/swap/take); use a memory, sqlite, redis or postgresql store"
            )
        self.tickets = store
        self.records = Records(store)
        self._clients = clients if callable(clients) else (lambda: clients)
        self.key = key
        self.options = options
        self._handlers: dict[str, Callable[[str, Mapping[str, Any]], Reply]] = {
            "backchannel/authentication": self.authentication,
            "backchannel/authentication/issue": self.issue,
            "backchannel/authentication/complete": self.complete,
            "auth/token": self.token,
            "auth/introspection": self.introspection,
            "service/jwks/get": self.jwks,
            "service/configuration": self.configuration,
        }

    @property
    def clients(self) -> ClientRegistry:
        return self._clients()

    def handle(self, endpoint: str, service: str, fields: Mapping[str, Any]) -> Reply:
        """Answer one call of ``endpoint`` (a key of :data:`ENDPOINTS`) for ``service``."""
        return self._handlers[endpoint](service, fields)

    # -- /backchannel/authentication ------------------------------------------------------

    def authentication(self, service: str, fields: Mapping[str, Any]) -> Reply:
        """Authenticate the client, check its request, and make a ticket (CIBA Core 7)."""
        raw = _string(fields, "parameters", required=True)
        assert raw is not None
        client_id = _string(fields, "clientId")
        client_secret = _string(fields, "clientSecret")

        def client_error(action: ApiAction, error: str, description: str, code: str) -> Reply:
            return _client_error(179, "the backchannel authentication request", action, error, description, code)

        try:
            params = _form(raw)
        except ValueError as exc:
            return client_error(ApiAction.BAD_REQUEST, "invalid_request", str(exc), "301")
        client_id = client_id or _one(params, "client_id")
        client_secret = client_secret or _one(params, "client_secret")
        client = None
        if client_id and client_secret is not None:
            client = self.clients.authenticate(service, client_id, client_secret)
        if client is None:
            return client_error(ApiAction.UNAUTHORIZED, "invalid_client", "client authentication failed", "303")
        if "request" in params or "request_uri" in params:
            return client_error(
                ApiAction.BAD_REQUEST, "invalid_request", "signed authentication requests are not supported", "301"
            )
        scope = _one(params, "scope")
        if not scope:
            return client_error(ApiAction.BAD_REQUEST, "invalid_request", "scope is missing", "301")
        scopes = list(dict.fromkeys(scope.split()))
        if "openid" not in scopes:
            return client_error(ApiAction.BAD_REQUEST, "invalid_scope", "scope must include openid", "302")
        if client.scopes is not None and not client.scopes.issuperset(scopes):
            return client_error(
                ApiAction.BAD_REQUEST, "invalid_scope", "a requested scope is not allowed for this client", "302"
            )
        given = [(name, kind) for name, kind in _HINTS if _one(params, name)]
        if len(given) != 1:
            what = "no hint" if not given else "more than one hint"
            return client_error(
                ApiAction.BAD_REQUEST,
                "invalid_request",
                f"{what}: send exactly one of login_hint, login_hint_token, id_token_hint",
                "301",
            )
        ((hint_name, hint_type),) = given
        hint = _one(params, hint_name)
        sub = None
        if hint_type == "ID_TOKEN_HINT":
            claims = self.key.verify(hint or "")
            if claims is None or not isinstance(claims.get("sub"), str):
                return client_error(
                    ApiAction.BAD_REQUEST, "invalid_request", "id_token_hint is not an ID token of this server", "301"
                )
            sub = claims["sub"]
        notification_token = _one(params, "client_notification_token")
        if client.delivery_mode != "poll":
            if not notification_token:
                return client_error(
                    ApiAction.BAD_REQUEST,
                    "invalid_request",
                    f"client_notification_token is required in {client.delivery_mode} mode",
                    "301",
                )
            if len(notification_token) > MAX_NOTIFICATION_TOKEN or not _B64TOKEN.fullmatch(notification_token):
                return client_error(
                    ApiAction.BAD_REQUEST,
                    "invalid_request",
                    f"client_notification_token must be a bearer token of at most {MAX_NOTIFICATION_TOKEN} characters",
                    "301",
                )
        user_code = _one(params, "user_code")
        if client.user_code_required and not user_code:
            return client_error(ApiAction.BAD_REQUEST, "missing_user_code", "user_code is required", "304")
        requested_expiry = 0
        expiry = _one(params, "requested_expiry")
        if expiry is not None:
            if not _DIGITS.fullmatch(expiry) or not 0 < int(expiry) <= MAX_REQUESTED_EXPIRY:
                return client_error(
                    ApiAction.BAD_REQUEST,
                    "invalid_request",
                    f"requested_expiry must be a whole number of seconds from 1 to {MAX_REQUESTED_EXPIRY}",
                    "301",
                )
            requested_expiry = int(expiry)
        acrs = (_one(params, "acr_values") or "").split() or None
        resources = params.get("resource") or None
        binding_message = _one(params, "binding_message")
        lifetime = requested_expiry or self.options.auth_req_id_lifetime
        request = {
            "client": client.client_id,
            "scopes": scopes,
            "acrs": acrs,
            "hint_type": hint_type,
            "sub": sub,
            "binding_message": binding_message,
            "notification_token": notification_token,
            "resources": resources,
            "lifetime": lifetime,
        }
        try:
            ticket = self.tickets.issue(service, lifetime)
        except StoreError as exc:
            raise StoreDown(f"the ticket store failed: {exc}") from exc
        self.records.add(service, request_key(ticket), request, lifetime)
        body = {
            "resultCode": "A179001",
            "resultMessage": "[A179001] The backchannel authentication request was processed successfully.",
            "action": ApiAction.USER_IDENTIFICATION.value,
            "responseContent": None,
            **client.wire(),
            "deliveryMode": client.delivery_mode.upper(),
            "scopes": [{"name": name, "defaultEntry": False} for name in scopes],
            "claimNames": None,
            "clientNotificationToken": notification_token,
            "acrs": acrs,
            "hintType": hint_type,
            "hint": hint,
            "sub": sub,
            "bindingMessage": binding_message,
            "userCode": user_code,
            "userCodeRequired": client.user_code_required,
            "requestedExpiry": requested_expiry,
            "requestContext": None,
            "resources": resources,
            "warnings": None,
            "ticket": ticket,
        }
        return Reply(body, ApiAction.USER_IDENTIFICATION, "A179001", ticket)

    # -- /backchannel/authentication/issue -------------------------------------------------

    def issue(self, service: str, fields: Mapping[str, Any]) -> Reply:
        """Take the ticket and give the request its auth_req_id (CIBA Core 7.3)."""
        ticket = _string(fields, "ticket", required=True)
        assert ticket is not None
        if not well_formed(ticket):
            return _invalid_ticket(ticket)
        try:
            # The same delete as a fail call's: of the two, exactly one gets the ticket.
            taken = self.tickets.delete(service, ticket)
        except StoreError as exc:
            raise StoreDown(f"the ticket store failed: {exc}") from exc
        found = self.records.get(service, request_key(ticket)) if taken else None
        if found is None:
            return _invalid_ticket(ticket)
        request, raw = found
        client = self.clients.find(service, request["client"])
        if client is None:  # removed from the configuration since
            return _invalid_ticket(ticket)
        auth_req_id = secrets.token_urlsafe(32)
        lifetime = int(request["lifetime"])
        interval = self.options.interval if client.delivery_mode != "push" else 0
        now = time.time()
        state = pending_state(
            request, client=client.client_id, mode=client.delivery_mode, now=now, lifetime=lifetime, interval=interval
        )
        self.records.add(service, digest_key("arid", auth_req_id), state, lifetime + RETAIN_EXPIRED)
        # The request keeps its auth_req_id for complete, which names the ticket, as long
        # as the state: a late complete is told the request expired.
        with_id = {**request, "auth_req_id": auth_req_id}
        if not self.records.swap(service, request_key(ticket), raw, with_id, lifetime + RETAIN_EXPIRED):
            return _invalid_ticket(ticket)
        content = {"auth_req_id": auth_req_id, "expires_in": lifetime}
        if interval:
            content["interval"] = interval
        body = {
            **_result(186, "001", "The auth_req_id was issued."),
            "action": ApiAction.OK.value,
            "responseContent": json.dumps(content, separators=(",", ":")),
            "authReqId": auth_req_id,
            "expiresIn": lifetime,
            "interval": interval,
        }
        return Reply(body, ApiAction.OK, body["resultCode"], ticket)

    # -- /backchannel/authentication/complete ----------------------------------------------

    def complete(self, service: str, fields: Mapping[str, Any]) -> Reply:
        """Record the user's decision; for ping and push, what to send the client (CIBA Core 10)."""
        ticket = _string(fields, "ticket", required=True)
        result = _string(fields, "result", required=True)
        assert ticket is not None
        assert result is not None
        if result not in _RESULTS:
            raise FamilyError(f"'result' must be one of {', '.join(_RESULTS)}, not {_shown(result)}.", "202")
        subject = _string(fields, "subject")
        if result == "AUTHORIZED" and not subject:
            raise FamilyError("'subject' is required when 'result' is AUTHORIZED.", "202")
        auth_time = _integer(fields, "authTime")
        acr = _string(fields, "acr")
        claims = _claims(fields)
        scopes = _string_list(fields, "scopes")
        description = _string(fields, "errorDescription")
        error_uri = _string(fields, "errorUri")
        found = self.records.get(service, request_key(ticket)) if well_formed(ticket) else None
        if found is None:
            raise FamilyError("the ticket is unknown, expired or already completed.", "203")
        request, _ = found
        auth_req_id = request.get("auth_req_id")
        if not isinstance(auth_req_id, str):
            raise FamilyError("the ticket has not been issued an auth_req_id yet (call issue first).", "204")
        client = self.clients.find(service, request["client"])
        if client is None:
            raise FamilyError("the ticket's client is no longer configured.", "203")
        now = time.time()
        decision = {
            "AUTHORIZED": "authorized",
            "ACCESS_DENIED": "denied",
            "TRANSACTION_FAILED": "failed",
        }[result]

        def decide(state: State) -> tuple[State | None, str]:
            if state.state != "pending":
                return None, "decided"
            if now >= state.expires_at:
                return None, "expired"
            details = {**state.more(), "error_description": description, "error_uri": error_uri}
            kind = decision
            if decision == "authorized":
                granted = scopes if scopes is not None else details["scopes"]
                details.update(
                    subject=subject,
                    auth_time=auth_time or int(now),
                    acr=acr,
                    claims=claims,
                    scopes=granted,
                )
                if client.delivery_mode == "push":
                    kind = "used"  # the tokens go out in this answer
            return state._replace(state=kind, details=encode(details)), "ok"

        found_state, outcome = self.records.change(service, digest_key("arid", auth_req_id), decide)
        if found_state is None or outcome == "expired":
            raise FamilyError("the request has expired.", "205")
        if outcome == "decided":
            raise FamilyError("the request was already completed.", "206")
        state = found_state.more()
        self.records.take(service, request_key(ticket))
        body: dict[str, Any] = {
            # Authlete's order: the result and the action first (filled in below).
            "resultCode": None,
            "resultMessage": None,
            "action": None,
            "responseContent": None,
            **client.wire(),
            "deliveryMode": client.delivery_mode.upper(),
            "clientNotificationEndpoint": client.notification_endpoint,
            "clientNotificationToken": state["notification_token"],
            "authReqId": auth_req_id,
            "accessToken": None,
            "idToken": None,
            "accessTokenDuration": 0,
            "idTokenDuration": 0,
            "refreshToken": None,
            "refreshTokenDuration": 0,
            "jwtAccessToken": None,
            "resources": state["resources"],
        }
        if client.delivery_mode == "poll":
            body.update(_result(187, "001", "The result was recorded; the client polls for it."))
            body.update(action=ApiAction.NO_ACTION.value, responseContent=None)
            return Reply(body, ApiAction.NO_ACTION, body["resultCode"], ticket)
        if client.delivery_mode == "ping":
            content = json.dumps({"auth_req_id": auth_req_id}, separators=(",", ":"))
        elif decision == "authorized":
            granted = scopes if scopes is not None else state["scopes"]
            tokens = self._tokens(
                service, client, subject or "", granted, auth_time or int(now), acr, claims, auth_req_id, now
            )
            content = json.dumps({**tokens.content, "auth_req_id": auth_req_id}, separators=(",", ":"))
            body.update(
                accessToken=tokens.content["access_token"],
                idToken=tokens.content["id_token"],
                accessTokenDuration=self.options.access_token_lifetime,
                idTokenDuration=self.options.access_token_lifetime,
            )
        else:
            error = "access_denied" if decision == "denied" else "expired_token"
            content = json.dumps(
                {"auth_req_id": auth_req_id, **json.loads(error_content(error, description, error_uri))},
                separators=(",", ":"),
            )
        body.update(_result(187, "002", "The result was recorded; notify the client."))
        body.update(action=ApiAction.NOTIFICATION.value, responseContent=content)
        return Reply(body, ApiAction.NOTIFICATION, body["resultCode"], ticket)

    # -- /auth/token -----------------------------------------------------------------------

    def token(self, service: str, fields: Mapping[str, Any]) -> Reply:
        """The token endpoint's CIBA grant (CIBA Core 10.1, 11); any other grant is refused."""
        raw = _string(fields, "parameters", required=True)
        assert raw is not None
        try:
            params = _form(raw)
        except ValueError as exc:
            return _token_error(ApiAction.BAD_REQUEST, "invalid_request", str(exc), "301")
        grant_type = _one(params, "grant_type")
        if not grant_type:
            return _token_error(ApiAction.BAD_REQUEST, "invalid_request", "grant_type is missing", "301")
        if grant_type != GRANT_TYPE:
            return _token_error(
                ApiAction.BAD_REQUEST,
                "unsupported_grant_type",
                f"only the CIBA grant ({GRANT_TYPE}) is served here",
                "302",
            )
        client_id = _string(fields, "clientId") or _one(params, "client_id")
        client_secret = _string(fields, "clientSecret") or _one(params, "client_secret")
        client = None
        if client_id and client_secret is not None:
            client = self.clients.authenticate(service, client_id, client_secret)
        if client is None:
            return _token_error(ApiAction.INVALID_CLIENT, "invalid_client", "client authentication failed", "303")
        auth_req_id = _one(params, "auth_req_id")
        if not auth_req_id:
            return _token_error(ApiAction.BAD_REQUEST, "invalid_request", "auth_req_id is missing", "301")
        now = time.time()

        def decide(state: State) -> tuple[State | None, Reply | None]:
            if state.client != client.client_id or state.mode == "push" or state.state == "used":
                return None, _INVALID_GRANT
            if now >= state.expires_at:
                return None, _EXPIRED
            kind = state.state
            if kind == "denied":
                description = state.more().get("error_description") or "the user denied the request"
                return None, _token_error(ApiAction.BAD_REQUEST, "access_denied", description, "307")
            if kind == "failed":
                description = state.more().get("error_description") or "the request failed"
                return None, _token_error(ApiAction.BAD_REQUEST, "expired_token", description, "306")
            if kind == "authorized":
                return state._replace(state="used"), None
            if not state.interval:  # no interval, no slow_down: nothing to remember
                return None, _PENDING
            last = state.last_poll
            polled = state._replace(last_poll=now)
            if last is not None and now - last < state.interval:
                return polled, _slow_down(state.interval)
            return polled, _PENDING

        found, refusal = self.records.change(service, digest_key("arid", auth_req_id), decide)
        if found is None:
            return _INVALID_GRANT
        if refusal is not None:
            return refusal
        state = found.more()
        tokens = self._tokens(
            service,
            client,
            state["subject"],
            state["scopes"],
            state["auth_time"],
            state.get("acr"),
            state.get("claims"),
            None,
            now,
        )
        body = {
            **_result(188, "001", "The token request was processed successfully."),
            "action": ApiAction.OK.value,
            "responseContent": json.dumps(tokens.content, separators=(",", ":")),
            "accessToken": tokens.content["access_token"],
            "accessTokenDuration": self.options.access_token_lifetime,
            "accessTokenExpiresAt": tokens.expires_at_ms,
            "idToken": tokens.content["id_token"],
            "grantType": "CIBA",
            **client.wire(),
            "subject": state["subject"],
            "scopes": state["scopes"],
            "resources": state.get("resources"),
            "clientAuthMethod": "CLIENT_SECRET_POST" if _one(params, "client_secret") else "CLIENT_SECRET_BASIC",
        }
        return Reply(body, ApiAction.OK, body["resultCode"])

    # -- /auth/introspection ---------------------------------------------------------------

    def introspection(self, service: str, fields: Mapping[str, Any]) -> Reply:
        """What a resource server needs to know about an access token this family issued."""
        token = _string(fields, "token")
        wanted = _string_list(fields, "scopes")
        wanted_subject = _string(fields, "subject")

        def refuse(action: ApiAction, error: str, description: str, code: str) -> Reply:
            body = _result(189, code, f"The access token is not usable: {error}.")
            body.update(
                action=action.value,
                responseContent=f'Bearer error="{error}",error_description="{description}"',
                usable=False,
                existent=code != "302",
                sufficient=False,
            )
            return Reply(body, action, body["resultCode"])

        if not token:
            return refuse(ApiAction.BAD_REQUEST, "invalid_request", "A token is required.", "301")
        found = self.records.get(service, digest_key("at", token))
        if found is None:
            return refuse(ApiAction.UNAUTHORIZED, "invalid_token", "The access token is unknown or expired.", "302")
        record, _ = found
        if wanted is not None and not set(wanted) <= set(record["scopes"]):
            return refuse(ApiAction.FORBIDDEN, "insufficient_scope", "The access token lacks a required scope.", "303")
        if wanted_subject is not None and wanted_subject != record["subject"]:
            return refuse(ApiAction.FORBIDDEN, "invalid_token", "The access token is another subject's.", "304")
        client = self.clients.find(service, record["client"])
        wire = client.wire() if client is not None else {"clientId": record["client_number"]}
        body = {
            "resultCode": "A056001",
            "resultMessage": "[A056001] The access token is valid.",
            "action": ApiAction.OK.value,
            "responseContent": None,
            **wire,
            "subject": record["subject"],
            "scopes": record["scopes"],
            "existent": True,
            "usable": True,
            "sufficient": True,
            "refreshable": False,
            "expiresAt": record["expires_at_ms"],
            "acr": record.get("acr"),
            "authTime": record.get("auth_time") or 0,
            "grantType": "CIBA",
            "resources": record.get("resources"),
        }
        return Reply(body, ApiAction.OK, "A056001")

    # -- /service/jwks/get, /service/configuration -----------------------------------------

    def jwks(self, service: str, fields: Mapping[str, Any]) -> Reply:
        """The ID tokens' public key, as a JWK Set (the body itself, as Authlete answers it)."""
        return Reply(self.key.jwks(), None, "A190001")

    def configuration(self, service: str, fields: Mapping[str, Any]) -> Reply:
        """The discovery metadata the family serves (OpenID Connect Discovery 3, CIBA Core 4)."""
        options = self.options
        body: dict[str, Any] = {"issuer": options.issuer}
        if options.jwks_uri:
            body["jwks_uri"] = options.jwks_uri
        if options.token_endpoint:
            body["token_endpoint"] = options.token_endpoint
        if options.backchannel_authentication_endpoint:
            body["backchannel_authentication_endpoint"] = options.backchannel_authentication_endpoint
        body.update(
            {
                "grant_types_supported": [GRANT_TYPE],
                "backchannel_token_delivery_modes_supported": ["poll", "ping", "push"],
                "backchannel_user_code_parameter_supported": True,
                "id_token_signing_alg_values_supported": [self.key.alg],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "subject_types_supported": ["public"],
                "scopes_supported": ["openid"],
            }
        )
        return Reply(body, None, "A191001")

    # -- tokens ----------------------------------------------------------------------------

    def _tokens(
        self,
        service: str,
        client: Client,
        subject: str,
        scopes: list[str],
        auth_time: int,
        acr: str | None,
        claims: dict[str, Any] | None,
        auth_req_id: str | None,
        now: float,
    ) -> _Tokens:
        """A new access token (stored as its digest) and its ID token: the token response."""
        lifetime = self.options.access_token_lifetime
        access_token = secrets.token_urlsafe(32)
        expires_at_ms = int((now + lifetime) * 1000)
        record = {
            "client": client.client_id,
            "client_number": client.number,
            "subject": subject,
            "scopes": scopes,
            "expires_at_ms": expires_at_ms,
            "auth_time": auth_time,
            "acr": acr,
        }
        self.records.add(service, digest_key("at", access_token), record, lifetime)
        id_claims: dict[str, Any] = {k: v for k, v in (claims or {}).items() if k not in _RESERVED_CLAIMS}
        id_claims.update(
            iss=self.options.issuer,
            sub=subject,
            aud=client.client_id,
            exp=int(now) + lifetime,
            iat=int(now),
            auth_time=auth_time,
            at_hash=self.key.half_hash(access_token),
        )
        if acr:
            id_claims["acr"] = acr
        if auth_req_id is not None:
            id_claims[AUTH_REQ_ID_CLAIM] = auth_req_id
        content = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": " ".join(scopes),
            "id_token": self.key.sign(id_claims),
        }
        return _Tokens(content, expires_at_ms)


@dataclass(frozen=True)
class _Tokens:
    content: dict[str, Any]
    expires_at_ms: int


# -- reading fields -----------------------------------------------------------------------


def _result(number: int, code: str, message: str) -> dict[str, Any]:
    result_code = f"A{number}{code}"
    return {"resultCode": result_code, "resultMessage": f"[{result_code}] {message}"}


@functools.lru_cache(maxsize=256)
def _client_error(number: int, request: str, action: ApiAction, error: str, description: str, code: str) -> Reply:
    """A route's refusal of the client's request: ``action`` with the client's ``error`` in
    ``responseContent``, and a result code of the route (``number``).

    Remembered, as :func:`~ciba_middleware.ciba.answers.error_content` is, with its answer's
    bytes (:func:`~ciba_middleware.ciba.answers.wired`): every pending poll gets the same
    answer. The body is shared, so it is read-only."""
    body = _result(number, code, f"{request} is refused: {error}.")
    body.update(action=action.value, responseContent=error_content(error, description))
    return wired(Reply(MappingProxyType(body), action, body["resultCode"]))


def _token_error(action: ApiAction, error: str, description: str, code: str) -> Reply:
    """The token endpoint's refusal of the client's request (:func:`_client_error`)."""
    return _client_error(188, "The token request", action, error, description, code)


# The token poll's usual answers, made once.
_INVALID_GRANT = _token_error(
    ApiAction.BAD_REQUEST, "invalid_grant", "the auth_req_id is unknown, used or not this client's", "308"
)
_PENDING = _token_error(ApiAction.BAD_REQUEST, "authorization_pending", "the user has not decided yet", "304")
_EXPIRED = _token_error(ApiAction.BAD_REQUEST, "expired_token", "the auth_req_id has expired", "306")


def _slow_down(interval: int) -> Reply:
    return _token_error(ApiAction.BAD_REQUEST, "slow_down", f"poll at most every {interval} seconds", "305")


def _invalid_ticket(ticket: str) -> Reply:
    body = {
        **_result(186, "301", "The ticket is unknown, expired, failed or already issued."),
        "action": ApiAction.INVALID_TICKET.value,
        "responseContent": None,
        "authReqId": None,
        "expiresIn": 0,
        "interval": 0,
    }
    return Reply(body, ApiAction.INVALID_TICKET, body["resultCode"], ticket)


def _shown(value: str, limit: int = 40) -> str:
    return json.dumps(value if len(value) <= limit else value[:limit] + "...")


def _string(fields: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    """A string field; absent, null and (unless required) "" alike are None."""
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise FamilyError(f"'{name}' is required.", "201")
        return None
    if not isinstance(value, str):
        raise FamilyError(f"'{name}' must be a string.", "202")
    return value


def _integer(fields: Mapping[str, Any], name: str) -> int:
    value = fields.get(name)
    if value is None or value == "":
        return 0
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FamilyError(f"'{name}' must be a whole number of seconds.", "202")
    return value


def _string_list(fields: Mapping[str, Any], name: str) -> list[str] | None:
    """A list of strings (a form gives them space-separated)."""
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FamilyError(f"'{name}' must be a list of strings.", "202")
    return list(value)


def _claims(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """``claims``: a JSON object, as text (Authlete's type) or already an object."""
    value = fields.get("claims")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise FamilyError("'claims' must be a JSON object.", "202") from None
    if not isinstance(value, dict):
        raise FamilyError("'claims' must be a JSON object.", "202")
    return value


def _form(raw: str) -> dict[str, list[str]]:
    """The client's form (``parameters``); a parameter sent twice is refused (RFC 6749 3.1).

    What ``parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw), errors="strict")``
    gives, with the same errors, in one pass: a token poll's form has two or three fields,
    and the general function's own work was a fifth of a poll's time. A field that is not
    ``name=value`` or whose escapes are not UTF-8 is reported before a repeated name, as
    when every pair was parsed first.
    """
    params: dict[str, list[str]] = {}
    if not raw:
        return params
    repeated = None
    for field in raw.split("&"):
        name, equals, value = field.partition("=")
        if not equals:
            raise ValueError(f"the request body is not a valid form: bad query field: {field!r}")
        if "%" in name or "+" in name:
            name = _unquoted(name)
        if "%" in value or "+" in value:
            value = _unquoted(value)
        values = params.get(name)
        if values is None:
            params[name] = [value]
        else:
            if repeated is None and name not in _REPEATABLE:
                repeated = name
            values.append(value)
    if repeated is not None:
        raise ValueError(f"{repeated} is given more than once")
    return params


def _unquoted(text: str) -> str:
    """A form's name or value with ``+`` and ``%XX`` decoded (strict UTF-8).

    The grant type, escaped as clients send it in every poll, is looked up instead; nothing
    else is remembered, so no client's secret stays in the process."""
    known = _ESCAPED.get(text)
    if known is not None:
        return known
    try:
        return unquote(text.replace("+", " "), "utf-8", "strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the request body is not a valid form: {exc}") from None


def _one(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None
