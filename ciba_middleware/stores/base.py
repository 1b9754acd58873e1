"""The ticket store protocol and the pieces every backend shares."""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_TTL",
    "MAX_TTL",
    "ReplayCache",
    "TicketStore",
    "checked_ttl",
    "default_ttl_option",
    "new_ticket",
    "number_option",
    "ticket_hash",
    "well_formed",
]

#: Seconds a ticket lives when neither the store nor the call says otherwise.
#: Authlete keeps backchannel tickets for the life of the request; ten minutes covers
#: CIBA's usual ``expires_in`` with room to spare.
DEFAULT_TTL = 600.0
#: The longest life a ticket may be given: a year. A CIBA request lives minutes; the bound
#: keeps every backend's expiry arithmetic (milliseconds in Redis, an interval in
#: PostgreSQL) far from overflow, so a TTL accepted at start-up never fails an issue.
MAX_TTL = 366 * 86400.0

# token_urlsafe(32) gives 43 characters; accept a little more so tickets issued by a
# later version with more entropy still pass.
_TICKET = re.compile(r"[A-Za-z0-9_-]{32,128}")


def checked_ttl(ttl: object, name: str = "ttl") -> float:
    """``ttl`` as seconds, or ValueError unless it is a number above 0 and at most :data:`MAX_TTL`."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL:
        raise ValueError(f"{name} must be a number of seconds above 0 and at most {MAX_TTL:g}, not {ttl!r}")
    return float(ttl)


def number_option(
    owner: str,
    name: str,
    value: object,
    *,
    integer: bool = False,
    minimum: float = 0.0,
    maximum: float,
    exclusive_minimum: bool = False,
) -> Any:
    """A store's numeric option (from its URL's query, or a keyword), checked once for all.

    ``value`` may be a string, as read from a URL, or a number. It must be finite, an
    integer when ``integer``, at least ``minimum`` (above it with ``exclusive_minimum``)
    and at most ``maximum``; otherwise a :class:`ConfigurationError` names ``owner``
    (``"sqlite"``, ``"Redis"``, ...) and the option.

    >>> number_option("sqlite", "timeout", "2.5", maximum=3600)
    2.5
    >>> number_option("sqlite", "timeout", "nan", maximum=3600)
    Traceback (most recent call last):
    ...
    ciba_middleware.errors.ConfigurationError: sqlite option timeout must be a number from 0 to 3600, not 'nan'
    """
    kind = "a whole number" if integer else "a number"
    bounds = f"above {minimum:g} and at most {maximum:g}" if exclusive_minimum else f"from {minimum:g} to {maximum:g}"
    problem = f"{owner} option {name} must be {kind} {bounds}, not {value!r}"
    number: float
    try:
        if isinstance(value, bool):
            raise TypeError
        if integer:
            if isinstance(value, float):
                raise TypeError
            number = int(value.strip() if isinstance(value, str) else value)  # type: ignore[call-overload]
        else:
            number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ConfigurationError(problem) from None
    too_low = number <= minimum if exclusive_minimum else number < minimum
    if not math.isfinite(number) or too_low or number > maximum:
        raise ConfigurationError(problem)
    return number


def default_ttl_option(ttl: object) -> float:
    """A store's ``default_ttl`` option, checked when the store is built."""
    try:
        return checked_ttl(ttl, "default_ttl")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def new_ticket() -> str:
    """A fresh ticket: 256 random bits, URL-safe base64 without padding (43 characters)."""
    return secrets.token_urlsafe(32)


def well_formed(ticket: str) -> bool:
    """Whether ``ticket`` could have been issued by a store.

    Anything else cannot exist, so the middleware answers as for an unknown ticket without
    a store round trip, and no backend ever sees control characters or surrogates.
    """
    return _TICKET.fullmatch(ticket) is not None


def ticket_hash(ticket: str) -> str:
    """A short, stable, non-reversible name for a ticket, for logs: never log the ticket."""
    try:
        data = ticket.encode()
    except UnicodeEncodeError:  # a lone surrogate, from a caller: hashed as sent
        data = ticket.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:12]


@runtime_checkable
class TicketStore(Protocol):
    """Where backchannel authentication tickets live until they are used or failed.

    A ticket belongs to one service. Every method is safe to call from many threads, and
    several processes (or hosts, for networked backends) may share one store. Backends
    wrap their own exceptions in :class:`ciba_middleware.errors.StoreError`.
    """

    def issue(self, service_id: str, ttl: float | None = None) -> str:
        """Create a ticket for ``service_id`` that expires after ``ttl`` seconds
        (the store's default TTL when None) and return it."""
        ...

    def exists(self, service_id: str, ticket: str) -> bool:
        """Whether ``ticket`` exists, has not expired and belongs to ``service_id``."""
        ...

    def delete(self, service_id: str, ticket: str) -> bool:
        """Atomically delete ``ticket`` if it exists and belongs to ``service_id``.

        Returns True when this call deleted it. When many callers race on one ticket,
        exactly one gets True. A ticket of another service is left alone.
        """
        ...

    def ping(self) -> None:
        """Reach the backend; raise StoreError when it cannot be reached."""
        ...

    def close(self) -> None:
        """Release connections. The store is not used afterwards."""
        ...


@runtime_checkable
class ReplayCache(Protocol):
    """A store that can also remember one-time values (a DPoP proof's ``jti``), optionally.

    Not part of :class:`TicketStore`: a store without it still serves tickets, but grants
    whose tokens are bound to a DPoP key need it (a configuration error otherwise). Every
    worker and host sharing the store sees the same claims.
    """

    def claim(self, key: str, ttl: float) -> bool:
        """Remember ``key`` for ``ttl`` seconds; True only for the first caller within that time.

        When many callers race on one key, exactly one gets True. Raises StoreError when
        the backend fails: the caller must then refuse, never assume it was first.
        """
        ...
