"""The ticket store protocol and the pieces every backend shares."""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from typing import Protocol, runtime_checkable

from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_TTL",
    "TicketStore",
    "checked_ttl",
    "default_ttl_option",
    "new_ticket",
    "ticket_hash",
    "well_formed",
]

#: Seconds a ticket lives when neither the store nor the call says otherwise.
#: Authlete keeps backchannel tickets for the life of the request; ten minutes covers
#: CIBA's usual ``expires_in`` with room to spare.
DEFAULT_TTL = 600.0

# token_urlsafe(32) gives 43 characters; accept a little more so tickets issued by a
# later version with more entropy still pass.
_TICKET = re.compile(r"[A-Za-z0-9_-]{32,128}")


def checked_ttl(ttl: object, name: str = "ttl") -> float:
    """``ttl`` as seconds, or ValueError unless it is a positive, finite number."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ValueError(f"{name} must be positive, not {ttl!r}")
    return float(ttl)


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
    return hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).hexdigest()[:12]


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
