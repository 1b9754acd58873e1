"""``sqlite:///path``: the embedded default, on the standard library's sqlite3.

One database file, shared by every thread and every process on the host (gunicorn
workers, the CLI): SQLite's write lock makes each delete atomic, and WAL journaling lets
readers and the single writer proceed together. Not for files on network filesystems,
where SQLite's locking is unreliable; use Redis or PostgreSQL across hosts.

URL forms (as in SQLAlchemy): ``sqlite:///relative/file.db``, ``sqlite:////abs/file.db``.
Query options: ``timeout`` (seconds to wait for the write lock, default 5) and
``table`` (default ``ciba_tickets``).

A delete is one ``DELETE`` statement on an idle connection, and costs what SQLite's own
transaction costs (WAL-index locks; one page written when the ticket was there) plus a
few Python calls: no ``stat`` of the path, no index beside the table. A database locked by
another process's write is tried again after tens of microseconds, up to ``timeout``,
rather than by SQLite's busy handler, whose first sleep is a millisecond.

The path is looked up (one ``stat``) at most once every :data:`FILE_CHECK_INTERVAL`
seconds per store, and whenever a connection is opened: when the file was replaced (a file
renamed over it) or removed, the first call made that long after the change empties the
old file's WAL into it (SQLite would leave it at the path for the new file to pick up),
closes the connections opened on it, and opens the file now at the path, creating it and
the table if need be, so that a worker never keeps answering from a file nobody else sees.
A path that cannot be opened any more (its directory gone) fails the call with a
StoreError.

Expired rows are never seen (every statement compares ``expires_at``) and are swept by a
full scan at the first ``issue`` of a store, then at most once every
:data:`SWEEP_INTERVAL` seconds: without an index on ``expires_at``, each delete and issue
writes one page instead of two.

The CIBA family's records (:class:`~ciba_middleware.stores.base.RecordStore`) live in a second
table, ``{table}_records`` (service, key, value, expires_at), created at the first record call
and swept with the tickets. Each method is one statement in its own transaction: ``add`` an
upsert that takes over an expired row only, ``swap`` an ``UPDATE`` whose ``WHERE`` holds the
expected value, ``take`` a ``DELETE ... RETURNING``; SQLite's write lock makes each atomic
across threads and processes.

Idle connections are closed by :meth:`SQLiteTicketStore.close`, or when the store is
garbage-collected (``weakref.finalize``), or at interpreter exit, whichever comes first:
a store dropped without ``close()`` leaves no ``ResourceWarning: unclosed database``
(Python 3.13) behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import sqlite3
import threading
import time
import weakref
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import ConfigurationError, StoreError
from . import schemes_of
from .base import (
    DEFAULT_TTL,
    check_record_key,
    check_record_value,
    checked_ttl,
    default_ttl_option,
    new_ticket,
    number_option,
)

__all__ = ["FILE_CHECK_INTERVAL", "SWEEP_INTERVAL", "WAL_AUTOCHECKPOINT", "SQLiteTicketStore"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Idle connections kept for reuse; more threads at once open and close their own.
_MAX_IDLE = 16
#: Seconds a store trusts its last look at the path: a file replaced or removed is seen by
#: the first call made this long after the change, at the latest. A ``stat`` per call cost
#: every delete a system call; this costs one per interval, and every call a read of the
#: monotonic clock (no system call).
FILE_CHECK_INTERVAL = 0.1
#: Seconds between two sweeps of expired rows by one store (each a scan of the table).
SWEEP_INTERVAL = 60.0
#: WAL pages past which every commit runs a checkpoint (SQLite's default: 1000), which syncs
#: the WAL and the file (two fsyncs). Under several busy workers the WAL starts over only
#: after some ten of them (it takes one during which no other process committed), and the
#: first commit after that syncs once more, holding the write lock. At 4000, three to four
#: times fewer fsyncs were measured with two processes deleting at once, for a WAL file of
#: up to 16 MB.
WAL_AUTOCHECKPOINT = 4000
#: Under ASGI, one delete in this many goes to a worker thread (``delete_async``): the loop's
#: connections never checkpoint, the threads' do, so the WAL stays within about
#: WAL_AUTOCHECKPOINT + LOOP_WRITES_PER_THREAD pages.
LOOP_WRITES_PER_THREAD = 1000
# Seconds to sleep before each retry of a statement that found the database locked, then
# the last one until the store's timeout. SQLite's own busy handler sleeps 1 ms, 2, 5, 10,
# ...: a worker that meets another one's write (which holds the lock some 20 us) lost a
# millisecond; here it tries again at once, then after 50 us (about 100 with the kernel's
# timer slack).
_BACKOFF = (0.0, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01)
# Replay claims (``claim``) are swept once every this many.
_SWEEP_CLAIMS_EVERY = 256

#: A file as the kernel knows it, (st_dev, st_ino); None when nothing is at the path.
_FileId = tuple[int, int] | None
#: An idle connection: the connection, a cursor of its own for the hot statements (one
#: object fewer per call than ``Connection.execute``), and the file it was opened on.
_Idle = tuple[sqlite3.Connection, sqlite3.Cursor, _FileId]
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
        # otherwise leak a file per request. Taken with list.pop() and given back with
        # list.append(), each atomic, so the hot path takes no lock of ours. The list is
        # only ever changed in place: the finalizer holds it.
        self._idle: list[_Idle] = []
        # Guards what a fork changes (below); nothing on the hot path.
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # The file at the path when it was last looked up, and when (time.monotonic()).
        self._file: _FileId = None
        self._file_checked = -math.inf
        self._sweep_due = -math.inf  # the first issue sweeps
        self._claims = 0
        self._replay_ready = False
        self._issue_sql = f"INSERT INTO {table} (ticket, service, expires_at) VALUES (?, ?, ?)"
        self._exists_sql = f"SELECT 1 FROM {table} WHERE ticket = ? AND service = ? AND expires_at > ?"
        self._delete_sql = f"DELETE FROM {table} WHERE ticket = ? AND service = ? AND expires_at > ?"
        self._sweep_sql = f"DELETE FROM {table} WHERE expires_at <= ?"
        # The CIBA family's records (RecordStore), in a second table, created at the first
        # call that needs it and swept with the tickets.
        records = f"{table}_records"
        self._records_table = records
        self._records_ready = False
        self._record_add_sql = (
            f"INSERT INTO {records} (service, key, value, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (service, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at "
            "WHERE expires_at <= ?"
        )
        self._record_get_sql = f"SELECT value FROM {records} WHERE service = ? AND key = ? AND expires_at > ?"
        self._record_swap_sql = (
            f"UPDATE {records} SET value = ?, expires_at = coalesce(?, expires_at) "
            "WHERE service = ? AND key = ? AND value = ? AND expires_at > ?"
        )
        self._record_take_sql = (
            f"DELETE FROM {records} WHERE service = ? AND key = ? AND expires_at > ? RETURNING value"
        )
        self._record_sweep_sql = f"DELETE FROM {records} WHERE expires_at <= ?"
        # ":memory:" would give each connection a database of its own: keep exactly one,
        # used by one thread at a time.
        self._shared = path == ":memory:"
        self._shared_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_idle, self._idle, self._pid)
        # The event loop's own idle connections (delete_async), opened without SQLite's
        # automatic checkpoint so that no delete on the loop runs one; and how many deletes
        # the loop made since one of them went to a thread, where a checkpoint may run.
        self._loop_idle: list[_Idle] = []
        self._loop_finalizer = weakref.finalize(self, _close_idle, self._loop_idle, self._pid)
        self._loop_writes = 0
        # Create the schema now, so a bad path fails at start-up, not on the first request.
        try:
            self._give_back(self._take())
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

    def _take(self) -> _Idle:
        """A connection for one call: an idle one on the file at the path, or a new one.

        Every call pays: a ``getpid`` (a connection must not cross a fork, and uWSGI
        forks its workers without running Python's ``os.register_at_fork`` hooks, so a
        hook alone would miss it), a clock read, a ``list.pop``. Hand it back with
        :meth:`_give_back`, in a ``finally``.
        """
        if self._pid != os.getpid():
            self._forked()
        if self._shared:
            self._shared_lock.acquire()
            try:
                if not self._idle:
                    conn = self._open()
                    self._idle.append((conn, conn.cursor(), None))
                return self._idle[0]
            except BaseException:
                self._shared_lock.release()
                raise
        now = time.monotonic()
        if now - self._file_checked >= FILE_CHECK_INTERVAL:
            self._file = _file_id(self.path)
            self._file_checked = now
        try:
            idle = self._idle.pop()
        except IndexError:
            return self._take_slowly(None)
        if idle[2] == self._file:
            return idle
        return self._take_slowly(idle)

    def _take_slowly(self, stale: _Idle | None) -> _Idle:
        """No idle connection on the file last seen at the path: look the path up again,
        close the connections on a file since replaced or removed, and take one on the
        file there now, or open it."""
        file = _file_id(self.path)
        retired = [] if stale is None else [stale[0]]
        found: _Idle | None = None
        while found is None:
            try:
                idle = self._idle.pop()
            except IndexError:
                break
            if idle[2] == file:
                found = idle
            else:
                retired.append(idle[0])
        if retired:
            # SQLite names the -wal file after the path, and leaves the old file's there
            # when it was moved: the next connection at the path would take its pages for
            # the new file's. Emptied first, it leaves the new file as it is.
            # TRUNCATE waits for the other connections on it (SQLite's busy handler, which
            # the hot path turned off), at most the store's timeout.
            with contextlib.suppress(sqlite3.Error):
                retired[0].execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                retired[0].execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for conn in retired:
                conn.close()
        if found is not None:
            self._file, self._file_checked = file, time.monotonic()
            return found
        if file is None:
            _create_alone(self.path)
        # The file may be replaced while we open it: the connection is kept only when the
        # path names the same file before and after.
        for _ in range(3):
            conn = self._open()
            opened_on = _file_id(self.path)
            if opened_on is not None and file in (None, opened_on):
                self._file, self._file_checked = opened_on, time.monotonic()
                return conn, conn.cursor(), opened_on
            conn.close()
            file = opened_on
        raise sqlite3.OperationalError(f"{self.path} keeps being replaced")

    def _give_back(self, idle: _Idle) -> None:
        if self._shared:
            self._shared_lock.release()
        elif len(self._idle) < _MAX_IDLE:
            self._idle.append(idle)
        else:
            idle[0].close()

    def _forked(self) -> None:
        """In a process forked since the store was used: leave the parent's connections
        alone, as SQLite asks (see _INHERITED), and open new ones."""
        with self._lock:
            if self._pid == os.getpid():
                return  # another thread of this process was first
            _INHERITED.extend(idle[0] for idle in self._idle)
            self._idle.clear()
            _INHERITED.extend(idle[0] for idle in self._loop_idle)
            self._loop_idle.clear()
            self._loop_finalizer.detach()
            self._loop_finalizer = weakref.finalize(self, _close_idle, self._loop_idle, os.getpid())
            self._pid = os.getpid()
            self._file_checked = -math.inf
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _close_idle, self._idle, self._pid)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.timeout,
            isolation_level=None,  # autocommit: every statement is its own transaction
            check_same_thread=False,  # a connection moves between threads, used by one at a time
        )
        try:
            # connect()'s timeout is SQLite's busy handler, for these statements only; and
            # each is tried again while locked (_execute): processes opening a new file at
            # once (a server's workers starting) make SQLite answer "locked" at once, without
            # its busy handler, to the one whose lock would otherwise deadlock.
            execute = self._execute
            if not self._shared:
                execute(conn, "PRAGMA journal_mode = WAL")
                # WAL + NORMAL is durable against application crashes; a power loss may lose
                # the last tickets, which only makes those requests fail as expired.
                execute(conn, "PRAGMA synchronous = NORMAL")
                execute(conn, f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
            # On every new connection: the file may be new (replaced, removed). When the
            # table is there this takes no lock and costs microseconds.
            execute(
                conn,
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "ticket TEXT PRIMARY KEY, service TEXT NOT NULL, expires_at REAL NOT NULL"
                ") WITHOUT ROWID",
            )
            # Earlier versions indexed expires_at for the sweep: the index made every
            # delete and issue write two pages. When it is not there this takes no lock.
            execute(conn, f"DROP INDEX IF EXISTS {self.table}_expires_at")
            # From here on a locked database is retried by _execute, finer than SQLite does.
            conn.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    def _execute(
        self, on: sqlite3.Connection | sqlite3.Cursor, sql: str, params: tuple[object, ...] = ()
    ) -> sqlite3.Cursor:
        """``on.execute(sql, params)``, tried again while the database is locked, for at
        most the store's timeout (see _BACKOFF).

        Every statement is its own transaction (autocommit): one that found the database
        locked changed nothing, and running it again is safe.
        """
        deadline: float | None = None
        delays = iter(_BACKOFF)
        while True:
            try:
                return on.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                if deadline is None:  # the first try: the timeout counts from here
                    deadline = time.monotonic() + self.timeout
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                delay = next(delays, _BACKOFF[-1])
                if delay:
                    time.sleep(min(delay, left))

    def issue(self, service_id: str, ttl: float | None = None) -> str:
        ttl = self.default_ttl if ttl is None else checked_ttl(ttl)
        ticket = new_ticket()
        now = time.time()
        try:
            idle = self._take()
            try:
                self._execute(idle[1], self._issue_sql, (ticket, service_id, now + ttl))
                due = time.monotonic()
                if due >= self._sweep_due:
                    self._sweep_due = due + SWEEP_INTERVAL
                    self._execute(idle[1], self._sweep_sql, (now,))
                    if self._records_ready:
                        self._execute(idle[1], self._record_sweep_sql, (now,))
            finally:
                self._give_back(idle)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        return ticket

    def exists(self, service_id: str, ticket: str) -> bool:
        try:
            idle = self._take()
            try:
                # A cursor of its own: the shared one would keep the SELECT (and its read
                # snapshot) open while idle.
                row = self._execute(idle[0], self._exists_sql, (ticket, service_id, time.time())).fetchone()
            finally:
                self._give_back(idle)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        except UnicodeEncodeError:
            # A lone surrogate cannot be stored, so no such ticket exists.
            return False
        return row is not None

    def delete(self, service_id: str, ticket: str) -> bool:
        """One ``DELETE`` on an idle connection: the hot path of every fail call.

        One statement even when the ticket does not exist: a ``SELECT`` first would save
        that case the write lock (two of its four lock calls) but cost a ticket that does
        exist, the case of real fail calls, a second statement and transaction.
        """
        try:
            idle = self._take()
            try:
                deleted = self._execute(idle[1], self._delete_sql, (ticket, service_id, time.time())).rowcount
            finally:
                self._give_back(idle)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        except UnicodeEncodeError:
            return False
        return deleted == 1

    async def delete_async(self, service_id: str, ticket: str) -> bool:
        """:meth:`delete` for an event loop (:class:`~ciba_middleware.stores.base.AsyncTicketStore`):
        one try on the loop itself, on a connection of the loop's, which never waits (busy
        timeout 0: a locked database answers ``SQLITE_BUSY`` at once) and never runs a
        checkpoint (its automatic checkpoint is off). The call goes to a worker thread, where
        :meth:`delete` waits for the lock as usual, when the database is locked, when the
        loop has no connection at hand (the first call; after a fork), when the file's
        periodic check is due, and once every :data:`LOOP_WRITES_PER_THREAD` deletes, so that
        a commit on a connection of the threads', which checkpoints, keeps the WAL bounded.

        An uncontended delete costs about 10 us, less than the hop to a thread and back; the
        loop waits one statement's transaction at most (docs/asgi.md has the measurements).
        """
        idle = self._loop_now()
        if idle is not None:
            try:
                try:
                    deleted = idle[1].execute(self._delete_sql, (ticket, service_id, time.time())).rowcount
                finally:
                    self._loop_idle.append(idle)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise StoreError(f"sqlite: {exc}") from exc
                # Locked: nothing was changed; the thread tries again, waiting for the lock.
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc
            except UnicodeEncodeError:
                return False
            else:
                return deleted == 1
        return await asyncio.get_running_loop().run_in_executor(None, self._delete_for_loop, service_id, ticket)

    async def close_async(self) -> None:
        """Nothing to close on the loop: the loop's connections are closed by :meth:`close`."""

    def _loop_now(self) -> _Idle | None:
        """A connection of the loop's on the file last seen at the path, when one can be had
        without waiting or a file system call, and the thread's turn has not come; None
        otherwise."""
        if self._shared or self._pid != os.getpid() or time.monotonic() - self._file_checked >= FILE_CHECK_INTERVAL:
            return None
        self._loop_writes += 1
        if self._loop_writes >= LOOP_WRITES_PER_THREAD:
            self._loop_writes = 0
            return None
        try:
            idle = self._loop_idle.pop()
        except IndexError:
            return None
        if idle[2] != self._file:
            self._loop_idle.append(idle)  # on a file since replaced: the thread retires it
            return None
        return idle

    def _delete_for_loop(self, service_id: str, ticket: str) -> bool:
        """:meth:`delete`, in a worker thread for the loop; then the loop's connections are
        brought up to date: those on a file since replaced closed, one opened when none is
        left (without the automatic checkpoint)."""
        deleted = self.delete(service_id, ticket)
        if self._shared:
            return deleted
        with self._lock:
            current = [idle for idle in self._loop_idle if idle[2] == self._file]
            stale = [idle[0] for idle in self._loop_idle if idle[2] != self._file]
            self._loop_idle[:] = current
        for conn in stale:
            conn.close()
        if not current:
            with contextlib.suppress(sqlite3.Error):
                conn = self._open()
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                self._loop_idle.append((conn, conn.cursor(), self._file))
        return deleted

    def sweep(self) -> int:
        """Delete expired rows now (a scan of the table, and of the records' table once
        records were used); returns how many. ``issue`` does this at a store's first issue,
        then at most once every :data:`SWEEP_INTERVAL`."""
        try:
            idle = self._take()
            try:
                now = time.time()
                swept: int = self._execute(idle[1], self._sweep_sql, (now,)).rowcount
                if self._records_ready:
                    swept += self._execute(idle[1], self._record_sweep_sql, (now,)).rowcount
                return swept
            finally:
                self._give_back(idle)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def ping(self) -> None:
        try:
            idle = self._take()
            try:
                self._execute(idle[0], "SELECT 1").fetchone()
            finally:
                self._give_back(idle)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def close(self) -> None:
        self._finalizer()
        self._loop_finalizer()

    def claim(self, key: str, ttl: float) -> bool:
        """:meth:`ciba_middleware.stores.base.ReplayCache.claim`: a row in ``{table}_replay``.

        One upsert: a live row is left alone (no change counted), an expired one is taken
        over, so of many processes racing on a key exactly one sees a change.
        """
        ttl = checked_ttl(ttl)
        replay = f"{self.table}_replay"
        now = time.time()
        try:
            idle = self._take()
            try:
                conn = idle[0]
                if not self._replay_ready:
                    self._execute(
                        conn,
                        f"CREATE TABLE IF NOT EXISTS {replay} (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)"
                        " WITHOUT ROWID",
                    )
                    self._replay_ready = True
                changed = self._execute(
                    conn,
                    f"INSERT INTO {replay} (key, expires_at) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE expires_at <= ?",
                    (key, now + ttl, now),
                ).rowcount
                self._claims += 1
                if self._claims % _SWEEP_CLAIMS_EVERY == 0:
                    self._execute(conn, f"DELETE FROM {replay} WHERE expires_at <= ?", (now,))
            finally:
                self._give_back(idle)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        return bool(changed == 1)

    # -- RecordStore -------------------------------------------------------------------

    def _record(self, sql: str, params: tuple[object, ...]) -> tuple[int, list[Any]]:
        """Run one statement on the records' table, creating the table when it is not
        there (the first call, or a file replaced since): its row count and rows, read
        before the connection goes back.

        On the connection's own cursor, as a delete (one object fewer per call than
        ``Connection.execute``): every row is read, which ends the statement, so an idle
        connection keeps no read snapshot open."""
        try:
            idle = self._take()
            try:
                conn, cursor = idle[0], idle[1]
                if not self._records_ready:
                    self._create_records(conn)
                try:
                    # One try first, without _execute's frame: the usual call needs no retry.
                    cursor.execute(sql, params)
                except sqlite3.OperationalError:
                    # Locked, or the table is gone (a file replaced since): a statement that
                    # failed changed nothing, so it runs again, waiting for the lock.
                    try:
                        self._execute(cursor, sql, params)
                    except sqlite3.OperationalError as exc:
                        if "no such table" not in str(exc):
                            raise
                        self._create_records(conn)
                        self._execute(cursor, sql, params)
                rows = cursor.fetchall()
                return cursor.rowcount, rows
            finally:
                self._give_back(idle)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def _create_records(self, conn: sqlite3.Connection) -> None:
        self._execute(
            conn,
            f"CREATE TABLE IF NOT EXISTS {self._records_table} ("
            "service TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, expires_at REAL NOT NULL, "
            "PRIMARY KEY (service, key)) WITHOUT ROWID",
        )
        self._records_ready = True

    def add(self, service_id: str, key: str, value: bytes, ttl: float) -> bool:
        """:meth:`~ciba_middleware.stores.base.RecordStore.add`: one upsert that takes over
        an expired row only, so of racing processes exactly one sees a change."""
        check_record_key(key)
        value = check_record_value(value)
        ttl = checked_ttl(ttl)
        now = time.time()
        try:
            return self._record(self._record_add_sql, (service_id, key, value, now + ttl, now))[0] == 1
        except UnicodeEncodeError:
            raise ValueError("a service ID must be text that UTF-8 can encode") from None

    def get(self, service_id: str, key: str) -> bytes | None:
        check_record_key(key)
        try:
            rows = self._record(self._record_get_sql, (service_id, key, time.time()))[1]
        except UnicodeEncodeError:
            return None
        return bytes(rows[0][0]) if rows else None

    def swap(self, service_id: str, key: str, expected: bytes, value: bytes, ttl: float | None = None) -> bool:
        """:meth:`~ciba_middleware.stores.base.RecordStore.swap`: one ``UPDATE`` whose
        ``WHERE`` holds the expected value, atomic under SQLite's write lock."""
        check_record_key(key)
        value = check_record_value(value)
        expected = check_record_value(expected, "expected value")
        now = time.time()
        until = None if ttl is None else now + checked_ttl(ttl)
        try:
            changed = self._record(self._record_swap_sql, (value, until, service_id, key, expected, now))[0]
        except UnicodeEncodeError:
            return False
        return changed == 1

    def take(self, service_id: str, key: str) -> bytes | None:
        """:meth:`~ciba_middleware.stores.base.RecordStore.take`: one ``DELETE ... RETURNING``."""
        check_record_key(key)
        try:
            rows = self._record(self._record_take_sql, (service_id, key, time.time()))[1]
        except UnicodeEncodeError:
            return None
        return bytes(rows[0][0]) if rows else None


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


def _close_idle(idle: list[_Idle], pid: int) -> None:
    """Close the idle connections of a store (its ``close()``, or its finalizer), in the
    process that opened them only."""
    connections = [entry[0] for entry in idle]
    idle.clear()
    for conn in connections:
        if pid == os.getpid():
            conn.close()
        else:
            _INHERITED.append(conn)
