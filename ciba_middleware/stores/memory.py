"""``memory://``: tickets in a dict of this process.

For tests, demos and single-process servers. Nothing is shared between processes and
everything is lost on restart; use ``sqlite://`` for that.
"""

from __future__ import annotations

import heapq
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from . import schemes_of
from .base import DEFAULT_TTL, check_record_key, check_record_value, checked_ttl, default_ttl_option, new_ticket

__all__ = ["MemoryTicketStore"]

# Records are swept of expired ones once every this many adds.
_SWEEP_RECORDS_EVERY = 256


class MemoryTicketStore:
    """An in-process ticket store.

    Expired tickets are invisible at once and swept out lazily on each ``issue``, so
    memory stays bounded by the tickets alive within one TTL.

    A ticket is kept under the pair (service, ticket), so deleting it is one ``dict.pop``:
    atomic without a lock of ours, and a ticket of another service is simply not found.

    The CIBA family's records (:class:`~ciba_middleware.stores.base.RecordStore`) are kept the
    same way, each compare-and-swap under the store's lock, and swept of expired ones once
    every 256 adds.

    >>> store = MemoryTicketStore(default_ttl=60)
    >>> t = store.issue("42")
    >>> store.exists("42", t), store.exists("43", t)
    (True, False)
    """

    def __init__(self, *, default_ttl: float = DEFAULT_TTL) -> None:
        default_ttl = default_ttl_option(default_ttl)
        self.default_ttl = default_ttl
        # (service_id, ticket) -> expires_at
        self._tickets: dict[tuple[str, str], float] = {}
        # (expires_at, (service_id, ticket)), a heap; the lock guards it, not the dict
        self._expiry: list[tuple[float, tuple[str, str]]] = []
        self._lock = threading.Lock()
        # (service_id, key) -> (value, expires_at): the CIBA family's records; the lock
        # makes each compare-and-swap atomic.
        self._records: dict[tuple[str, str], tuple[bytes, float]] = {}
        self._adds = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryTicketStore:
        parts = urlsplit(url)
        if parts.scheme.lower() not in schemes_of(cls):
            raise ConfigurationError(f"not a memory URL: {parts.scheme}://")
        if parts.netloc or parts.path not in ("", "/") or parts.query:
            raise ConfigurationError(f"memory:// takes no host, path or options: {url!r}")
        return cls(**options)

    def issue(self, service_id: str, ttl: float | None = None) -> str:
        ttl = self.default_ttl if ttl is None else checked_ttl(ttl)
        ticket = new_ticket()
        key = (service_id, ticket)
        now = time.monotonic()
        expires_at = now + ttl
        with self._lock:
            self._sweep(now)
            self._tickets[key] = expires_at
            heapq.heappush(self._expiry, (expires_at, key))
        return ticket

    def exists(self, service_id: str, ticket: str) -> bool:
        expires_at = self._tickets.get((service_id, ticket))
        return expires_at is not None and expires_at > time.monotonic()

    def delete(self, service_id: str, ticket: str) -> bool:
        # One pop: of many threads racing on a ticket, exactly one gets it.
        expires_at = self._tickets.pop((service_id, ticket), None)
        return expires_at is not None and expires_at > time.monotonic()

    def ping(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            self._tickets.clear()
            self._expiry.clear()
            self._records.clear()

    def __len__(self) -> int:
        """Tickets held, expired ones not yet swept included."""
        return len(self._tickets)

    def _sweep(self, now: float) -> None:
        expiry = self._expiry
        tickets = self._tickets
        while expiry and expiry[0][0] <= now:
            _, key = heapq.heappop(expiry)
            # A delete may pop the same key at any moment: pop, never del.
            if tickets.get(key, now) <= now:
                tickets.pop(key, None)

    def claim(self, key: str, ttl: float) -> bool:
        """:meth:`ciba_middleware.stores.base.ReplayCache.claim`, in this process only."""
        ttl = checked_ttl(ttl)
        now = time.monotonic()
        with self._lock:
            claims: dict[str, float] = self.__dict__.setdefault("_claims", {})
            if len(claims) >= 1024:
                for old in [k for k, until in claims.items() if until <= now]:
                    del claims[old]
            if claims.get(key, now) > now:
                return False
            claims[key] = now + ttl
            return True

    # -- RecordStore -------------------------------------------------------------------

    def add(self, service_id: str, key: str, value: bytes, ttl: float) -> bool:
        """:meth:`ciba_middleware.stores.base.RecordStore.add`, in this process only."""
        check_record_key(key)
        value = check_record_value(value)
        ttl = checked_ttl(ttl)
        now = time.monotonic()
        with self._lock:
            self._adds += 1
            if self._adds % _SWEEP_RECORDS_EVERY == 0:
                for old in [k for k, (_, until) in self._records.items() if until <= now]:
                    del self._records[old]
            found = self._records.get((service_id, key))
            if found is not None and found[1] > now:
                return False
            self._records[(service_id, key)] = (bytes(value), now + ttl)
            return True

    def get(self, service_id: str, key: str) -> bytes | None:
        check_record_key(key)
        found = self._records.get((service_id, key))
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    def swap(self, service_id: str, key: str, expected: bytes, value: bytes, ttl: float | None = None) -> bool:
        check_record_key(key)
        value = check_record_value(value)
        expected = check_record_value(expected, "expected value")
        if ttl is not None:
            ttl = checked_ttl(ttl)
        now = time.monotonic()
        with self._lock:
            found = self._records.get((service_id, key))
            if found is None or found[1] <= now or found[0] != expected:
                return False
            self._records[(service_id, key)] = (bytes(value), found[1] if ttl is None else now + ttl)
            return True

    def take(self, service_id: str, key: str) -> bytes | None:
        check_record_key(key)
        with self._lock:
            found = self._records.pop((service_id, key), None)
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]
