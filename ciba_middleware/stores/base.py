"""The ticket store protocol and the pieces every backend shares."""

from __future__ import annotations

import hashlib
import importlib
import math
import re
import secrets
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_TTL",
    "MAX_RECORD_VALUE",
    "MAX_TTL",
    "AsyncTicketStore",
    "RecordStore",
    "ReplayCache",
    "TicketStore",
    "check_record_key",
    "check_record_value",
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

#: The largest value a record may hold: :class:`RecordStore`'s bound, the same on every backend.
MAX_RECORD_VALUE = 64 * 1024

# token_urlsafe(32) gives 43 characters; accept a little more so tickets issued by a
# later version with more entropy still pass.
_TICKET = re.compile(r"[A-Za-z0-9_-]{32,128}")


def checked_ttl(ttl: object, name: str = "ttl") -> float:
    """``ttl`` as seconds, or ValueError unless it is a number above 0 and at most :data:`MAX_TTL`."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL:
        raise ValueError(f"{name} must be a number of seconds above 0 and at most {MAX_TTL:g}, not {ttl!r}")
    return float(ttl)


def check_record_key(key: object) -> str:
    """``key`` when it can name a :class:`RecordStore` record: 1-200 printable ASCII
    characters (space to ``~``); ValueError otherwise.

    Every backend calls it before anything else, so none ever sees a control character,
    a NUL or a surrogate in a key, and a key means the same on all of them.

    >>> check_record_key("auth_req_id:3q2-7w")
    'auth_req_id:3q2-7w'
    >>> check_record_key("a\\nb")
    Traceback (most recent call last):
    ...
    ValueError: a record key must be 1-200 printable ASCII characters, not 'a\\nb'
    """
    # isascii() and isprintable() together: space to ``~``, as the pattern [\x20-\x7e] says,
    # without a regular expression's call on every record call.
    if not isinstance(key, str) or not (0 < len(key) <= 200 and key.isascii() and key.isprintable()):
        shown = repr(key) if not isinstance(key, str) or len(key) <= 40 else repr(key[:40]) + "..."
        raise ValueError(f"a record key must be 1-200 printable ASCII characters, not {shown}")
    return key


def check_record_value(value: object, name: str = "value") -> bytes:
    """``value`` when a :class:`RecordStore` record can hold it: bytes, at most
    :data:`MAX_RECORD_VALUE` (64 KiB), empty allowed; ValueError otherwise.

    ``name`` says which argument was wrong (``swap`` checks its ``expected`` too: a value no
    record can hold is a caller's mistake, not a lost race).
    """
    if not isinstance(value, bytes):
        # ValueError, not TypeError: the protocol's one error for a bad argument, as checked_ttl's.
        raise ValueError(f"a record {name} must be bytes, not {type(value).__name__}")  # noqa: TRY004
    if len(value) > MAX_RECORD_VALUE:
        raise ValueError(f"a record {name} must be at most {MAX_RECORD_VALUE} bytes, not {len(value)}")
    return value


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
    # The first 6 bytes' hex: the first 12 digits of hexdigest(), without the other 52.
    digest: bytes = _sha256(data).digest()
    return digest[:6].hex()


# SHA-256 from CPython's own module when it has one (``_sha2`` from 3.12, ``_sha256`` before):
# the same digest as hashlib's, without setting up an OpenSSL context per call (2,000 of the
# 7,700 instructions a hash cost); hashlib's where the interpreter lacks it.
_sha256: Callable[[bytes], Any] = hashlib.sha256
for _module in ("_sha2", "_sha256"):
    try:
        _sha256 = importlib.import_module(_module).sha256
        break
    except (ImportError, AttributeError):
        continue


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


@runtime_checkable
class RecordStore(Protocol):
    """A store that also keeps the CIBA family's records, optionally.

    A record is a small value (bytes, at most 64 KiB; JSON in practice) under a key of one
    service: a backchannel authentication request, an auth_req_id's state, an access
    token's digest. It lives until its TTL runs out (an expired record is absent to every
    method) and changes only by compare-and-swap, so that each transition of a request
    (issue, complete, a poll, the token exchange) is atomic across threads, workers and
    hosts: of callers racing on one record, exactly one wins.

    Not part of :class:`TicketStore`: a store without it still serves the fail API; the
    family's routes need it (a configuration error otherwise). Keys are 1-200 printable
    ASCII characters; a record of another service is never seen or touched. Every method
    raises StoreError when the backend fails: the caller must then refuse, never assume.
    """

    def add(self, service_id: str, key: str, value: bytes, ttl: float) -> bool:
        """Create the record unless a live one has ``key``; True when this call created it."""
        ...

    def get(self, service_id: str, key: str) -> bytes | None:
        """The live record's value, or None."""
        ...

    def swap(self, service_id: str, key: str, expected: bytes, value: bytes, ttl: float | None = None) -> bool:
        """Replace the live record's value with ``value`` when it is exactly ``expected``.

        ``ttl`` gives the record a new life from now; None keeps its expiry. True when this
        call replaced it; False when the record is absent, expired or holds another value.
        """
        ...

    def take(self, service_id: str, key: str) -> bytes | None:
        """Delete the live record and return its value; of racing callers exactly one gets it."""
        ...


@runtime_checkable
class AsyncTicketStore(Protocol):
    """A store whose delete also has a path for an event loop, optionally.

    The ASGI adapter awaits :meth:`delete_async` instead of running :meth:`TicketStore.delete`
    in a worker thread. Same semantics as ``delete`` (the same statement or script, one round
    trip, the same :class:`~ciba_middleware.errors.StoreError` and recovery); what it holds on
    the loop (a redis-py asyncio client, a psycopg async pool) is made lazily on the running
    loop, again on another loop or after a fork, and released by ``close``.
    """

    async def delete_async(self, service_id: str, ticket: str) -> bool:
        """:meth:`TicketStore.delete`, awaited on the running event loop."""
        ...

    async def close_async(self) -> None:
        """Release what the running loop holds (its client or pool); ``close`` releases the rest."""
        ...
