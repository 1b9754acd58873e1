"""The state of each backchannel authentication request, on a :class:`RecordStore`.

Three kinds of record, each under a key of the request's service (so that one service
never sees another's)::

    ciba:req:{ticket}            the request, from /backchannel/authentication until complete
    ciba:arid:{sha256(auth_req_id)}   its state, from issue until a while after it expires
    ciba:at:{sha256(access_token)}    an access token, for its lifetime

Requests and access tokens are JSON. A state is a :class:`State`: the fields a token poll
reads, tab-separated, then the others as JSON, which a poll neither parses nor writes again
(:func:`encode_state`). Every change of a state is a compare-and-swap of the bytes read
(:meth:`Records.change`), so that of workers racing on one request exactly one moves it on
(issue, complete, a poll, the token exchange). auth_req_ids and access tokens appear in keys
as digests only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

from ..errors import StoreError
from ..stores.base import RecordStore, ticket_hash
from ..tuples import new_tuple
from .answers import StoreDown

__all__ = ["Records", "State", "decode_state", "digest_key", "encode", "encode_state", "pending_state", "request_key"]

log = logging.getLogger(__name__)

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
#: Tries of a compare-and-swap that lost a race before the call gives up (each loss means
#: another call changed the record, so the next read sees a newer state).
_TRIES = 8
_Result = TypeVar("_Result")


def digest_key(kind: str, secret: str) -> str:
    """``ciba:{kind}:{sha256 hex}``: a record's key named by a secret, never the secret."""
    return f"ciba:{kind}:{hashlib.sha256(secret.encode('utf-8', 'surrogatepass')).hexdigest()}"


def request_key(ticket: str) -> str:
    return f"ciba:req:{ticket}"


def encode(value: Mapping[str, Any]) -> bytes:
    """A record's bytes, as the store keeps them (and as a compare-and-swap expects them)."""
    return _encode(value).encode("ascii")


class State(NamedTuple):
    """A request's state from issue until a while after it expires (``ciba:arid:...``).

    The fields every token poll reads, and ``details``: the others (scopes, resources, the
    notification token; once complete, the decision's), a JSON object kept as its bytes and
    parsed by :meth:`more` only when needed. A poll that answers ``authorization_pending``
    or ``slow_down`` writes ``details`` back as it read it.
    """

    #: ``pending``, ``authorized``, ``denied``, ``failed`` or ``used``.
    state: str
    #: The client's ``client_id`` as configured.
    client: str
    #: ``poll``, ``ping`` or ``push``.
    mode: str
    expires_at: float
    #: Seconds between polls (0: no ``slow_down``), and when the client last polled.
    interval: int
    last_poll: float | None
    details: bytes

    def more(self) -> dict[str, Any]:
        """``details``, parsed."""
        value = json.loads(self.details)
        assert isinstance(value, dict)
        return value


#: The first field of a state's bytes: the format's version (records of other kinds, JSON,
#: begin with ``{``).
_STATE_TAG = b"S1"


def encode_state(state: State) -> bytes:
    """A state's bytes: ``S1``, the state, the mode, the interval, ``expires_at`` and
    ``last_poll`` (``repr``: exact; empty for None), the client, each followed by a tab, then
    ``details``. A client_id is printable (:mod:`~ciba_middleware.ciba.clients`), so it holds
    no tab."""
    last = "" if state.last_poll is None else repr(state.last_poll)
    head = f"{state.state}\t{state.mode}\t{state.interval}\t{state.expires_at!r}\t{last}\t{state.client}\t"
    return b"S1\t" + head.encode("utf-8") + state.details


def decode_state(raw: bytes) -> State:
    """The state ``encode_state`` wrote; ValueError for any other bytes."""
    tag, state, mode, interval, expires_at, last, client, details = raw.split(b"\t", 7)
    if tag != _STATE_TAG:
        raise ValueError("not a request's state")
    return new_tuple(
        State,
        (
            state.decode("ascii"),
            client.decode("utf-8"),
            mode.decode("ascii"),
            float(expires_at),
            int(interval),
            float(last) if last else None,
            details,
        ),
    )


def pending_state(
    request: Mapping[str, Any], *, client: str, mode: str, now: float, lifetime: int, interval: int
) -> State:
    """The state of a request just given its auth_req_id (under ``digest_key("arid", ...)``):
    pending, never polled. ``request`` is the request's record (``ciba:req:{ticket}``)."""
    details = {
        "scopes": request["scopes"],
        "acrs": request["acrs"],
        "resources": request["resources"],
        "notification_token": request["notification_token"],
    }
    return State("pending", client, mode, now + lifetime, interval, None, encode(details))


class Records:
    """Records on ``store``: JSON, or a :class:`State`; a StoreError becomes :class:`StoreDown`
    (logged without secrets)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    def _failed(self, what: str, service: str, key: str, exc: StoreError) -> StoreDown:
        # Keys hold tickets in clear: logged as their hash only.
        log.error("record store failed (%s, service %s, record %s): %s", what, service, ticket_hash(key), exc)
        return StoreDown("the store failed; see the server log.")

    def add(self, service: str, key: str, value: dict[str, Any] | State, ttl: float) -> bool:
        try:
            return self.store.add(service, key, _bytes(value), ttl)
        except StoreError as exc:
            raise self._failed("add", service, key, exc) from exc

    def _raw(self, service: str, key: str) -> bytes | None:
        try:
            return self.store.get(service, key)
        except StoreError as exc:
            raise self._failed("get", service, key, exc) from exc

    def get(self, service: str, key: str) -> tuple[dict[str, Any], bytes] | None:
        """The JSON record and its bytes (what a swap expects), or None."""
        raw = self._raw(service, key)
        if raw is None:
            return None
        value = json.loads(raw)
        assert isinstance(value, dict)
        return value, raw

    def take(self, service: str, key: str) -> dict[str, Any] | None:
        try:
            raw = self.store.take(service, key)
        except StoreError as exc:
            raise self._failed("take", service, key, exc) from exc
        if raw is None:
            return None
        value = json.loads(raw)
        assert isinstance(value, dict)
        return value

    def swap(
        self, service: str, key: str, expected: bytes, value: dict[str, Any] | State, ttl: float | None = None
    ) -> bool:
        try:
            return self.store.swap(service, key, expected, _bytes(value), ttl)
        except StoreError as exc:
            raise self._failed("swap", service, key, exc) from exc

    def change(
        self,
        service: str,
        key: str,
        decide: Callable[[State], tuple[State | None, _Result]],
    ) -> tuple[State | None, _Result | None]:
        """Move a request's state on atomically: ``decide(state)`` gives the new state (None:
        leave it) and a result; the new state is written only if the record is still what
        was read, else read again and decided again.

        Returns (the state as read, or None when absent; the result). ``decide`` is not
        called for an absent record (the result is then None).
        """
        get = self.store.get
        for _ in range(_TRIES):
            try:
                raw = get(service, key)
            except StoreError as exc:
                raise self._failed("get", service, key, exc) from exc
            if raw is None:
                return None, None
            state = decode_state(raw)
            new, result = decide(state)
            if new is None or self.swap(service, key, raw, new):
                return state, result
        raise StoreDown("the request changed too often to be moved on; try again.", code="102", status=503)


def _bytes(value: dict[str, Any] | State) -> bytes:
    return encode_state(value) if isinstance(value, State) else encode(value)
