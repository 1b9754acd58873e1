"""``postgresql://``: tickets in a PostgreSQL table, through psycopg 3 and its pool.

One row per ticket: ``ticket`` (primary key), ``service``, ``expires_at``. Delete is one
statement, ``DELETE ... WHERE ticket = $1 AND service = $2 AND expires_at > now()``, so it
removes a ticket only for its own service and only while it lives, and when many callers
race exactly one sees a row deleted. Time is the server's ``now()``, so the hosts' clocks
do not matter. Expired rows are never visible and are swept out now and then by ``issue``
(and by :meth:`PostgreSQLTicketStore.sweep`).

The table (and its schema) is created when missing, once per process, under an advisory
lock so that many workers starting together do not trip over each other. A database user
without CREATE rights works too when the table already exists.

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

import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from ..errors import ConfigurationError, StoreError
from .base import DEFAULT_TTL, checked_ttl, default_ttl_option, new_ticket, number_option

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
    from psycopg_pool import ConnectionPool

__all__ = ["PostgreSQLTicketStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")
# Sweep expired rows once every this many issues per process: cheap, and bounded.
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

    schemes = ("postgresql", "postgres")

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

        self._lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._watchdog: _Watchdog | None = None
        # The server cancels a statement after statement_timeout; allow it a second more
        # to say so before deciding it cannot answer.
        self._io_timeout = self.statement_timeout + 1.0
        self._pid = 0
        self._schema_ready = False
        self._issued = 0
        # Whether the last call found the server gone (see _run).
        self._lost = False
        # Create the table now, so a problem shows at start-up; a database that is down at
        # start-up is not fatal: the first call creates it once the database is back.
        try:
            self._run(lambda conn: None)
        except StoreError as exc:
            log.warning("PostgreSQL ticket store not reachable at start-up; will retry on use: %s", exc)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgreSQLTicketStore:
        """Build the store from a ``postgresql://`` URL (options in the module doc).

        ``options`` may set any keyword of the constructor; the URL's query wins over them.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() not in cls.schemes:
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
        if pool is not None and self._pid == os.getpid():
            return pool
        from psycopg_pool import ConnectionPool

        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                return self._pool
            # A pool must not cross a fork (its worker threads stay behind in the parent):
            # a gunicorn worker forked after the store was built opens its own.
            self._pool = ConnectionPool(
                self.conninfo,
                kwargs={"autocommit": True},
                min_size=self.pool_min_size,
                max_size=self.pool_max_size,
                timeout=self.pool_timeout,
                reconnect_timeout=self.pool_reconnect_timeout,
                configure=self._configure,
                name="ciba-tickets",
                open=False,
            )
            self._pool.open(wait=False)
            self._watchdog = _Watchdog()
            self._pid = os.getpid()
            self._schema_ready = False
            return self._pool

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false)", (f"{round(self.statement_timeout * 1000)}ms",)
        )

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        from psycopg import sql

        with conn.transaction():
            # Serialize creation across processes: concurrent CREATE ... IF NOT EXISTS can
            # still fail on the catalog's unique indexes.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ciba_middleware:{self._qualified}",))
            # Check before creating, so a user without CREATE rights works on a table that
            # exists already (CREATE ... IF NOT EXISTS checks rights first).
            if self.schema:
                found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone()
                if found is None:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            row = conn.execute("SELECT to_regclass(%s)", (self._qualified,)).fetchone()
            if row is None or row[0] is None:
                for statement in self._create:
                    conn.execute(statement)
                log.info("created the ticket table %s", self._qualified)
        self._schema_ready = True

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``work`` on a pooled connection; after a broken one, once more on a fresh one.

        A broken pooled connection means the server restarted or is gone: the pool is told
        to check its other idle connections, and the call is tried once more on a
        connection of its own, which succeeds at once if the server is back and is refused
        at once if it is not. The pool's own reconnection backs off (pauses of 1, 2, 4 s);
        until it has a connection again, calls connect by themselves the same way, so they
        neither wait ``pool_timeout`` while the server is down nor after it returns.

        A server that does not answer at all (frozen, or cut off by the network) cannot
        apply its statement_timeout: the watchdog drops the connection instead.
        """
        pool = self._get_pool()
        if self._lost and not pool.get_stats().get("pool_available"):
            return self._run_direct(work)
        try:
            result = self._attempt(pool.connection(), work)
        except _Unanswered as exc:
            self._lost = True
            raise StoreError(f"postgresql: {exc}") from exc
        except self._operational as exc:
            # PoolTimeout is not a sign of a lost server: the pool may only be busy.
            if isinstance(exc, self._final):
                raise StoreError(f"postgresql: {exc}") from exc
            with contextlib.suppress(*self._errors):
                pool.check()
            return self._run_direct(work)
        except self._errors as exc:
            raise StoreError(f"postgresql: {exc}") from exc
        self._lost = False
        return result

    def _run_direct(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``work`` on a connection of its own (see :meth:`_run`)."""
        import psycopg

        try:
            conn = psycopg.connect(self.conninfo, autocommit=True)
        except self._errors as exc:
            self._lost = True
            raise StoreError(f"postgresql: {exc}") from exc
        try:
            self._configure(conn)
            return self._attempt(contextlib.nullcontext(conn), work)
        except _Unanswered as exc:
            self._lost = True
            raise StoreError(f"postgresql: {exc}") from exc
        except self._errors as exc:
            raise StoreError(f"postgresql: {exc}") from exc
        finally:
            conn.close()

    def _attempt(
        self,
        connection: contextlib.AbstractContextManager[psycopg.Connection[Any]],
        work: Callable[[psycopg.Connection[Any]], T],
    ) -> T:
        watchdog = self._watchdog
        assert watchdog is not None
        guard: _Guard | None = None
        try:
            with connection as conn, watchdog.guard(conn.pgconn.socket, self._io_timeout) as guard:
                if not self._schema_ready:
                    self._ensure_schema(conn)
                return work(conn)
        except self._operational as exc:
            if guard is not None and guard.fired:
                raise _Unanswered(f"no answer within {self._io_timeout:g} s; connection dropped") from exc
            raise

    # -- the protocol -------------------------------------------------------------------

    def issue(self, service_id: str, ttl: float | None = None) -> str:
        ttl = self.default_ttl if ttl is None else checked_ttl(ttl)
        if not _storable(service_id):
            raise ValueError("a service ID stored in PostgreSQL cannot hold NUL or lone surrogates")

        def insert(conn: psycopg.Connection[Any]) -> str:
            while True:
                ticket = new_ticket()
                # ON CONFLICT: a 256-bit collision will not happen, but never overwrite.
                if conn.execute(self._issue_sql, (ticket, service_id, float(ttl))).rowcount == 1:
                    return ticket

        ticket = self._run(insert)
        self._issued += 1
        if self._issued % _SWEEP_EVERY == 0:
            self.sweep()
        return ticket

    def exists(self, service_id: str, ticket: str) -> bool:
        if not (_storable(service_id) and _storable(ticket)):
            return False
        return self._run(lambda conn: conn.execute(self._exists_sql, (ticket, service_id)).fetchone() is not None)

    def delete(self, service_id: str, ticket: str) -> bool:
        if not (_storable(service_id) and _storable(ticket)):
            return False
        return self._run(lambda conn: conn.execute(self._delete_sql, (ticket, service_id)).rowcount == 1)

    def sweep(self) -> int:
        """Delete expired rows now; returns how many. ``issue`` does this now and then."""
        return self._run(lambda conn: conn.execute(self._sweep_sql).rowcount)

    def ping(self) -> None:
        self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            watchdog, self._watchdog = self._watchdog, None
        if pool is not None and self._pid == os.getpid():
            pool.close()
        if watchdog is not None:
            watchdog.stop()

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

        def insert(conn: psycopg.Connection[Any]) -> bool:
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


#: How often the watchdog looks at the calls out, and after how many empty looks it sleeps.
_TICK = 0.1
_IDLE_TICKS = 10


class _Unanswered(Exception):
    """A call the watchdog cut short: the server is not answering."""


class _Guard:
    __slots__ = ("deadline", "fd", "fired")

    def __init__(self, deadline: float, fd: int) -> None:
        self.deadline = deadline
        self.fd = fd
        self.fired = False


class _Watchdog:
    """Shuts down the socket of a call that got no answer in time.

    psycopg has no client-side timeout for a query: if the server is frozen, or the network
    drops packets without a reset, a call would wait for TCP to give up, many minutes.
    Shutting the socket down wakes the waiting call with a connection error at once, and the
    pool then discards the connection. One thread per process: it looks at the calls out
    every tenth of a second while calls come, and sleeps once none has come for a second.
    Only the call that finds it asleep wakes it, so a busy store does not pay a thread
    switch per call.
    """

    def __init__(self) -> None:
        self._guards: set[_Guard] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._asleep = True
        self._added = 0
        threading.Thread(target=self._watch, name="ciba-tickets-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def guard(self, fd: int, seconds: float) -> Iterator[_Guard]:
        guard = _Guard(time.monotonic() + seconds, fd)
        with self._cond:
            self._guards.add(guard)
            self._added += 1
            if self._asleep:
                self._asleep = False
                self._cond.notify()
        try:
            yield guard
        finally:
            # Removed before the connection goes back to the pool, under the lock the
            # watchdog fires under: it never touches a socket no longer ours.
            with self._cond:
                self._guards.discard(guard)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _watch(self) -> None:
        idle_ticks = 0
        with self._cond:
            while not self._stopped:
                if self._asleep:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                for guard in [g for g in self._guards if g.deadline <= now]:
                    self._guards.discard(guard)
                    guard.fired = True
                    _shut_down(guard.fd)
                if self._guards or self._added:
                    idle_ticks = 0
                    self._added = 0
                else:
                    idle_ticks += 1
                    if idle_ticks >= _IDLE_TICKS:
                        self._asleep = True
                        idle_ticks = 0
                        continue
                self._cond.wait(_TICK)


def _shut_down(fd: int) -> None:
    """Shut the socket down for both directions, leaving the descriptor to its owner."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


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
