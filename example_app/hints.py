"""``login_hint_token`` and ``id_token_hint`` for the demo: JWTs signed with HS256.

CIBA leaves the format of a login_hint_token to the deployment and requires an
id_token_hint to be an ID Token this server issued. The demo signs both itself with one
HMAC key (``CIBA_DEMO_HINT_KEY``), so it can hand out samples on its index page and check
them without any other party. A real server verifies the issuer's keys instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["BadHint", "expired", "mint", "read"]

_HEADER = {"alg": "HS256", "typ": "JWT"}


class BadHint(ValueError):
    """The hint is not a JWT this server signed: the request is malformed (invalid_request)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _compact(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _sign(signing_input: str, key: bytes) -> str:
    return _b64(hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest())


def mint(claims: Mapping[str, Any], key: bytes) -> str:
    """A compact JWS of ``claims``, HS256 with ``key``."""
    signing_input = _b64(_compact(_HEADER)) + "." + _b64(_compact(dict(claims)))
    return signing_input + "." + _sign(signing_input, key)


def read(token: str, key: bytes) -> dict[str, Any]:
    """The claims of a JWT signed by :func:`mint` with ``key``; raises :class:`BadHint` otherwise.

    Expiry is not checked here: an expired login_hint_token has its own error
    (``expired_login_hint_token``), and an id_token_hint may be an expired ID Token.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise BadHint("is not a JWT (three dot-separated parts)")
    header_b64, payload_b64, signature = parts
    if not hmac.compare_digest(_sign(f"{header_b64}.{payload_b64}", key), signature):
        raise BadHint("does not carry this server's signature")
    try:
        header = json.loads(_unb64(header_b64))
        claims = json.loads(_unb64(payload_b64))
    except ValueError:
        raise BadHint("is not base64url-encoded JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise BadHint("is not signed with HS256")
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        raise BadHint("has no subject (sub)")
    return claims


def expired(claims: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether ``claims`` carry an ``exp`` in the past; a hint without ``exp`` does not expire."""
    exp = claims.get("exp")
    if exp is None:
        return False
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise BadHint("has an exp that is not a number")
    return exp <= (time.time() if now is None else now)
