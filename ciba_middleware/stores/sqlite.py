"""``sqlite:///path``: the embedded default, on the standard library's sqlite3.

One database file, shared by every thread and every process on the host (gunicorn
workers, the CLI): SQLite's write lock makes each delete atomic, and WAL journaling lets
readers and the single writer proceed together. Not for files on network filesystems,
where SQLite's locking is unreliable; use Redis or PostgreSQL across hosts.

URL forms (as in SQLAlchemy): ``sqlite:///relative/file.db``, ``sqlite:////abs/file.db``.
Query options: ``timeout`` (seconds to wait for the write lock, default 5) and
``table`` (default ``ciba_tickets``).

The file is looked up on every call (one ``stat``, about a microsecond): when it was
replaced (a file renamed over it) or removed, the old file's WAL is emptied into it (SQLite
would leave it at the path for the new file to pick up), the connections opened on it are
closed, and the call opens the file now at the path, creating it and the table if need be,
so that a worker never keeps answering from a file nobody else sees. A path that cannot be
opened any more (its directory gone) fails the call with a StoreError.

Idle connections are closed by :meth:`SQLiteTicketStore.close`, or when the store is
garbage-collected (``weakref.finalize``), or at interpreter exit, whichever comes first:
a store dropped without ``close()`` leaves no ``ResourceWarning: unclosed database``
(Python 3.13) behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import ConfigurationError, StoreError
from . import schemes_of
from .base import DEFAULT_TTL, checked_ttl, default_ttl_option, new_ticket, number_option

__all__ = ["SQLiteTicketStore"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Idle connections kept for reuse; more threads at once open and close their own.
_MAX_IDLE = 16
# Sweep expired rows once every this many issues: cheap, and bounded.
_SWEEP_EVERY = 256

#: A file as the kernel knows it, (st_dev, st_ino); None when nothing is at the path.
_FileId = tuple[int, int] | None
#: Connections a forked process found in its parent's store: never used, and never closed
#: (closing may checkpoint and unlink the -wal file the parent still uses); kept here so
#: the garbage collector does not close them either.
_INHERITED: list[sqlite3.Connection] = []


class SQLiteTicketStore:
    """Tickets in one SQLite file.

    >>> store = SQLiteTicketStore(":memory:")
    >>> t = store.issue("42", ttl=60)
    >>> store.delete("43", t), store.delete("42", t), store.delete("42", t)
    (False, True, False)
    """

    def __init__(
        self,
        path: str,
        *,
        default_ttl: float = DEFAULT_TTL,
        timeout: float = 5.0,
        table: str = "ciba_tickets",
    ) -> None:
        default_ttl = default_ttl_option(default_ttl)
        timeout = number_option("sqlite", "timeout", timeout, maximum=3600.0)
        if not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(f"sqlite table must be an SQL identifier, not {table!r}")
        if "\x00" in path:
            raise ConfigurationError(f"sqlite path must not contain a NUL character (%00): {path!r}")
        self.path = path
        self.default_ttl = default_ttl
        self.timeout = timeout
        self.table = table
        # Idle connections, each with the file it was opened on, reused by whichever thread
        # comes next. Not one per thread: a server that starts a thread per request would
        # otherwise leak a file per request. The list is only ever changed in place: the
        # finalizer holds it.
        self._idle: list[tuple[sqlite3.Connection, _FileId]] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._issued = 0
        self._issue_sql = f"INSERT INTO {table} (ticket, service, expires_at) VALUES (?, ?, ?)"
        self._exists_sql = f"SELECT 1 FROM {table} WHERE ticket = ? AND service = ? AND expires_at > ?"
        self._delete_sql = f"DELETE FROM {table} WHERE ticket = ? AND service = ? AND expires_at > ?"
        self._sweep_sql = f"DELETE FROM {table} WHERE expires_at <= ?"
        # ":memory:" would give each connection a database of its own: keep exactly one,
        # used by one thread at a time.
        self._shared = path == ":memory:"
        self._shared_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_idle, self._idle, self._pid)
        # Create the schema now, so a bad path fails at start-up, not on the first request.
        try:
            if self._shared:
                self._release(self._open(), None)
            else:
                self._release(*self._take())
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open SQLite ticket store {path!r}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteTicketStore:
        parts = urlsplit(url)
        if parts.scheme.lower() not in schemes_of(cls):
            raise ConfigurationError(f"not an sqlite URL: {parts.scheme}://")
        if parts.netloc:
            raise ConfigurationError(
                f"sqlite URLs have no host: use sqlite:///relative.db or sqlite:////absolute.db, not {url!r}"
            )
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        if not path:
            raise ConfigurationError(f"sqlite URL names no file: {url!r}")
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "timeout":
                options["timeout"] = number_option("sqlite", "timeout", value, maximum=3600.0)
            elif key == "table":
                options["table"] = value
            else:
                raise ConfigurationError(f"unknown sqlite store option {key!r} (known: timeout, table)")
        return cls(path, **options)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one statement, taken from the idle ones or opened."""
        if self._pid != os.getpid():
            # A connection must not cross a fork: a gunicorn worker opens its own. The
            # parent's are left alone, as SQLite asks (see _INHERITED).
            with self._lock:
                _INHERITED.extend(conn for conn, _ in self._idle)
                self._idle.clear()
                self._pid = os.getpid()
                self._finalizer.detach()
                self._finalizer = weakref.finalize(self, _close_idle, self._idle, self._pid)
        if self._shared:
            with self._shared_lock:
                yield self._idle[0][0] if self._idle else self._release(self._open(), None)
            return
        conn, file = self._take()
        try:
            yield conn
        finally:
            self._release(conn, file)

    def _take(self) -> tuple[sqlite3.Connection, _FileId]:
        """An idle connection on the file now at the path, or a new one. Connections on a
        file since replaced or removed are closed on the way."""
        file = _file_id(self.path)
        stale: list[sqlite3.Connection] = []
        found: sqlite3.Connection | None = None
        with self._lock:
            while self._idle:
                conn, opened_on = self._idle.pop()
                if opened_on == file:
                    found = conn
                    break
                stale.append(conn)
        if stale:
            # SQLite names the -wal file after the path, and leaves the old file's there
            # when it was moved: the next connection at the path would take its pages for
            # the new file's. Emptied first, it leaves the new file as it is.
            with contextlib.suppress(sqlite3.Error):
                stale[0].execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for conn in stale:
                conn.close()
        if found is not None:
            return found, file
        if file is None and not self._shared:
            _create_alone(self.path)
        # The file may be replaced while we open it: the connection is kept only when the
        # path names the same file before and after.
        for _ in range(3):
            conn = self._open()
            opened_on = _file_id(self.path)
            if opened_on is not None and file in (None, opened_on):
                return conn, opened_on
            conn.close()
            file = opened_on
        raise sqlite3.OperationalError(f"{self.path} keeps being replaced")

    def _release(self, conn: sqlite3.Connection, file: _FileId) -> sqlite3.Connection:
        with self._lock:
            if len(self._idle) < _MAX_IDLE:
                self._idle.append((conn, file))
                return conn
        conn.close()
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.timeout,
            isolation_level=None,  # autocommit: every statement is its own transaction
            check_same_thread=False,  # a connection moves between threads, used by one at a time
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if not self._shared:
                conn.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL is durable against application crashes; a power loss may lose
                # the last tickets, which only makes those requests fail as expired.
                conn.execute("PRAGMA synchronous = NORMAL")
            # On every new connection: the file may be new (replaced, removed). When the
            # table is there this takes no lock and costs microseconds.
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "ticket TEXT PRIMARY KEY, service TEXT NOT NULL, expires_at REAL NOT NULL"
                ") WITHOUT ROWID"
            )
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_expires_at ON {self.table} (expires_at)")
        except BaseException:
            conn.close()
            raise
        return conn

    def issue(self, service_id: str, ttl: float | None = None) -> str:
        ttl = self.default_ttl if ttl is None else checked_ttl(ttl)
        ticket = new_ticket()
        now = time.time()
        self._issued += 1
        try:
            with self._connection() as conn:
                conn.execute(self._issue_sql, (ticket, service_id, now + ttl))
                if self._issued % _SWEEP_EVERY == 0:
                    conn.execute(self._sweep_sql, (now,))
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        return ticket

    def exists(self, service_id: str, ticket: str) -> bool:
        try:
            with self._connection() as conn:
                row = conn.execute(self._exists_sql, (ticket, service_id, time.time())).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        except UnicodeEncodeError:
            # A lone surrogate cannot be stored, so no such ticket exists.
            return False
        return row is not None

    def delete(self, service_id: str, ticket: str) -> bool:
        try:
            with self._connection() as conn:
                deleted = conn.execute(self._delete_sql, (ticket, service_id, time.time())).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        except UnicodeEncodeError:
            return False
        return deleted == 1

    def sweep(self) -> int:
        """Delete expired rows now; returns how many. ``issue`` does this now and then."""
        try:
            with self._connection() as conn:
                return conn.execute(self._sweep_sql, (time.time(),)).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def ping(self) -> None:
        try:
            with self._connection() as conn:
                conn.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def close(self) -> None:
        self._finalizer()

    def claim(self, key: str, ttl: float) -> bool:
        """:meth:`ciba_middleware.stores.base.ReplayCache.claim`: a row in ``{table}_replay``.

        One upsert: a live row is left alone (no change counted), an expired one is taken
        over, so of many processes racing on a key exactly one sees a change.
        """
        ttl = checked_ttl(ttl)
        replay = f"{self.table}_replay"
        now = time.time()
        try:
            with self._connection() as conn:
                if not self.__dict__.get("_replay_ready"):
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {replay} (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)"
                        " WITHOUT ROWID"
                    )
                    self._replay_ready = True
                changed = conn.execute(
                    f"INSERT INTO {replay} (key, expires_at) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE expires_at <= ?",
                    (key, now + ttl, now),
                ).rowcount
                self._claims = self.__dict__.get("_claims", 0) + 1
                if self._claims % 256 == 0:
                    conn.execute(f"DELETE FROM {replay} WHERE expires_at <= ?", (now,))
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        return bool(changed == 1)


def _create_alone(path: str) -> None:
    """Create the database file at ``path`` without the -wal and -shm of a removed one.

    A -wal and -shm left at the path belong to a database that was removed, and that
    another process may still hold open: SQLite would pair them with the new file. The
    process that creates the file (atomically: ``O_EXCL``) unlinks them first; the old
    file's holders keep theirs. Anything else, SQLite's own open reports.
    """
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except OSError:
        return
    for side in ("-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.unlink(path + side)


def _file_id(path: str) -> _FileId:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _close_idle(idle: list[tuple[sqlite3.Connection, _FileId]], pid: int) -> None:
    """Close the idle connections of a store (its ``close()``, or its finalizer), in the
    process that opened them only."""
    connections = [conn for conn, _ in idle]
    idle.clear()
    for conn in connections:
        if pid == os.getpid():
            conn.close()
        else:
            _INHERITED.append(conn)
