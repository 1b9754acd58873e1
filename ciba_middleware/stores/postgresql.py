"""``postgresql://``: tickets in a PostgreSQL table, through psycopg 3 and its pool.

One row per ticket: ``ticket`` (primary key), ``service``, ``expires_at``. Delete is one
statement, ``DELETE ... WHERE ticket = $1 AND service = $2 AND expires_at > now()``, so it
removes a ticket only for its own service and only while it lives, and when many callers
race exactly one sees a row deleted. Time is the server's ``now()``, so the hosts' clocks
do not matter. Expired rows are never visible and are swept out now and then by ``issue``
(and by :meth:`PostgreSQLTicketStore.sweep`).

The CIBA family's records (:class:`~ciba_middleware.stores.base.RecordStore`) live in a
table beside it, ``{table}_records`` (``service``, ``key``, ``value`` bytea,
``expires_at``), created on the first record call: one statement per call (``INSERT ... ON
CONFLICT`` that takes over only an expired row, ``SELECT``, ``UPDATE ... WHERE value =
expected``, ``DELETE ... RETURNING``), swept by every 256th ``add`` and by ``sweep``.

The table (and its schema) is created when missing, once per process, under an advisory
lock so that many workers starting together do not trip over each other, and again by a
call that finds it dropped. A database user without CREATE rights works too when the table
already exists.

A call runs on a pooled connection that the store has held since an earlier call, for up
to a second, rather than asking psycopg_pool for one each time (:class:`_HeldConnections`),
with the cursor made for that connection then, and no context manager wraps it (the pool's
``connection()``, the watchdog's guard): together those cost 96,000 client instructions per
delete, more than psycopg's own execution of the statement (docs/performance.md).

Behind a transaction pooler (PgBouncer's ``pool_mode = transaction``, seen on each new
connection) nothing outlives a transaction: statements are not prepared and the statement
timeout is ``SET LOCAL`` in the statement's own implicit transaction. A connection that
turns out read-only (it began while the database was) is replaced, and the call tried once
more on a fresh one.

URL: a libpq URL, ``postgresql://user:password@host:5432/dbname`` (``postgres://`` too;
a Unix socket: ``postgresql:///dbname?host=/run/postgresql``),
``pip install "ciba-middleware[postgres]"``. Query options of ours: ``table`` (default
``ciba_tickets``), ``schema`` (default: the search path's first), ``statement_timeout``
(seconds, default 2), ``pool_min_size`` (default 1), ``pool_max_size`` (default 10),
``pool_timeout`` (seconds to wait for a connection, default 2), ``pool_reconnect_timeout``
(seconds, default 10). Every other option goes to
libpq, which checks it at start-up (``sslmode``, ``application_name``, ``connect_timeout``
(default 2 here), ``keepalives_idle``, ``tcp_user_timeout``, ...).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from ..errors import ConfigurationError, StoreError
from . import schemes_of
from ._watchdog import Guard, Unanswered, Watchdog
from .base import (
    DEFAULT_TTL,
    check_record_key,
    check_record_value,
    checked_ttl,
    default_ttl_option,
    new_ticket,
    number_option,
)

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = ["PostgreSQLTicketStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

if TYPE_CHECKING:
    #: What a call runs: given the connection and its cursor (see _new_cursor).
    Work = Callable[[psycopg.Connection[Any], psycopg.Cursor[Any]], T]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")
# Sweep expired rows once every this many issues (records: adds) per process: cheap, and bounded.
_SWEEP_EVERY = 256
# Timeouts: above 0, at most an hour. Pool sizes: whole numbers up to this.
_SECONDS: dict[str, Any] = {"exclusive_minimum": True, "maximum": 3600.0}
_MAX_POOL = 1000
_OWN_OPTIONS = (
    "table",
    "schema",
    "statement_timeout",
    "pool_min_size",
    "pool_max_size",
    "pool_timeout",
    "pool_reconnect_timeout",
)


def _import_psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise ConfigurationError(
            'the PostgreSQL ticket store needs psycopg 3 and psycopg_pool: pip install "ciba-middleware[postgres]"'
        ) from None
    return psycopg, psycopg_pool


class PostgreSQLTicketStore:
    """Tickets in PostgreSQL, for several hosts sharing one database.

    >>> store = PostgreSQLTicketStore.from_url("postgresql://app@db/app?table=ciba_tickets")  # doctest: +SKIP
    >>> t = store.issue("42", ttl=60)                                                         # doctest: +SKIP
    >>> store.delete("43", t), store.delete("42", t), store.delete("42", t)                    # doctest: +SKIP
    (False, True, False)

    :param conninfo: a libpq connection string or URL, without our own options.
    :param default_ttl: seconds a ticket lives when ``issue`` is given no ``ttl``.
    :param table: the table's name; several deployments may share a database.
    :param schema: the table's schema, created when missing; None for the search path.
    :param statement_timeout: seconds after which the server cancels a statement, so a
        locked or overloaded database gives a quick 500 rather than a hung request.
    :param pool_min_size: connections each process keeps open.
    :param pool_max_size: connections each process may open; size it to the threads that
        may call at once (gunicorn ``--threads``), times workers, under ``max_connections``.
    :param pool_timeout: seconds to wait for a free (or new) connection before failing.
    :param pool_reconnect_timeout: how long the pool keeps retrying, with growing pauses, to
        replace a lost connection before it gives up and starts afresh on the next call.
        psycopg_pool's own default, 5 minutes, lets the pauses grow past a minute, which is
        how long the store would stay down after the database came back; 10 s keeps that
        to a few seconds.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        default_ttl: float = DEFAULT_TTL,
        table: str = "ciba_tickets",
        schema: str | None = None,
        statement_timeout: float = 2.0,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        pool_timeout: float = 2.0,
        pool_reconnect_timeout: float = 10.0,
    ) -> None:
        psycopg_mod, pool_mod = _import_psycopg()
        from psycopg import sql

        default_ttl = default_ttl_option(default_ttl)
        for option, value in (("table", table), ("schema", schema)):
            if value is not None and not (isinstance(value, str) and _IDENTIFIER.fullmatch(value)):
                raise ConfigurationError(
                    f"PostgreSQL {option} must be an SQL identifier of at most 50 characters, not {value!r}"
                )
        statement_timeout = number_option("PostgreSQL", "statement_timeout", statement_timeout, **_SECONDS)
        pool_timeout = number_option("PostgreSQL", "pool_timeout", pool_timeout, **_SECONDS)
        pool_reconnect_timeout = number_option(
            "PostgreSQL", "pool_reconnect_timeout", pool_reconnect_timeout, **_SECONDS
        )
        pool_min_size = number_option("PostgreSQL", "pool_min_size", pool_min_size, integer=True, maximum=_MAX_POOL)
        pool_max_size = number_option("PostgreSQL", "pool_max_size", pool_max_size, integer=True, maximum=_MAX_POOL)
        if pool_max_size < max(1, pool_min_size):
            raise ConfigurationError(
                f"PostgreSQL pool_max_size ({pool_max_size}) must be at least 1 and at least pool_min_size"
            )
        try:
            params = psycopg_mod.conninfo.conninfo_to_dict(conninfo)
        except psycopg_mod.Error as exc:
            raise ConfigurationError(
                f"bad PostgreSQL connection string: {str(exc).strip()} (options of ours: {', '.join(_OWN_OPTIONS)})"
            ) from None
        params.setdefault("connect_timeout", 2)
        self.conninfo = psycopg_mod.conninfo.make_conninfo("", **params)
        self.default_ttl = float(default_ttl)
        self.table = table
        self.schema = schema
        self.statement_timeout = float(statement_timeout)
        self.pool_min_size = pool_min_size
        self.pool_max_size = pool_max_size
        self.pool_timeout = float(pool_timeout)
        self.pool_reconnect_timeout = float(pool_reconnect_timeout)
        self._errors: tuple[type[Exception], ...] = (psycopg_mod.Error,)
        self._operational: type[Exception] = psycopg_mod.OperationalError
        # Failures that a fresh connection would not cure: no second try.
        self._final: tuple[type[Exception], ...] = (
            pool_mod.PoolTimeout,
            pool_mod.PoolClosed,
            psycopg_mod.errors.QueryCanceled,
        )
        self._pool_timeout_error: type[Exception] = pool_mod.PoolTimeout
        # A connection that began while the database was read-only (default_transaction_read_only,
        # or a demoted primary) stays read-only: discarded, and the call tried on a fresh one.
        self._read_only: type[Exception] = psycopg_mod.errors.ReadOnlySqlTransaction
        # The table was dropped under us: created again, and the call tried once more.
        self._undefined_table: type[Exception] = psycopg_mod.errors.UndefinedTable
        self._client_cursor: type[psycopg.ClientCursor[Any]] = psycopg_mod.ClientCursor
        timeout_ms = f"{round(self.statement_timeout * 1000)}ms"
        # Our own connection: the timeout is set once, for the session. A connection shared
        # through a transaction pooler: per transaction (see _configure and _execute).
        self._session_timeout_sql = f"SELECT set_config('statement_timeout', '{timeout_ms}', false)".encode()
        self._local_timeout_sql = f"SET LOCAL statement_timeout = '{timeout_ms}'".encode()

        name = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        self._qualified = f'"{schema}"."{table}"' if schema else f'"{table}"'
        self._create: list[sql.Composed] = [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "ticket text PRIMARY KEY, service text NOT NULL, expires_at timestamptz NOT NULL)"
            ).format(name),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (expires_at)").format(
                sql.Identifier(f"{table}_expires_at"), name
            ),
        ]
        # Plain bytes, built once: a Composed query is rendered again on every execute. The
        # names are quoted by hand, which is exact for what _IDENTIFIER lets through (and
        # needs no connection, which psycopg 3.1's Identifier does).
        table_sql = self._qualified
        self._issue_sql = (
            f"INSERT INTO {table_sql} (ticket, service, expires_at) "
            "VALUES (%s, %s, now() + make_interval(secs => %s)) ON CONFLICT (ticket) DO NOTHING"
        ).encode()
        self._exists_sql = (
            f"SELECT 1 FROM {table_sql} WHERE ticket = %s AND service = %s AND expires_at > now()"
        ).encode()
        self._delete_sql = f"DELETE FROM {table_sql} WHERE ticket = %s AND service = %s AND expires_at > now()".encode()
        self._sweep_sql = f"DELETE FROM {table_sql} WHERE expires_at <= now()".encode()

        # The CIBA family's records (base.RecordStore), in a table of their own beside the
        # tickets', created on the first record call: a store that serves only the fail API
        # never needs it, nor the right to create it.
        records_name = sql.Identifier(schema, f"{table}_records") if schema else sql.Identifier(f"{table}_records")
        records = f'"{schema}"."{table}_records"' if schema else f'"{table}_records"'
        self._records_qualified = records
        self._records_create: list[sql.Composed] = [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (service text NOT NULL, key text NOT NULL, value bytea NOT NULL, "
                "expires_at timestamptz NOT NULL, PRIMARY KEY (service, key))"
            ).format(records_name),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (expires_at)").format(
                sql.Identifier(f"{table}_records_exp"), records_name
            ),
        ]
        # One statement each, in autocommit: the row lock makes each atomic, and of callers
        # racing on one row the first to lock it changes it; the others, waiting, find its
        # new version no longer matching (READ COMMITTED re-checks the WHERE) and change nothing.
        self._add_sql = (
            f"INSERT INTO {records} AS r (service, key, value, expires_at) "
            "VALUES (%s, %s, %s, now() + make_interval(secs => %s)) "
            "ON CONFLICT (service, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at "
            "WHERE r.expires_at <= now()"
        ).encode()
        self._get_sql = f"SELECT value FROM {records} WHERE service = %s AND key = %s AND expires_at > now()".encode()
        where = "WHERE service = %s AND key = %s AND value = %s AND expires_at > now()"
        self._swap_sql = f"UPDATE {records} SET value = %s {where}".encode()
        self._swap_ttl_sql = (
            f"UPDATE {records} SET value = %s, expires_at = now() + make_interval(secs => %s) {where}"
        ).encode()
        self._take_sql = (
            f"DELETE FROM {records} WHERE service = %s AND key = %s AND expires_at > now() RETURNING value"
        ).encode()
        self._sweep_records_sql = f"DELETE FROM {records} WHERE expires_at <= now()".encode()

        self._lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._held: _HeldConnections | None = None
        self._watchdog: Watchdog | None = None
        #: delete_async's pool and held connections, of one event loop and fork count.
        self._aio: _AsyncPool | None = None
        # The server cancels a statement after statement_timeout; allow it a second more
        # to say so before deciding it cannot answer.
        self._io_timeout = self.statement_timeout + 1.0
        #: The value of _forks when the pool was made (-1: not yet).
        self._forks = -1
        self._schema_ready = False
        self._records_ready = False
        self._issued = 0
        self._added = 0
        # Whether the last call found the server gone (see _run). True at first: until the
        # pool has a connection, calls connect by themselves, so that a server that cannot
        # be reached is named with libpq's reason, not as a wait for the pool.
        self._lost = True
        # Whether a connection through a transaction pooler was seen (logged once).
        self._pooler_seen = False
        # Create the table now, so a problem shows at start-up; a database that is down at
        # start-up is not fatal: the first call creates it once the database is back.
        try:
            self._run(lambda conn, cursor: None)
        except StoreError as exc:
            log.info("PostgreSQL ticket store not reachable at start-up (each call tries again): %s", exc)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgreSQLTicketStore:
        """Build the store from a ``postgresql://`` URL (options in the module doc).

        ``options`` may set any keyword of the constructor; the URL's query wins over them.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() not in schemes_of(cls):
            raise ConfigurationError(f"not a PostgreSQL URL: {parts.scheme}://")
        passed: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in ("table", "schema"):
                options[key] = value
            elif key in ("statement_timeout", "pool_timeout", "pool_reconnect_timeout"):
                options[key] = number_option("PostgreSQL", key, value, **_SECONDS)
            elif key in ("pool_min_size", "pool_max_size"):
                options[key] = number_option("PostgreSQL", key, value, integer=True, maximum=_MAX_POOL)
            else:
                passed.append((key, value))
        # Not urlunsplit: it drops the "//" of "postgresql:///db?host=/run/postgresql".
        conninfo = f"postgresql://{parts.netloc}{parts.path}"
        if passed:
            conninfo += "?" + urlencode(passed, quote_via=quote)
        return cls(conninfo, **options)

    # -- connections --------------------------------------------------------------------

    def _get_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool = self._pool
        # The process's fork count, not os.getpid(): no system call on every call.
        if pool is not None and self._forks == _forks:
            return pool
        from psycopg_pool import ConnectionPool

        with self._lock:
            if self._pool is not None and self._forks == _forks:
                return self._pool
            # A pool must not cross a fork (its worker threads stay behind in the parent):
            # a gunicorn worker forked after the store was built opens its own.
            self._pool = ConnectionPool(**self._pool_options(self._configure, "ciba-tickets"))
            self._pool.open(wait=False)
            self._held = _HeldConnections(self._pool, self._new_cursor)
            self._watchdog = Watchdog()
            self._forks = _forks
            self._schema_ready = self._records_ready = False
            return self._pool

    def _pool_options(self, configure: Callable[..., Any], name: str) -> dict[str, Any]:
        """The pool's settings, the same for the threads' pool and the event loop's: the
        store URL's options, connections in autocommit, opened by the caller."""
        return {
            "conninfo": self.conninfo,
            "kwargs": {"autocommit": True},
            "min_size": self.pool_min_size,
            "max_size": self.pool_max_size,
            "timeout": self.pool_timeout,
            "reconnect_timeout": self.pool_reconnect_timeout,
            "configure": configure,
            "name": name,
            "open": False,
        }

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Set up a new connection: for the session when it is ours, per transaction when a
        transaction pooler (PgBouncer's ``pool_mode = transaction``, ...) shares it.

        A pooler answers the client's start-up with a cancel key of its own, so the server
        process libpq was told of is not the one that runs our statements. On such a
        connection nothing may outlive a transaction: no prepared statements (the next
        transaction may run on another server connection, which never saw them) and no
        session settings (they would stay on a server connection other clients get next).
        """
        row = conn.execute(b"SELECT pg_backend_pid()", prepare=False).fetchone()
        if row is not None and row[0] == conn.info.backend_pid:
            conn.execute(self._session_timeout_sql, prepare=False)
            return
        conn.prepare_threshold = None
        if not self._pooler_seen:
            self._pooler_seen = True
            log.info(
                "PostgreSQL ticket store: connected through a pooler; statements are not prepared and "
                "the statement timeout is set per transaction"
            )

    def _new_cursor(self, conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
        """The cursor the store's statements run on, made once per connection (per taking
        it from the pool): a new cursor per statement, as ``conn.execute`` makes, copies
        the connection's adapters and costs a third of the statement's client CPU. Through
        a pooler, a client-side cursor (see :meth:`_execute`)."""
        return conn.cursor() if conn.prepare_threshold is not None else self._client_cursor(conn)

    def _execute(
        self,
        conn: psycopg.Connection[Any],
        cursor: psycopg.Cursor[Any],
        query: bytes,
        params: tuple[Any, ...] | None = None,
    ) -> psycopg.Cursor[Any]:
        """Run one statement on ``cursor`` (from :meth:`_new_cursor`); the cursor. Through a
        pooler (``prepare_threshold`` None, see :meth:`_configure`), the statement timeout
        and the statement go as one simple query, one implicit transaction: one round trip,
        nothing left on the server connection."""
        if conn.prepare_threshold is not None:
            return cursor.execute(query, params)
        cursor.execute(self._local_timeout_sql + b"; " + query, params)
        cursor.nextset()
        return cursor

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        self._create_table(conn, self._qualified, self._create, "ticket")
        self._schema_ready = True

    def _ensure_records(self, conn: psycopg.Connection[Any]) -> None:
        self._create_table(conn, self._records_qualified, self._records_create, "record")
        self._records_ready = True

    def _create_table(
        self, conn: psycopg.Connection[Any], qualified: str, statements: list[sql.Composed], kind: str
    ) -> None:
        """Create the table ``qualified`` (and the schema) with ``statements`` unless it exists."""
        from psycopg import sql

        with conn.transaction():
            if conn.prepare_threshold is None:
                conn.execute(self._local_timeout_sql)
            # Serialize creation across processes: concurrent CREATE ... IF NOT EXISTS can
            # still fail on the catalog's unique indexes. One lock for both tables: each may
            # create the schema.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ciba_middleware:{self._qualified}",))
            # Check before creating, so a user without CREATE rights works on a table that
            # exists already (CREATE ... IF NOT EXISTS checks rights first).
            if self.schema:
                found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone()
                if found is None:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            row = conn.execute("SELECT to_regclass(%s)", (qualified,)).fetchone()
            if row is None or row[0] is None:
                for statement in statements:
                    conn.execute(statement)
                log.info("created the %s table %s", kind, qualified)

    def _run(self, work: Work[T]) -> T:
        """Run ``work`` on a pooled connection; after a broken one, once more on a fresh one.

        A broken pooled connection means the server restarted or is gone: the pool is told
        to check its other idle connections, and the call is tried once more on a
        connection of its own, which succeeds at once if the server is back and is refused
        at once if it is not. The pool's own reconnection backs off (pauses of 1, 2, 4 s);
        until it has a connection again, calls connect by themselves the same way, so they
        neither wait ``pool_timeout`` while the server is down nor after it returns, and a
        failure names libpq's reason ("Connection refused", "database ... does not exist").

        A pooled connection found read-only (it began while the database was, and stays so
        for its life) is closed, which makes the pool replace it, and the call is tried once
        more on a fresh connection: calls work again as soon as the database does.

        A server that does not answer at all (frozen, or cut off by the network) cannot
        apply its statement_timeout: the watchdog drops the connection instead.
        """
        pool = self._get_pool()
        if self._lost and not pool.get_stats().get("pool_available"):
            return self._run_direct(work)
        held = self._held
        assert held is not None
        try:
            conn, cursor, taken = held.take()
            try:
                result = self._attempt(conn, cursor, work, pooled=True)
            except BaseException:
                pool.putconn(conn)  # the pool looks at it: a broken or closed one is replaced
                raise
            held.keep(conn, cursor, taken)
        except Unanswered as exc:
            self._lost = True
            raise StoreError(f"postgresql: {exc}") from exc
        except _Stale:
            return self._run_direct(work)
        except self._operational as exc:
            if isinstance(exc, self._pool_timeout_error) and self._pool_is_busy(pool):
                raise StoreError(
                    f"postgresql: all {self.pool_max_size} pooled connections busy for {self.pool_timeout:g} s"
                ) from exc
            # PoolClosed, or a statement cancelled by the server: no second try.
            if isinstance(exc, self._final) and not isinstance(exc, self._pool_timeout_error):
                raise StoreError(f"postgresql: {_one_line(exc)}") from exc
            # A lost connection, or a pool that cannot connect: see for ourselves.
            with contextlib.suppress(*self._errors):
                pool.check()
            return self._run_direct(work)
        except self._errors as exc:
            raise StoreError(f"postgresql: {_one_line(exc)}") from exc
        self._lost = False
        return result

    def _pool_is_busy(self, pool: ConnectionPool[psycopg.Connection[Any]]) -> bool:
        """Whether a pool timeout came from every connection being in use (not from a
        pool unable to connect)."""
        stats = pool.get_stats()
        return stats.get("pool_size", 0) - stats.get("pool_available", 0) >= self.pool_max_size

    def _run_direct(self, work: Work[T]) -> T:
        """Run ``work`` on a connection of its own (see :meth:`_run`)."""
        import psycopg

        try:
            conn = psycopg.connect(self.conninfo, autocommit=True)
        except self._errors as exc:
            self._lost = True
            raise StoreError(f"postgresql: {_one_line(exc)}") from exc
        try:
            self._configure(conn)
            return self._attempt(conn, self._new_cursor(conn), work, pooled=False)
        except Unanswered as exc:
            self._lost = True
            raise StoreError(f"postgresql: {exc}") from exc
        except self._errors as exc:
            raise StoreError(f"postgresql: {_one_line(exc)}") from exc
        finally:
            conn.close()

    def _attempt(self, conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any], work: Work[T], *, pooled: bool) -> T:
        watchdog = self._watchdog
        assert watchdog is not None
        guard = watchdog.watch(conn.pgconn.socket, self._io_timeout)
        try:
            if not self._schema_ready:
                self._ensure_schema(conn)
            try:
                return work(conn, cursor)
            except self._undefined_table as exc:
                # Dropped while we run (a restore, a cleanup script): made again, under
                # the advisory lock, and the call tried once more on it.
                if f'{self.table}_records"' in str(exc):
                    log.warning("the record table %s was gone; creating it again", self._records_qualified)
                    self._ensure_records(conn)
                else:
                    log.warning("the ticket table %s was gone; creating it again", self._qualified)
                    self._ensure_schema(conn)
                return work(conn, cursor)
        except self._read_only as exc:
            if not pooled:
                raise
            conn.close()  # the pool discards a closed connection, and opens another
            raise _Stale from exc
        except self._operational as exc:
            if guard.fired:
                raise Unanswered(f"no answer within {self._io_timeout:g} s; connection dropped") from exc
            raise
        finally:
            # Before the connection goes back to the pool.
            watchdog.release(guard)

    # -- the protocol -------------------------------------------------------------------

    def issue(self, service_id: str, ttl: float | None = None) -> str:
        ttl = self.default_ttl if ttl is None else checked_ttl(ttl)
        if not _storable(service_id):
            raise ValueError("a service ID stored in PostgreSQL cannot hold NUL or lone surrogates")

        def insert(conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any]) -> str:
            while True:
                ticket = new_ticket()
                # ON CONFLICT: a 256-bit collision will not happen, but never overwrite.
                if self._execute(conn, cursor, self._issue_sql, (ticket, service_id, float(ttl))).rowcount == 1:
                    return ticket

        ticket = self._run(insert)
        self._issued += 1
        if self._issued % _SWEEP_EVERY == 0:
            self.sweep()
        return ticket

    def exists(self, service_id: str, ticket: str) -> bool:
        if not (_storable(service_id) and _storable(ticket)):
            return False
        query = self._exists_sql
        return self._run(
            lambda conn, cursor: self._execute(conn, cursor, query, (ticket, service_id)).fetchone() is not None
        )

    def delete(self, service_id: str, ticket: str) -> bool:
        # One check of both: a NUL or a lone surrogate in either is one in the two together.
        if not _storable(service_id + ticket):
            return False
        delete = self._delete_sql
        return self._run(lambda conn, cursor: self._execute(conn, cursor, delete, (ticket, service_id)).rowcount == 1)

    async def delete_async(self, service_id: str, ticket: str) -> bool:
        """:meth:`delete` on the running event loop (:class:`~ciba_middleware.stores.base.AsyncTicketStore`):
        the same statement, one round trip, on a connection of psycopg's
        ``AsyncConnectionPool`` (made on the first call on each loop and in each process, of
        the same size and timeouts as the thread's pool), held out of the pool between calls
        for up to :data:`HOLD` s with its cursor, as the thread's path does
        (:class:`_AsyncHeldConnections`).

        The same recovery as :meth:`_run`: a broken pooled connection (a server restart) or
        a read-only one makes the call try once more on a connection of its own; a server
        that does not answer is given up after the statement timeout and a second. Until
        the table is known to exist (the process's first call, or after it was dropped), the
        call runs :meth:`delete` in a worker thread, which creates it under its advisory lock.
        """
        if not _storable(service_id + ticket):
            return False
        if not self._schema_ready:
            return await asyncio.get_running_loop().run_in_executor(None, self.delete, service_id, ticket)
        params = (ticket, service_id)
        aio = self._aio
        if aio is None or aio.forks != _forks or aio.loop is not asyncio.get_running_loop():
            aio = await self._async_pool()
        guard: Guard | None = None
        try:
            try:
                conn, cursor, taken = await aio.held.take()
                # The thread's watchdog, not asyncio.timeout: it shuts the socket of a call
                # that got no answer, which ends the wait at once; a cancelled task would
                # have psycopg try to cancel the query on the server first, for seconds.
                guard = aio.watchdog.watch(conn.pgconn.socket, self._io_timeout)
                try:
                    deleted = await self._async_delete_on(conn, cursor, params)
                except BaseException as exc:
                    aio.watchdog.release(guard)
                    if isinstance(exc, self._read_only):
                        await conn.close()  # the pool discards a closed connection, and opens another
                    await aio.pool.putconn(conn)  # the pool looks at it: a broken one is replaced
                    raise
                aio.watchdog.release(guard)
                if not aio.held.keep(conn, cursor, taken):
                    await aio.pool.putconn(conn)
            except self._read_only:
                pass  # the pool's connection began while the database was read-only: a fresh one
            except self._operational as exc:
                if guard is not None and guard.fired:
                    raise StoreError(
                        f"postgresql: no answer within {self._io_timeout:g} s; connection dropped"
                    ) from exc
                if isinstance(exc, self._final) and not isinstance(exc, self._pool_timeout_error):
                    raise StoreError(f"postgresql: {_one_line(exc)}") from exc
                if isinstance(exc, self._pool_timeout_error) and _async_pool_busy(aio.pool, self.pool_max_size):
                    raise StoreError(
                        f"postgresql: all {self.pool_max_size} pooled connections busy for {self.pool_timeout:g} s"
                    ) from exc
                with contextlib.suppress(*self._errors):
                    await aio.pool.check()
            else:
                return deleted
            return await self._async_delete_direct(params)
        except TimeoutError as exc:
            raise StoreError(f"postgresql: no answer within {self._io_timeout:g} s; connection dropped") from exc
        except self._undefined_table:
            # Dropped while we run: the thread's path makes it again, and tries once more.
            self._schema_ready = False
            return await asyncio.get_running_loop().run_in_executor(None, self.delete, service_id, ticket)
        except self._errors as exc:
            raise StoreError(f"postgresql: {_one_line(exc)}") from exc

    async def _async_delete_on(
        self, conn: psycopg.AsyncConnection[Any], cursor: psycopg.AsyncCursor[Any], params: tuple[str, str]
    ) -> bool:
        """The delete statement on ``cursor`` (from :meth:`_new_async_cursor`); through a
        pooler, with its statement timeout in the same implicit transaction (as :meth:`_execute`)."""
        if conn.prepare_threshold is not None:
            await cursor.execute(self._delete_sql, params)
        else:
            await cursor.execute(self._local_timeout_sql + b"; " + self._delete_sql, params)
            cursor.nextset()
        return cursor.rowcount == 1

    async def _async_delete_direct(self, params: tuple[str, str]) -> bool:
        import psycopg

        async with asyncio.timeout(self._io_timeout):
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            try:
                await self._configure_async(conn)
                return await self._async_delete_on(conn, self._new_async_cursor(conn), params)
            finally:
                await conn.close()

    async def close_async(self) -> None:
        """Close the running loop's async pool (a lifespan's shutdown, a test's loop end);
        the next delete_async makes another."""
        aio, self._aio = self._aio, None
        if aio is not None and aio.loop is asyncio.get_running_loop():
            await aio.aclose()

    async def _async_pool(self) -> _AsyncPool:
        """delete_async's pool for the running loop and this process, made now (one of
        another loop, or of a parent process, is left behind: it belongs to that loop; its
        watchdog is stopped when that loop is closed)."""
        from psycopg_pool import AsyncConnectionPool

        old = self._aio
        if old is not None and old.loop.is_closed():
            old.watchdog.stop()

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            **self._pool_options(self._configure_async, "ciba-tickets-async")
        )
        await pool.open(wait=False)
        self._aio = _AsyncPool(
            asyncio.get_running_loop(), _forks, pool, _AsyncHeldConnections(pool, self._new_async_cursor), Watchdog()
        )
        return self._aio

    async def _configure_async(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """:meth:`_configure` for an async connection: the same check for a pooler."""
        cursor = await conn.execute(b"SELECT pg_backend_pid()", prepare=False)
        row = await cursor.fetchone()
        if row is not None and row[0] == conn.info.backend_pid:
            await conn.execute(self._session_timeout_sql, prepare=False)
            return
        conn.prepare_threshold = None

    def _new_async_cursor(self, conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncCursor[Any]:
        """:meth:`_new_cursor` for an async connection."""
        import psycopg

        return conn.cursor() if conn.prepare_threshold is not None else psycopg.AsyncClientCursor(conn)

    def sweep(self) -> int:
        """Delete expired rows now, tickets and records; returns how many. ``issue`` does
        this now and then for tickets, ``add`` for records. The record table is swept when
        it exists, and not created here."""

        def delete(conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any]) -> int:
            swept: int = self._execute(conn, cursor, self._sweep_sql).rowcount
            if not self._records_ready:
                row = self._execute(conn, cursor, b"SELECT to_regclass(%s)", (self._records_qualified,)).fetchone()
                if row is None or row[0] is None:
                    return swept
            return swept + self._execute(conn, cursor, self._sweep_records_sql).rowcount

        return self._run(delete)

    def ping(self) -> None:
        self._run(lambda conn, cursor: self._execute(conn, cursor, b"SELECT 1").fetchone())

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            held, self._held = self._held, None
            watchdog, self._watchdog = self._watchdog, None
        if pool is not None and self._forks == _forks:
            if held is not None:
                held.give_back()  # the pool closes only the connections it has
            pool.close()
        if watchdog is not None:
            watchdog.stop()
        aio, self._aio = self._aio, None
        if aio is not None and aio.forks == _forks and not aio.loop.is_closed():
            _close_async(aio)

    def claim(self, key: str, ttl: float) -> bool:
        """:meth:`ciba_middleware.stores.base.ReplayCache.claim`: a row in ``{table}_replay``.

        ``INSERT ... ON CONFLICT``: a live row is left alone (no row counted), an expired
        one is taken over; the row lock makes exactly one of many racing callers count one.
        The table is created on first use, under the same advisory lock as the ticket table.
        """
        ttl = checked_ttl(ttl)
        if not _storable(key):
            raise ValueError("a replay key stored in PostgreSQL cannot hold NUL or lone surrogates")
        replay = f'"{self.schema}"."{self.table}_replay"' if self.schema else f'"{self.table}_replay"'

        def insert(conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any]) -> bool:
            if not self.__dict__.get("_replay_ready"):
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ciba_middleware:{replay}",))
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {replay} (key text PRIMARY KEY, expires_at timestamptz NOT NULL)"
                    )
                self._replay_ready = True
            counted = conn.execute(
                f"INSERT INTO {replay} AS r (key, expires_at) VALUES (%s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE r.expires_at <= now()",
                (key, ttl),
            ).rowcount
            self._claims = self.__dict__.get("_claims", 0) + 1
            if self._claims % 256 == 0:
                conn.execute(f"DELETE FROM {replay} WHERE expires_at <= now()")
            return bool(counted == 1)

        return self._run(insert)

    # -- records (base.RecordStore) ------------------------------------------------------

    def _on_records(self, query: bytes, params: tuple[Any, ...], read: Callable[[psycopg.Cursor[Any]], T]) -> T:
        """Run the one statement ``query`` on the record table (created first if this
        process has not seen it yet) and ``read`` its result."""

        def work(conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any]) -> T:
            if not self._records_ready:
                self._ensure_records(conn)
            return read(self._execute(conn, cursor, query, params))

        return self._run(work)

    def add(self, service_id: str, key: str, value: bytes, ttl: float) -> bool:
        """:meth:`ciba_middleware.stores.base.RecordStore.add`: ``INSERT ... ON CONFLICT``
        that takes over only an expired row."""
        check_record_key(key)
        value = check_record_value(value)
        ttl = checked_ttl(ttl)
        if not _storable(service_id):
            raise ValueError("a service ID stored in PostgreSQL cannot hold NUL or lone surrogates")
        added = self._on_records(self._add_sql, (service_id, key, value, ttl), _one_row)
        self._added += 1
        if self._added % _SWEEP_EVERY == 0:
            self._on_records(self._sweep_records_sql, (), _row_count)
        return added

    def get(self, service_id: str, key: str) -> bytes | None:
        """:meth:`ciba_middleware.stores.base.RecordStore.get`."""
        check_record_key(key)
        if not _storable(service_id):
            return None
        return self._on_records(self._get_sql, (service_id, key), _value)

    def swap(self, service_id: str, key: str, expected: bytes, value: bytes, ttl: float | None = None) -> bool:
        """:meth:`ciba_middleware.stores.base.RecordStore.swap`: ``UPDATE ... WHERE value = expected``."""
        check_record_key(key)
        expected = check_record_value(expected, "expected value")
        value = check_record_value(value)
        if ttl is not None:
            ttl = checked_ttl(ttl)
        if not _storable(service_id):
            return False
        if ttl is None:
            return self._on_records(self._swap_sql, (value, service_id, key, expected), _one_row)
        return self._on_records(self._swap_ttl_sql, (value, ttl, service_id, key, expected), _one_row)

    def take(self, service_id: str, key: str) -> bytes | None:
        """:meth:`ciba_middleware.stores.base.RecordStore.take`: ``DELETE ... RETURNING value``."""
        check_record_key(key)
        if not _storable(service_id):
            return None
        return self._on_records(self._take_sql, (service_id, key), _value)


def _one_row(cursor: psycopg.Cursor[Any]) -> bool:
    return bool(cursor.rowcount == 1)


def _row_count(cursor: psycopg.Cursor[Any]) -> int:
    return int(cursor.rowcount)


def _value(cursor: psycopg.Cursor[Any]) -> bytes | None:
    row = cursor.fetchone()
    return None if row is None else bytes(row[0])


class _HeldConnections:
    """Pooled connections kept out of the pool between calls, each for at most :data:`HOLD` s.

    ``getconn`` and ``putconn`` cost psycopg_pool's lock, its checks, three log calls and
    its bookkeeping on the way out and in (measured in docs/performance.md: 28,000 client
    instructions per delete, more than all of the store's own code). A call instead
    pops a connection it used before from a deque and appends it back (both atomic, so
    threads need no lock of ours), with the cursor made for it when it was taken from the
    pool (:meth:`PostgreSQLTicketStore._new_cursor`).

    The pool still sees every connection at least once a second while calls come: one
    taken from it longer ago than :data:`HOLD` goes back (``putconn``: the pool's reset,
    ``max_lifetime``, ``max_idle``) and the call gets one from ``getconn``; each call also
    returns the oldest held connection if it is past that age, so those left over from a
    burst of concurrent calls go back too. A call that fails gives its connection back at
    once, for the pool to check or replace. While held, a connection counts in the pool's
    statistics as one in use, which it is between two calls.
    """

    __slots__ = ("free", "new_cursor", "pool")

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        new_cursor: Callable[[psycopg.Connection[Any]], psycopg.Cursor[Any]],
    ) -> None:
        self.pool = pool
        self.new_cursor = new_cursor
        self.free: collections.deque[Held] = collections.deque()

    def take(self) -> Held:
        """A connection, its cursor, and when it was taken from the pool."""
        now = time.monotonic()
        free = self.free
        try:
            if now - free[0][2] > HOLD:
                self.pool.putconn(free.popleft()[0])
        except IndexError:  # empty, or emptied by another thread meanwhile
            pass
        try:
            held = free.pop()
        except IndexError:
            return self._from_pool(now)
        if now - held[2] > HOLD:
            self.pool.putconn(held[0])
            return self._from_pool(now)
        return held

    def _from_pool(self, now: float) -> Held:
        conn = self.pool.getconn()
        try:
            return conn, self.new_cursor(conn), now
        except BaseException:
            self.pool.putconn(conn)
            raise

    def keep(self, conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any], taken: float) -> None:
        self.free.append((conn, cursor, taken))

    def give_back(self) -> None:
        while True:
            try:
                conn = self.free.pop()[0]
            except IndexError:
                return
            self.pool.putconn(conn)


class _AsyncHeldConnections:
    """:class:`_HeldConnections` for ``delete_async``'s ``AsyncConnectionPool``, on one event loop.

    The pool's ``connection()`` costs, for every call, ``getconn`` and ``putconn`` (the
    pool's ``asyncio.Lock``, its checks, three log calls, its statistics), the connection's
    own context manager (a ``commit`` even in autocommit) and a new cursor (a copy of the
    connection's adapters): with the ``asyncio.timeout`` around it, 40% of a delete's
    client instructions (docs/operations.md, "What a PostgreSQL delete costs"). Here a call
    pops a connection it used before, with its cursor, and appends it back; each goes back
    to the pool (``putconn``: its reset, ``max_lifetime``, ``max_idle``) once it has been
    out for :data:`HOLD` s, as in the thread's path. Only the loop's thread touches the deque.

    Calls on a loop are not bounded by threads: more of them than ``pool_max_size`` wait in
    ``getconn``. While any does, a call gives its connection back to the pool instead of
    keeping it (:meth:`keep`), so that waiting calls are served as the pool serves them.

    A server that does not answer is caught by a :class:`~ciba_middleware.stores._watchdog.Watchdog`
    of the pool's own, as in the thread's path.
    """

    __slots__ = ("free", "new_cursor", "pool", "waiting")

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        new_cursor: Callable[[psycopg.AsyncConnection[Any]], psycopg.AsyncCursor[Any]],
    ) -> None:
        self.pool = pool
        self.new_cursor = new_cursor
        self.free: collections.deque[AsyncHeld] = collections.deque()
        #: Calls waiting in the pool's getconn.
        self.waiting = 0

    async def take(self) -> AsyncHeld:
        """A connection, its cursor, and when it was taken from the pool."""
        now = time.monotonic()
        free = self.free
        if free and now - free[0][2] > HOLD:
            await self.pool.putconn(free.popleft()[0])
        if not free:
            return await self._from_pool(now)
        held = free.pop()
        if now - held[2] > HOLD:
            await self.pool.putconn(held[0])
            return await self._from_pool(now)
        return held

    async def _from_pool(self, now: float) -> AsyncHeld:
        self.waiting += 1
        try:
            conn = await self.pool.getconn()
        finally:
            self.waiting -= 1
        try:
            return conn, self.new_cursor(conn), now
        except BaseException:
            await self.pool.putconn(conn)
            raise

    def keep(self, conn: psycopg.AsyncConnection[Any], cursor: psycopg.AsyncCursor[Any], taken: float) -> bool:
        """Hold ``conn`` for the next call; False when a call waits for the pool, and the
        caller gives it back (``putconn``) instead."""
        if self.waiting:
            return False
        self.free.append((conn, cursor, taken))
        return True

    async def give_back(self) -> None:
        while self.free:
            await self.pool.putconn(self.free.pop()[0])


class _AsyncPool(NamedTuple):
    """What ``delete_async`` uses on one event loop: the pool, made under ``forks``, the
    connections held out of it, and the watchdog of its calls."""

    loop: asyncio.AbstractEventLoop
    forks: int
    pool: AsyncConnectionPool[Any]
    held: _AsyncHeldConnections
    watchdog: Watchdog

    async def aclose(self) -> None:
        self.watchdog.stop()
        await self.held.give_back()  # the pool closes only the connections it has
        await self.pool.close()


if TYPE_CHECKING:
    #: A held connection, its cursor, and when it was taken from the pool.
    Held = tuple[psycopg.Connection[Any], psycopg.Cursor[Any], float]
    AsyncHeld = tuple[psycopg.AsyncConnection[Any], psycopg.AsyncCursor[Any], float]

#: Seconds a connection stays out of the pool between calls before it goes back to it.
HOLD = 1.0

#: How many times this process was forked from the one that imported the module: a pool
#: made under another count belongs to a parent (its threads stayed there).
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)


def _async_pool_busy(pool: AsyncConnectionPool[Any], max_size: int) -> bool:
    """Whether a pool timeout came from every connection being in use."""
    stats = pool.get_stats()
    return stats.get("pool_size", 0) - stats.get("pool_available", 0) >= max_size


def _close_async(aio: _AsyncPool) -> None:
    """Close ``aio``'s pool and held connections on its loop (from any thread) while it runs."""
    loop = aio.loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _CLOSING.add(task := loop.create_task(aio.aclose()))
        task.add_done_callback(_CLOSING.discard)
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(aio.aclose(), loop)


#: Pools being closed on their loop: kept until done.
_CLOSING: set[asyncio.Task[None]] = set()


class _Stale(Exception):
    """A pooled connection that cannot serve the call (read-only): try a fresh one."""


def _one_line(exc: BaseException) -> str:
    """libpq's message on one line (it spreads a connection failure over several)."""
    return " ".join(str(exc).split())


def _storable(text: str) -> bool:
    """Whether PostgreSQL ``text`` can hold ``text``: no NUL, valid UTF-8. Nothing else can
    have been stored, so a lookup of anything else is answered without a round trip."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
