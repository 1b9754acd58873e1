"""Who may call the fail API: principals, the TokenVerifier protocol and a static verifier.

Authlete authenticates API v3 calls with a bearer token, either a *Service Access Token*
(one service) or an *Organization Token* (every service of an organization), and API v2
calls with HTTP Basic ``apiKey:apiSecret``, where the API key is the service's ID.
A :class:`TokenVerifier` turns those credentials into a :class:`Principal`; the middleware
then checks that the principal covers the service in the URL.

Plug in your own verifier (a database of tokens, an introspection call, ...) by writing
a class with the two methods of the protocol.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigurationError

__all__ = ["Principal", "PrincipalKind", "StaticTokenVerifier", "TokenVerifier", "sha256_hex"]

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")
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
        allowed = {"service", "organization", "services", "token", "token_sha256", "api_secret", "api_secret_sha256"}
        unknown = sorted(set(grant) - allowed)
        if unknown:
            raise ConfigurationError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
        secrets = [k for k in ("token", "token_sha256", "api_secret", "api_secret_sha256") if k in grant]
        if len(secrets) != 1:
            raise ConfigurationError("needs exactly one of token_sha256, api_secret_sha256, token, api_secret")
        (key,) = secrets
        digest = _digest(grant, key)

        if "organization" in grant:
            if "service" in grant:
                raise ConfigurationError("has both 'service' and 'organization'; an organization lists 'services'")
            if key.startswith("api_secret"):
                raise ConfigurationError("an organization has tokens, not API secrets")
            org = _name(grant["organization"], "organization")
            services = grant.get("services")
            if not isinstance(services, list) or not services:
                raise ConfigurationError("'services' must be a non-empty list of service IDs")
            principal = Principal(PrincipalKind.ORGANIZATION, org, frozenset(_name(s, "service ID") for s in services))
        else:
            if "services" in grant:
                raise ConfigurationError("'services' belongs to an organization grant")
            if "service" not in grant:
                raise ConfigurationError("needs 'service' (or 'organization' with 'services')")
            service = _name(grant["service"], "service")
            if key.startswith("api_secret"):
                self._api.setdefault(service, []).append(digest)
                return
            principal = Principal(PrincipalKind.SERVICE, service, frozenset((service,)))

        if digest in self._bearer and self._bearer[digest] != principal:
            raise ConfigurationError("the same token is granted to two different principals")
        self._bearer[digest] = principal

    def verify_bearer(self, token: str) -> Principal | None:
        return self._bearer.get(_sha256(token.encode("utf-8", "surrogatepass")).digest())

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


def _digest(grant: Mapping[str, Any], key: str) -> bytes:
    value = grant[key]
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{key!r} must be a non-empty string")
    if key.endswith("_sha256"):
        if not _HEX64.fullmatch(value.lower()):
            raise ConfigurationError(f"{key!r} must be 64 hexadecimal digits (a SHA-256)")
        return bytes.fromhex(value)
    who = grant.get("service") or grant.get("organization")
    log.warning("grant for %s has a clear-text %r; use %r (the SHA-256) outside development", who, key, f"{key}_sha256")
    return hashlib.sha256(value.encode("utf-8")).digest()
