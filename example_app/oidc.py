"""Discovery, keys and the token endpoint: the rest of CIBA after the ``auth_req_id``.

- ``GET /.well-known/openid-configuration``: the server's metadata with CIBA's (CIBA Core 4);
- ``GET /jwks``: the public key that signs ID tokens (ES256, through joserfc);
- ``POST /token``: the ``urn:openid:params:grant-type:ciba`` grant in poll mode (CIBA Core
  10-11), the client authenticated as at the backchannel endpoint.

A request ends in one of three ways after its ``auth_req_id``, none of them through the fail
API, which is for rejecting the backchannel request itself: the user approves it (tokens),
denies it (``access_denied``), or it expires (``expired_token``). Approval and denial delete
the request's ticket from the store; an expired ticket expires there too, at the same time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import sqlite3
import time
from typing import Any

from flask import Blueprint, Response, current_app, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from ciba_middleware import ConfigurationError, StoreError
from ciba_middleware.flask import CibaMiddleware
from ciba_middleware.stores import ticket_hash

from .backchannel import HEADERS, JSON, ProtocolError, authenticate_client
from .directory import SCOPES
from .pending import Pending, PendingRequests

__all__ = [
    "ACCESS_TOKEN_LIFETIME",
    "GRANT_TYPE",
    "ID_TOKEN_LIFETIME",
    "bp",
    "end_ticket",
    "issuer",
    "load_signing_key",
]

log = logging.getLogger(__name__)

bp = Blueprint("oidc", __name__)

GRANT_TYPE = "urn:openid:params:grant-type:ciba"
#: Seconds the access token and the ID token are valid.
ACCESS_TOKEN_LIFETIME = 3600
ID_TOKEN_LIFETIME = 600
ALG = "ES256"


def load_signing_key(value: object) -> ECKey:
    """The ID token signing key: ``CIBA_DEMO_SIGNING_KEY`` (a private P-256 JWK in JSON), or a new one."""
    if value in (None, ""):
        key = ECKey.generate_key("P-256", private=True)
    else:
        try:
            data = json.loads(value) if isinstance(value, str | bytes) else value
            if not isinstance(data, dict) or data.get("kty") != "EC" or data.get("crv") != "P-256" or "d" not in data:
                raise ValueError("not a private EC P-256 JWK")
            key = ECKey.import_key({k: v for k, v in data.items() if k not in ("kid", "use", "alg")})
        except (ValueError, JoseError) as exc:
            raise ConfigurationError(
                f"CIBA_DEMO_SIGNING_KEY must be a private EC P-256 JWK in JSON (kty, crv, x, y, d): {exc}"
            ) from None
    return ECKey.import_key(key.as_dict(private=True), {"kid": key.thumbprint(), "use": "sig", "alg": ALG})


def issuer() -> str:
    """This server's issuer: ``CIBA_DEMO_ISSUER``, else the URL it runs at, else the request's."""
    configured: str | None = current_app.extensions["example_app"].issuer
    return configured or request.host_url.rstrip("/")


def _json(body: dict[str, Any], status: int = 200, *, cache: bool = False) -> Response:
    headers = {} if cache else HEADERS
    return Response(json.dumps(body, separators=(",", ":")), status=status, headers=headers, content_type=JSON)


@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    """OpenID Provider metadata (OIDC Discovery 3) with the CIBA parameters of CIBA Core 4."""
    base = issuer()
    return _json(
        {
            "issuer": base,
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "backchannel_authentication_endpoint": f"{base}/backchannel/authentication",
            "backchannel_token_delivery_modes_supported": ["poll"],
            "backchannel_user_code_parameter_supported": True,
            "grant_types_supported": [GRANT_TYPE],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            # No authorization endpoint: CIBA only, so no response type either.
            "response_types_supported": [],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALG],
            "scopes_supported": sorted(SCOPES),
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "at_hash"],
            "x_demo_authentication_device": f"{base}/device",
        },
        cache=True,
    )


@bp.get("/jwks")
def jwks() -> Response:
    key: ECKey = current_app.extensions["example_app"].signing_key
    return _json({"keys": [key.as_dict(private=False)]}, cache=True)


@bp.post("/token")
def token() -> Response:
    client = authenticate_client()
    if request.mimetype != "application/x-www-form-urlencoded":
        raise ProtocolError("invalid_request", "The request must be application/x-www-form-urlencoded.")
    form = request.form
    for name in ("grant_type", "auth_req_id"):
        if len(form.getlist(name)) > 1:
            raise ProtocolError("invalid_request", f"The parameter {name} is given more than once.")
    grant_type = form.get("grant_type") or None
    if grant_type is None:
        raise ProtocolError("invalid_request", "The parameter grant_type is required.")
    if grant_type != GRANT_TYPE:
        raise ProtocolError("unsupported_grant_type", f"This server supports the grant type {GRANT_TYPE} only.")
    if not client.ciba:
        raise ProtocolError("unauthorized_client", "The client is not registered for CIBA.")
    auth_req_id = form.get("auth_req_id") or None
    if auth_req_id is None:
        raise ProtocolError("invalid_request", "The parameter auth_req_id is required.")

    pending: PendingRequests = current_app.extensions["example_app"].pending
    try:
        outcome, found = pending.poll(auth_req_id, client.client_id)
    except sqlite3.Error:
        log.exception("the pending requests could not be read")
        raise ProtocolError("server_error", "The authorization server failed; try again later.", 500) from None
    if outcome == "tokens":
        assert found is not None
        log.info("issuing tokens to %s for %s (ticket %s)", client.client_id, found.subject, ticket_hash(found.ticket))
        return _json(_tokens(found))
    raise ProtocolError(outcome, _DESCRIPTIONS[outcome])


_DESCRIPTIONS = {
    "authorization_pending": "The user has not decided yet.",
    "slow_down": "Polled sooner than the interval; wait 5 seconds longer between polls.",
    "access_denied": "The user denied the request.",
    "expired_token": "The auth_req_id has expired.",
    "invalid_grant": "The auth_req_id is unknown, was issued to another client, or was already used.",
}


def _tokens(found: Pending) -> dict[str, Any]:
    """The token response (CIBA Core 10.1.1): a Bearer access token and a signed ID token."""
    state = current_app.extensions["example_app"]
    access_token = secrets.token_urlsafe(32)
    now = int(time.time())
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    claims = {
        "iss": issuer(),
        "sub": found.subject,
        "aud": found.client_id,
        "iat": now,
        "exp": now + ID_TOKEN_LIFETIME,
        "auth_time": int(found.decided_at or now),
        # OIDC Core 3.1.3.6: the left half of the access token's hash.
        "at_hash": base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii"),
    }
    key: ECKey = state.signing_key
    id_token = jwt.encode({"alg": ALG, "kid": key.kid, "typ": "JWT"}, claims, key)
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_LIFETIME,
        "scope": found.scope,
        "id_token": id_token,
    }


def end_ticket(found: Pending) -> None:
    """The user decided: the pending request is over, so its ticket goes (not through the fail API).

    A store that fails here costs nothing but a ticket left to expire on its own.
    """
    state = CibaMiddleware.state()
    try:
        state.store.delete(state.service_id, found.ticket)
    except StoreError:
        log.exception("could not delete the ticket %s of a decided request", ticket_hash(found.ticket))
