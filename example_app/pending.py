"""The users' devices' inbox: requests waiting for a decision, kept in an SQLite file.

:meth:`~example_app.hooks.DemoHooks.start_device` puts each accepted request here; the
device page (:mod:`.device`) lists a user's and takes the decision, which goes to
:meth:`CibaEndpoints.complete <ciba_middleware.ciba.endpoints.CibaEndpoints.complete>`.
Everything else (the auth_req_id, polls, slow_down, the tokens) is the CIBA family's, in
the ticket store. The file (``CIBA_DEMO_DATABASE``, ``ciba-demo.sqlite3`` by default) is
shared by every process serving the demo; each call opens its own short connection, and a
decision takes its row in one ``BEGIN IMMEDIATE`` transaction, so it is taken once.

The device knows a request by a random id of its own; the page also shows the request's
short identifier (its ticket's hash), so that identical requests can be told apart.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ciba_middleware.ciba.endpoints import PendingRequest

__all__ = ["RETENTION", "Pending", "PendingRequests"]

#: Seconds a row is kept after its request expired, then forgotten.
RETENTION = 600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS demo_inbox (
    device_id TEXT PRIMARY KEY,
    short_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    scope TEXT NOT NULL,
    binding_message TEXT,
    resources TEXT NOT NULL,
    ticket TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL
)
"""
_COLUMNS = "device_id, short_id, client_id, subject, scope, binding_message, resources, ticket, created_at, expires_at"


@dataclass(frozen=True)
class Pending:
    """One request waiting for its user."""

    device_id: str
    #: The ticket's short hash: the request's identifier on the page and in the logs.
    short_id: str
    client_id: str
    subject: str
    scope: str
    binding_message: str | None
    resources: tuple[str, ...]
    #: What :meth:`CibaEndpoints.complete` takes.
    ticket: str
    created_at: float
    expires_at: float


def _row(row: tuple[object, ...]) -> Pending:
    device_id, short_id, client_id, subject, scope, binding, resources, ticket, created, expires = row
    return Pending(
        device_id=str(device_id),
        short_id=str(short_id),
        client_id=str(client_id),
        subject=str(subject),
        scope=str(scope),
        binding_message=None if binding is None else str(binding),
        resources=tuple(json.loads(str(resources))),
        ticket=str(ticket),
        created_at=float(created),  # type: ignore[arg-type]
        expires_at=float(expires),  # type: ignore[arg-type]
    )


class PendingRequests:
    """The inbox in the SQLite file at ``path``; the table is created on first use."""

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

    def add(self, subject: str, pending: PendingRequest) -> str:
        """Put an accepted request in ``subject``'s inbox; returns its device id. Forgets old rows."""
        device_id = secrets.token_urlsafe(16)
        request = pending.request
        with self._connect() as db:
            db.execute("DELETE FROM demo_inbox WHERE expires_at < ?", (pending.created_at - RETENTION,))
            db.execute(
                f"INSERT INTO demo_inbox ({_COLUMNS}, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                (
                    device_id,
                    pending.short_id,
                    request.client_id,
                    subject,
                    " ".join(request.scopes),
                    request.binding_message,
                    json.dumps(list(request.resources)),
                    pending.ticket,
                    pending.created_at,
                    pending.expires_at,
                ),
            )
        return device_id

    def waiting_for(self, subject: str, now: float | None = None) -> list[Pending]:
        """The user's requests still waiting for a decision, oldest first."""
        now = time.time() if now is None else now
        with self._connect("BEGIN") as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM demo_inbox"
                " WHERE subject = ? AND status = 'pending' AND expires_at > ? ORDER BY created_at",
                (subject, now),
            ).fetchall()
        return [_row(row) for row in rows]

    def take(self, subject: str, device_id: str, now: float | None = None) -> Pending | None:
        """Take one of the user's waiting requests for a decision; None if it is not waiting."""
        now = time.time() if now is None else now
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM demo_inbox"
                " WHERE device_id = ? AND subject = ? AND status = 'pending' AND expires_at > ?",
                (device_id, subject, now),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE demo_inbox SET status = 'decided' WHERE device_id = ?", (device_id,))
        return _row(row)
