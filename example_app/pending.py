"""Pending backchannel requests: what happens after the ``auth_req_id``, kept in an SQLite file.

A request the endpoint accepted waits here for the user's decision on the authentication
device (:mod:`.device`) and for the client's polls of the token endpoint (:mod:`.oidc`).
The file (``CIBA_DEMO_DATABASE``, ``ciba-demo.sqlite3`` by default) is shared by every
process serving the demo, as the ticket store is; each call opens its own short connection,
and the steps that read then write run in one ``BEGIN IMMEDIATE`` transaction, so two
polls of one ``auth_req_id`` cannot both collect its tokens.

The ``auth_req_id`` itself is not stored, only its SHA-256: a copy of the file does not let
anyone collect tokens. The device knows a request by another random id of its own.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ciba_middleware import sha256_hex

__all__ = ["RETENTION", "Pending", "PendingRequests", "Poll"]

#: Seconds a request is kept after it expired (answering ``expired_token``), then forgotten
#: (``invalid_grant``).
RETENTION = 600

#: What a poll of the token endpoint finds: the tokens, or the error to answer.
Poll = Literal["tokens", "authorization_pending", "slow_down", "access_denied", "expired_token", "invalid_grant"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS demo_pending (
    auth_req_id_sha256 TEXT PRIMARY KEY,
    device_id TEXT NOT NULL UNIQUE,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    scope TEXT NOT NULL,
    binding_message TEXT,
    resources TEXT NOT NULL,
    ticket TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    interval REAL NOT NULL,
    last_poll REAL,
    status TEXT NOT NULL,
    decided_at REAL
)
"""
_COLUMNS = (
    "device_id, client_id, subject, scope, binding_message, resources, ticket, "
    "created_at, expires_at, interval, status, decided_at"
)


@dataclass(frozen=True)
class Pending:
    """One backchannel request after its ``auth_req_id``."""

    device_id: str
    client_id: str
    subject: str
    scope: str
    binding_message: str | None
    resources: tuple[str, ...]
    ticket: str
    created_at: float
    expires_at: float
    interval: float
    #: ``pending``, ``approved``, ``denied`` (the user decided) or ``collected`` (the client polled the decision).
    status: str
    decided_at: float | None


def _row(row: tuple[object, ...]) -> Pending:
    (device_id, client_id, subject, scope, binding, resources, ticket, created, expires, interval, status, decided) = (
        row
    )
    return Pending(
        device_id=str(device_id),
        client_id=str(client_id),
        subject=str(subject),
        scope=str(scope),
        binding_message=None if binding is None else str(binding),
        resources=tuple(json.loads(str(resources))),
        ticket=str(ticket),
        created_at=float(created),  # type: ignore[arg-type]
        expires_at=float(expires),  # type: ignore[arg-type]
        interval=float(interval),  # type: ignore[arg-type]
        status=str(status),
        decided_at=None if decided is None else float(decided),  # type: ignore[arg-type]
    )


class PendingRequests:
    """The demo's pending requests in the SQLite file at ``path``; the table is created on first use."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with self._connect() as db:
            db.execute(_SCHEMA)

    @contextmanager
    def _connect(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """A connection of its own, inside ``begin`` ... ``COMMIT``: a read-then-write takes the lock first."""
        with closing(sqlite3.connect(self.path, timeout=10, isolation_level=None)) as db:
            db.execute(begin)
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def add(
        self,
        auth_req_id: str,
        *,
        client_id: str,
        subject: str,
        scope: str,
        binding_message: str | None,
        resources: tuple[str, ...],
        ticket: str,
        expires_in: float,
        interval: float,
        now: float | None = None,
    ) -> str:
        """Record an accepted request; returns its device id. Forgets requests expired long ago."""
        now = time.time() if now is None else now
        device_id = secrets.token_urlsafe(16)
        with self._connect() as db:
            db.execute("DELETE FROM demo_pending WHERE expires_at < ?", (now - RETENTION,))
            db.execute(
                "INSERT INTO demo_pending (auth_req_id_sha256, device_id, client_id, subject, scope, binding_message,"
                " resources, ticket, created_at, expires_at, interval, last_poll, status, decided_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 'pending', NULL)",
                (
                    sha256_hex(auth_req_id),
                    device_id,
                    client_id,
                    subject,
                    scope,
                    binding_message,
                    json.dumps(list(resources)),
                    ticket,
                    now,
                    now + expires_in,
                    interval,
                ),
            )
        return device_id

    def waiting_for(self, subject: str, now: float | None = None) -> list[Pending]:
        """The user's requests still waiting for a decision, oldest first."""
        now = time.time() if now is None else now
        with self._connect("BEGIN") as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM demo_pending"
                " WHERE subject = ? AND status = 'pending' AND expires_at > ? ORDER BY created_at",
                (subject, now),
            ).fetchall()
        return [_row(row) for row in rows]

    def decide(self, subject: str, device_id: str, approve: bool, now: float | None = None) -> Pending | None:
        """The user approves or denies one of their waiting requests; None if it is not waiting."""
        now = time.time() if now is None else now
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM demo_pending"
                " WHERE device_id = ? AND subject = ? AND status = 'pending' AND expires_at > ?",
                (device_id, subject, now),
            ).fetchone()
            if row is None:
                return None
            status = "approved" if approve else "denied"
            db.execute(
                "UPDATE demo_pending SET status = ?, decided_at = ? WHERE device_id = ?", (status, now, device_id)
            )
        return dataclasses.replace(_row(row), status=status, decided_at=now)

    def poll(self, auth_req_id: str, client_id: str, now: float | None = None) -> tuple[Poll, Pending | None]:
        """A poll of the token endpoint (CIBA Core 10-11): what to answer, and the request.

        A decision is answered once: the poll that collects the tokens, or the denial,
        marks the request ``collected``, and later polls get ``invalid_grant``. A poll
        sooner than ``interval`` after the previous one gets ``slow_down``, and the
        interval grows by 5 seconds for that request, as CIBA Core 11 tells the client.
        """
        now = time.time() if now is None else now
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_COLUMNS}, last_poll FROM demo_pending WHERE auth_req_id_sha256 = ?",
                (sha256_hex(auth_req_id),),
            ).fetchone()
            if row is None:
                return "invalid_grant", None
            pending, last_poll = _row(row[:-1]), row[-1]
            if pending.client_id != client_id or pending.status == "collected":
                return "invalid_grant", None
            if pending.expires_at <= now:
                return "expired_token", pending
            if pending.status == "pending":
                too_soon = last_poll is not None and now - float(last_poll) < pending.interval
                interval = pending.interval + 5 if too_soon else pending.interval
                db.execute(
                    "UPDATE demo_pending SET last_poll = ?, interval = ? WHERE device_id = ?",
                    (now, interval, pending.device_id),
                )
                return ("slow_down" if too_soon else "authorization_pending"), pending
            db.execute("UPDATE demo_pending SET status = 'collected' WHERE device_id = ?", (pending.device_id,))
            return ("tokens" if pending.status == "approved" else "access_denied"), pending
