"""Who may call the fail API: the Authorization header, principals and verifiers.

Authlete authenticates API v3 calls with a bearer token, either a *Service Access Token*
(one service) or an *Organization Token* (every service of an organization), and API v2
calls with HTTP Basic ``apiKey:apiSecret``, where the API key is the service's ID, or with
a Service Access Token (the token names its one service). A token bound to a key
(``dpop_jkt``) is accepted only as ``Authorization: DPoP`` with a valid proof
(:mod:`ciba_middleware.dpop`).
A :class:`TokenVerifier` turns those credentials into a :class:`Principal`; the middleware
then checks that the principal covers the service in the URL.

Plug in your own verifier (a database of tokens, an introspection call, ...) by writing
a class with the two methods of the protocol.

:func:`authenticate` is the fail API's reading of the ``Authorization`` header, with the
401 challenge for each way it can be wrong; :func:`bearer_token` is the same Bearer
grammar for other endpoints (the metrics endpoint's token).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from .dpop import challenge, check_proof, well_formed_jkt
from .errors import ConfigurationError, DpopRefused, MissingAuthorization, Unauthorized
from .stores.base import ReplayCache

__all__ = [
    "BASIC_CHALLENGE",
    "BEARER_CHALLENGE",
    "REALM",
    "Principal",
    "PrincipalKind",
    "StaticTokenVerifier",
    "TokenVerifier",
    "authenticate",
    "bearer_token",
    "clear_secret_digest",
    "hex_digest",
    "sha256_hex",
]

log = logging.getLogger(__name__)

#: The realm of the fail API's ``WWW-Authenticate`` challenges.
REALM = "ciba-middleware"
BEARER_CHALLENGE = f'Bearer realm="{REALM}"'
BASIC_CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_sha256 = hashlib.sha256  # looked up once: verify_bearer runs on every call


class PrincipalKind(StrEnum):
    SERVICE = "service"
    """A Service Access Token: one service."""
    ORGANIZATION = "organization"
    """An Organization Token: the services of one organization."""
    API_KEY = "api_key"
    """An Authlete API v2 key and secret: the service whose ID is the key."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller. ``id`` names it in logs: a service ID or an organization."""

    kind: PrincipalKind
    id: str
    services: frozenset[str]
    #: The JWK SHA-256 thumbprint the token is bound to (RFC 9449), or None: a Bearer token.
    dpop_jkt: str | None = None
    #: Whether this token's DPoP proofs must carry ``ath``.
    dpop_require_ath: bool = False

    def covers(self, service_id: str) -> bool:
        return service_id in self.services


@runtime_checkable
class TokenVerifier(Protocol):
    """Turns credentials into a principal, or None when they are not valid.

    Implementations must not leak, through timing or logs, how close a wrong secret came
    to a right one: compare digests, or use :func:`hmac.compare_digest`.
    """

    def verify_bearer(self, token: str) -> Principal | None:
        """A Service Access Token or Organization Token (API v3)."""
        ...

    def verify_api_key(self, api_key: str, api_secret: str) -> Principal | None:
        """An API key and secret (API v2). The API key is the service ID."""
        ...


def sha256_hex(secret: str) -> str:
    """The SHA-256 of ``secret`` (UTF-8) in lowercase hex: what configuration stores."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class StaticTokenVerifier:
    """A verifier built from a fixed list of grants, keeping only SHA-256 digests.

    Each grant is a mapping, as in ``CIBA_TOKENS``::

        {"service": "715948317", "token_sha256": "<hex>"}
        {"organization": "acme", "services": ["715948317", "42"], "token_sha256": "<hex>"}
        {"service": "715948317", "api_secret_sha256": "<hex>"}   # API v2: key = service ID
        {"service": "715948317", "token_sha256": "<hex>", "dpop_jkt": "<JWK SHA-256 thumbprint>"}

    A token grant with ``dpop_jkt`` is bound to that key (RFC 9449): it is accepted only as
    ``Authorization: DPoP`` with a proof signed by the key; add ``"dpop_require_ath": true``
    to also require the proof's ``ath``. Binding needs the ``dpop`` extra (joserfc).

    ``token`` and ``api_secret`` in clear text are accepted instead of the digests, for
    development, with a logged warning; only their digests are kept.

    Tokens are looked up by their digest: the time a lookup takes depends on the digest,
    never on how many leading characters of a guess were right. API secrets are compared
    with :func:`hmac.compare_digest` against every secret of the service.

    >>> v = StaticTokenVerifier([{"service": "42", "token_sha256": sha256_hex("s3cret")}])
    >>> v.verify_bearer("s3cret").covers("42"), v.verify_bearer("s3cre")
    (True, None)
    """

    def __init__(self, grants: Iterable[Mapping[str, Any]]) -> None:
        self._bearer: dict[bytes, Principal] = {}
        self._api: dict[str, list[bytes]] = {}
        #: Whether some grant binds its token to a DPoP key (the store must then be a ReplayCache).
        self.dpop_bound = False
        for index, grant in enumerate(grants):
            try:
                self._add(grant)
            except ConfigurationError as exc:
                raise ConfigurationError(f"grant #{index + 1}: {exc}") from None
        if not self._bearer and not self._api:
            log.warning("no grants configured: every fail API call will get 401")

    def _add(self, grant: Mapping[str, Any]) -> None:
        if not isinstance(grant, Mapping):
            raise ConfigurationError(f"must be an object, not {type(grant).__name__}")
        allowed = {
            *("service", "organization", "services", "token", "token_sha256", "api_secret", "api_secret_sha256"),
            *("dpop_jkt", "dpop_require_ath"),
        }
        unknown = sorted(set(grant) - allowed)
        if unknown:
            raise ConfigurationError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
        secrets = [k for k in ("token", "token_sha256", "api_secret", "api_secret_sha256") if k in grant]
        if len(secrets) != 1:
            raise ConfigurationError("needs exactly one of token_sha256, api_secret_sha256, token, api_secret")
        (key,) = secrets
        digest = _digest(grant, key)
        jkt, require_ath = _binding(grant, key)

        if "organization" in grant:
            if "service" in grant:
                raise ConfigurationError("has both 'service' and 'organization'; an organization lists 'services'")
            if key.startswith("api_secret"):
                raise ConfigurationError("an organization has tokens, not API secrets")
            org = _name(grant["organization"], "organization")
            services = grant.get("services")
            if not isinstance(services, list) or not services:
                raise ConfigurationError("'services' must be a non-empty list of service IDs")
            principal = Principal(
                PrincipalKind.ORGANIZATION, org, frozenset(_name(s, "service ID") for s in services), jkt, require_ath
            )
        else:
            if "services" in grant:
                raise ConfigurationError("'services' belongs to an organization grant")
            if "service" not in grant:
                raise ConfigurationError("needs 'service' (or 'organization' with 'services')")
            service = _name(grant["service"], "service")
            if key.startswith("api_secret"):
                self._api.setdefault(service, []).append(digest)
                return
            principal = Principal(PrincipalKind.SERVICE, service, frozenset((service,)), jkt, require_ath)

        if digest in self._bearer and self._bearer[digest] != principal:
            raise ConfigurationError("the same token is granted to two different principals")
        self._bearer[digest] = principal
        self.dpop_bound |= jkt is not None

    def verify_bearer(self, token: str) -> Principal | None:
        try:
            data = token.encode()
        except UnicodeEncodeError:  # a lone surrogate: digested as sent, matching nothing
            data = token.encode("utf-8", "surrogatepass")
        return self._bearer.get(_sha256(data).digest())

    def verify_api_key(self, api_key: str, api_secret: str) -> Principal | None:
        expected = self._api.get(api_key)
        if not expected:
            return None
        digest = hashlib.sha256(api_secret.encode("utf-8", "surrogatepass")).digest()
        # Check every secret of the service (rotation keeps two) without stopping early.
        matched = False
        for candidate in expected:
            matched |= hmac.compare_digest(candidate, digest)
        if not matched:
            return None
        return Principal(PrincipalKind.API_KEY, api_key, frozenset((api_key,)))

    @property
    def services(self) -> frozenset[str]:
        """Every service some grant covers (for summaries; never the secrets)."""
        found: set[str] = set(self._api)
        for principal in self._bearer.values():
            found |= principal.services
        return frozenset(found)

    def __len__(self) -> int:
        return len(self._bearer) + sum(len(v) for v in self._api.values())


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ConfigurationError(f"{what} must be a non-empty string without surrounding spaces, not {value!r}")
    return value


def _binding(grant: Mapping[str, Any], key: str) -> tuple[str | None, bool]:
    """A grant's DPoP binding: ``(dpop_jkt or None, dpop_require_ath)``."""
    jkt = grant.get("dpop_jkt")
    require_ath = grant.get("dpop_require_ath", False)
    if not isinstance(require_ath, bool):
        raise ConfigurationError(f"'dpop_require_ath' must be true or false, not {require_ath!r}")
    if jkt is None:
        if "dpop_require_ath" in grant:
            raise ConfigurationError("'dpop_require_ath' needs 'dpop_jkt'")
        return None, False
    if key.startswith("api_secret"):
        raise ConfigurationError("'dpop_jkt' binds a token; an API secret cannot be bound")
    if not well_formed_jkt(jkt):
        raise ConfigurationError("'dpop_jkt' must be a JWK SHA-256 thumbprint: 43 base64url characters")
    try:
        import joserfc  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "'dpop_jkt' needs joserfc to check DPoP proofs: pip install 'ciba-middleware[dpop]'"
        ) from None
    return jkt, require_ath


def _digest(grant: Mapping[str, Any], key: str) -> bytes:
    value = grant[key]
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{key!r} must be a non-empty string")
    if key.endswith("_sha256"):
        return hex_digest(value, repr(key))
    who = grant.get("service") or grant.get("organization")
    return clear_secret_digest(
        value, f"grant for {who} has a clear-text {key!r}", f"use {f'{key}_sha256'!r} (the SHA-256)"
    )


def hex_digest(value: str, name: str) -> bytes:
    """A configured SHA-256 in hex (either case) as its 32 bytes, or ConfigurationError naming ``name``."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ConfigurationError(f"{name} must be 64 hexadecimal digits (a SHA-256)")
    return bytes.fromhex(value)


def clear_secret_digest(secret: str, subject: str, advice: str, logger: logging.Logger = log) -> bytes:
    """The SHA-256 of a secret configured in clear text, with the warning that says so.

    Only the digest is kept. The warning, on ``logger`` (the module that read the
    setting), reads ``{subject}; {advice} outside development``.
    """
    logger.warning("%s; %s outside development", subject, advice)
    return hashlib.sha256(secret.encode("utf-8")).digest()


# -- the Authorization header -------------------------------------------------------------


def bearer_token(header: str) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (RFC 6750 2.1), or None for anything else."""
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip(" ")
    if scheme.lower() != "bearer" or not _B64TOKEN.fullmatch(credentials):
        return None
    return credentials


def authenticate(
    verifier: TokenVerifier,
    header: str,
    service: str | None,
    *,
    dpop: str = "",
    method: str = "POST",
    url: str = "",
    replay: ReplayCache | None = None,
) -> tuple[Principal, str]:
    """The caller named by ``header``, and the service it asks for.

    ``service`` is the one in the URL (API v3: a Bearer or DPoP token is expected), or None
    for API v2, where the Basic user name (the API key), or the service access token, names
    the service. ``dpop`` is the request's ``DPoP`` header, checked against ``method`` and
    ``url`` when the token is bound to a key, with ``replay`` remembering proofs. Raises
    :class:`~ciba_middleware.errors.Unauthorized` with the challenge for what is wrong.
    Whether the principal covers the service is left to the caller, so that a 403 can
    still say who tried.
    """
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip(" ")
    lowered = scheme.lower()
    if service is not None:
        if not header:
            raise MissingAuthorization(BEARER_CHALLENGE)
        if lowered not in ("bearer", "dpop"):
            raise Unauthorized(
                "the Authorization header must use the Bearer or DPoP scheme.", BEARER_CHALLENGE, "scheme"
            )
        return _token(verifier, lowered, credentials, dpop, method, url, replay), service
    if not header:
        raise MissingAuthorization(BASIC_CHALLENGE)
    if lowered in ("bearer", "dpop"):
        principal = _token(verifier, lowered, credentials, dpop, method, url, replay)
        if principal.kind is not PrincipalKind.SERVICE:
            raise Unauthorized(
                "an organization token names no service, and API v2 has none in its path: "
                "call /api/{serviceId}/backchannel/authentication/fail (API v3).",
                _invalid_token("not valid for API v2"),
                "invalid",
            )
        return principal, principal.id
    if lowered != "basic":
        raise Unauthorized(
            "the Authorization header must use the Basic, Bearer or DPoP scheme.", BASIC_CHALLENGE, "scheme"
        )
    # A DPoP header beside Basic credentials is not checked: authlete-java-common sends a
    # proof with every call once a DPoP key is configured, whatever the credentials.
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        decoded = ""
    api_key, colon, api_secret = decoded.partition(":")
    if not colon or not api_key:
        raise Unauthorized("the Basic credentials are malformed.", BASIC_CHALLENGE, "malformed")
    keyed = verifier.verify_api_key(api_key, api_secret)
    if keyed is None:
        raise Unauthorized("the API key and secret are not valid.", BASIC_CHALLENGE, "invalid")
    return keyed, api_key


def _token(
    verifier: TokenVerifier,
    scheme: str,
    credentials: str,
    dpop: str,
    method: str,
    url: str,
    replay: ReplayCache | None,
) -> Principal:
    """The principal of a Bearer or DPoP token (``scheme`` lowercased), its proof checked."""
    if not _B64TOKEN.fullmatch(credentials):
        raise Unauthorized("the access token is malformed.", _invalid_token("malformed"), "malformed")
    principal = verifier.verify_bearer(credentials)
    if principal is None:
        raise Unauthorized("the access token is not valid.", _invalid_token("not valid"), "invalid")
    jkt = principal.dpop_jkt
    if jkt is None:
        if scheme == "dpop":
            raise DpopRefused(
                "the access token is not bound to a DPoP key; send it as 'Authorization: Bearer'.",
                challenge("invalid_token", "The access token is not DPoP-bound"),
            )
        return principal
    if scheme != "dpop":
        raise DpopRefused(
            "the access token is bound to a DPoP key; send it as 'Authorization: DPoP' with a DPoP proof.",
            challenge("invalid_token", "Invalid DPoP key binding"),
        )
    check_proof(
        dpop,
        method=method,
        url=url,
        token=credentials,
        jkt=jkt,
        replay=replay,
        require_ath=principal.dpop_require_ath,
    )
    return principal


def _invalid_token(what: str) -> str:
    """RFC 6750 3.1's challenge for a token that was read but refused."""
    return f'{BEARER_CHALLENGE}, error="invalid_token", error_description="The access token is {what}"'
