"""``POST /backchannel/authentication``: the CIBA backchannel authentication endpoint (CIBA Core 7).

The request goes through two stages, as with Authlete's ``/backchannel/authentication`` API:

1. The endpoint checks the request itself: client authentication (``invalid_client``, 401),
   the form (``invalid_request``) and the scope (``invalid_scope``). These errors are
   answered here, with no ticket and no fail call.
2. The request is well-formed: a ticket is issued, and the authorization server's own
   rules run (client registered for CIBA, resources, hint expiry, user, consent, user code,
   binding message, device). Each rule that rejects the request raises
   :class:`ciba_middleware.flask.BackchannelFail` with the ticket, so the request is
   failed through the fail API, the ticket is deleted, and the client gets the answer
   built from the API's ``action`` and ``responseContent``. Any unexpected exception in
   this stage fails the request with ``SERVER_ERROR``.

A request that passes every rule gets its ``auth_req_id`` and waits in
:mod:`example_app.pending` for the user's decision on the device (:mod:`example_app.device`);
the token endpoint (:mod:`example_app.oidc`) answers the client's polls. From then on the
request ends without the fail API.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import unquote_plus, urlsplit

from flask import Blueprint, Response, current_app, request

from ciba_middleware import Reason
from ciba_middleware.flask import BackchannelFail, CibaMiddleware
from ciba_middleware.stores import ticket_hash

from . import hints
from .directory import CLIENTS, RESOURCES, SCOPES, USERS, Client, User, notify_device

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "HEADERS",
    "INTERVAL",
    "JSON",
    "MAX_EXPIRES_IN",
    "ProtocolError",
    "authenticate_client",
    "bp",
    "ciba",
]

log = logging.getLogger(__name__)

bp = Blueprint("backchannel", __name__)

#: The extension, initialised on each app by :func:`example_app.create_app`.
ciba = CibaMiddleware()

#: Seconds an auth_req_id lives when the client asks nothing else, and at most.
DEFAULT_EXPIRES_IN = 120
MAX_EXPIRES_IN = 600
#: Seconds the client waits between polls of the token endpoint (CIBA Core 7.3), by
#: default (``CIBA_DEMO_INTERVAL``).
INTERVAL = 5

#: Shown on both devices, so short and plain: 1 to 32 letters, digits, spaces and a few marks.
BINDING_MESSAGE = re.compile(r"[A-Za-z0-9 .,:!?#+/_-]{1,32}")
BINDING_MESSAGE_RULE = "1 to 32 letters, digits, spaces or any of - . , : ! ? # + / _"

_SINGLE = (
    "scope",
    "login_hint",
    "login_hint_token",
    "id_token_hint",
    "binding_message",
    "user_code",
    "requested_expiry",
    "client_notification_token",
    "acr_values",
    "request",
)
_HINTS = ("login_hint", "login_hint_token", "id_token_hint")
_DIGITS = re.compile(r"[0-9]+")

HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
JSON = "application/json;charset=UTF-8"


class ProtocolError(Exception):
    """An error the endpoint answers itself (CIBA Core 13): no ticket, no fail call."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class BackchannelRequest:
    """The well-formed parameters of one request (stage 1 passed)."""

    scopes: tuple[str, ...]
    hint: str
    hint_value: str
    #: Claims of a login_hint_token or id_token_hint whose signature checked out.
    hint_claims: dict[str, Any] | None
    binding_message: str | None
    user_code: str | None
    expires_in: int
    resources: tuple[str, ...]


class Reject(Exception):
    """A rule of stage 2 rejected the request: becomes BackchannelFail with the ticket."""

    def __init__(self, reason: Reason, description: str) -> None:
        super().__init__(f"{reason.value}: {description}")
        self.reason = reason
        self.description = description


@bp.app_errorhandler(ProtocolError)
def _protocol_error(error: ProtocolError) -> Response:
    headers = dict(HEADERS)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="example_app"'
    body = json.dumps({"error": error.error, "error_description": error.description}, separators=(",", ":"))
    return Response(body, status=error.status, headers=headers, content_type=JSON)


@bp.post("/backchannel/authentication")
def backchannel_authentication() -> Response:
    client = authenticate_client()
    params = _read_request()

    ticket: str | None = None
    try:
        ticket = ciba.issue_ticket(ttl=params.expires_in)
        user = _check(client, params)
        notify_device(user, client, params.binding_message)
        state = current_app.extensions["example_app"]
        auth_req_id = secrets.token_urlsafe(32)
        state.pending.add(
            auth_req_id,
            client_id=client.client_id,
            subject=user.subject,
            scope=" ".join(params.scopes),
            binding_message=params.binding_message,
            resources=params.resources,
            ticket=ticket,
            expires_in=params.expires_in,
            interval=state.interval,
        )
    except Reject as rejected:
        log.info(
            "rejecting the request of %s (ticket %s): %s",
            client.client_id,
            ticket_hash(ticket) if ticket else None,
            rejected.reason.value,
        )
        raise BackchannelFail(rejected.reason, ticket=ticket, description=rejected.description) from None
    except Exception as exc:
        log.exception("backchannel authentication failed (ticket %s)", ticket_hash(ticket) if ticket else None)
        raise BackchannelFail(
            Reason.SERVER_ERROR, ticket=ticket, description="The authorization server failed; try again later."
        ) from exc

    log.info("accepted the request of %s for %s (ticket %s)", client.client_id, user.subject, ticket_hash(ticket))
    body = {"auth_req_id": auth_req_id, "expires_in": params.expires_in, "interval": state.interval}
    return Response(json.dumps(body, separators=(",", ":")), status=200, headers=HEADERS, content_type=JSON)


# -- stage 1: what the endpoint answers itself -------------------------------------------


def authenticate_client() -> Client:
    """client_secret_basic (RFC 6749 2.3.1): id and secret form-encoded, then base64."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not credentials.strip():
        raise ProtocolError("invalid_client", "Authenticate the client with HTTP Basic (client_secret_basic).", 401)
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ProtocolError("invalid_client", "The Basic credentials are malformed.", 401) from None
    client_id, colon, secret = decoded.partition(":")
    client = CLIENTS.get(unquote_plus(client_id))
    # Compare even for an unknown client, so timing does not tell which IDs exist.
    expected = client.client_secret if client is not None else "\0"
    matched = hmac.compare_digest(expected.encode(), unquote_plus(secret).encode())
    if client is None or not colon or not matched:
        raise ProtocolError("invalid_client", "Client authentication failed.", 401)
    return client


def _invalid_request(description: str) -> NoReturn:
    raise ProtocolError("invalid_request", description)


def _read_request() -> BackchannelRequest:
    if request.mimetype != "application/x-www-form-urlencoded":
        _invalid_request("The request must be application/x-www-form-urlencoded.")
    form = request.form
    if "client_secret" in form or "client_assertion" in form:
        _invalid_request("Use one client authentication method only (client_secret_basic).")
    for name in _SINGLE:
        if len(form.getlist(name)) > 1:
            _invalid_request(f"The parameter {name} is given more than once.")
    # RFC 6749 3.1: a parameter sent without a value is treated as omitted.
    value = {name: form.get(name) or None for name in _SINGLE}
    if value["request"] is not None:
        _invalid_request("Signed authentication requests (request) are not supported by this server.")

    if value["scope"] is None:
        _invalid_request("The parameter scope is required.")
    scopes = tuple(value["scope"].split())
    if "openid" not in scopes:
        raise ProtocolError("invalid_scope", "The scope must include openid.")
    if not set(scopes) <= SCOPES:
        raise ProtocolError("invalid_scope", f"The scope may only hold {', '.join(sorted(SCOPES))}.")

    given = [name for name in _HINTS if value[name] is not None]
    if len(given) != 1:
        _invalid_request("Give exactly one of login_hint, login_hint_token and id_token_hint.")
    (hint,) = given
    hint_value = value[hint]
    assert hint_value is not None
    claims = None
    if hint != "login_hint":
        try:
            claims = hints.read(hint_value, current_app.extensions["example_app"].hint_key)
        except hints.BadHint as exc:
            _invalid_request(f"The {hint} {exc}.")

    expires_in = DEFAULT_EXPIRES_IN
    requested = value["requested_expiry"]
    if requested is not None:
        digits = requested.lstrip("0")
        if not _DIGITS.fullmatch(requested) or not digits:
            _invalid_request("requested_expiry must be a positive integer (seconds).")
        # Compare by length first: int() of thousands of digits is slow, and refused.
        expires_in = MAX_EXPIRES_IN if len(digits) > 6 else min(int(digits), MAX_EXPIRES_IN)

    return BackchannelRequest(
        scopes=scopes,
        hint=hint,
        hint_value=hint_value,
        hint_claims=claims,
        binding_message=value["binding_message"],
        user_code=value["user_code"],
        expires_in=expires_in,
        resources=tuple(r for r in form.getlist("resource") if r),
    )


# -- stage 2: the authorization server's rules, failed through the fail API -------------


def _check(client: Client, params: BackchannelRequest) -> User:
    """Run the server's rules in order; raise :class:`Reject` at the first that fails."""
    if not client.ciba:
        raise Reject(Reason.UNAUTHORIZED_CLIENT, "The client is not registered for CIBA.")

    for resource in params.resources:
        if not _absolute_without_fragment(resource) or resource not in RESOURCES:
            raise Reject(Reason.INVALID_TARGET, "A resource is unknown or not an absolute URI.")

    if params.hint == "login_hint_token" and hints.expired(params.hint_claims or {}):
        raise Reject(Reason.EXPIRED_LOGIN_HINT_TOKEN, "The login_hint_token has expired.")

    subject = params.hint_value if params.hint_claims is None else params.hint_claims["sub"]
    user = USERS.get(subject)
    if user is None:
        raise Reject(Reason.UNKNOWN_USER_ID, "No user matches the hint.")

    if client.client_id in user.blocked_clients:
        raise Reject(Reason.ACCESS_DENIED, "The user does not allow this client to ask for authentication.")

    if user.user_code is not None:
        if params.user_code is None:
            raise Reject(Reason.MISSING_USER_CODE, "This user requires a user code.")
        if not hmac.compare_digest(user.user_code.encode(), params.user_code.encode()):
            raise Reject(Reason.INVALID_USER_CODE, "The user code is wrong.")

    if params.binding_message is not None and not BINDING_MESSAGE.fullmatch(params.binding_message):
        raise Reject(Reason.INVALID_BINDING_MESSAGE, f"The binding_message must be {BINDING_MESSAGE_RULE}.")

    return user


def _absolute_without_fragment(uri: str) -> bool:
    """RFC 8707 2: an absolute URI (scheme and host) without a fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc) and "#" not in uri
