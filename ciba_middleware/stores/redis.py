"""``redis://``: tickets in Redis, shared by every host that reaches the server.

A ticket is one key, ``{key_prefix}{ticket}``, whose value is the service ID and whose
life is Redis's own key expiry (``SET ... NX PX``). The service lives in the value, not in
the key, so no choice of service IDs or tickets (``:`` included) can make two services
share a key. Delete is one Lua script, run with ``EVALSHA`` in one round trip: it deletes
the key only when its value is the caller's service, atomically on the server.

The CIBA family's records (:class:`~ciba_middleware.stores.base.RecordStore`) are one key
each too, ``{key_prefix}record:{length}:{service}:{key}``, holding the value with Redis's
own expiry: ``add`` is ``SET NX PX``, ``get`` ``GET``, ``swap`` a script that compares and
sets (``KEEPTTL`` or ``PX``: Redis 6.0), ``take`` a script that gets and deletes, each one
round trip.

On a plain Redis or Sentinel client (not Cluster), the store's commands skip redis-py's
command layers: a delete sends a pre-packed ``EVALSHA`` on a connection the store keeps
out of redis-py's pool between commands, through the connection's own
``send_packed_command`` and ``read_response`` (timeouts, health checks, reconnection and
``Retry`` as redis-py does them). See :class:`_HeldConnections` for why and what it keeps.

URL forms (all through redis-py; ``pip install "ciba-middleware[redis]"``):

=====================================================  ==================================
``redis://[user:pass@]host[:port][/db]``                TCP
``rediss://...``                                        TLS
``redis+unix:///path/to/redis.sock[?db=N]``             a Unix socket (redis-py's ``unix://``)
``redis+cluster://host:port[,host:port...]``            Redis Cluster, one or more seed nodes
``rediss+cluster://...``                                Redis Cluster over TLS
``redis+sentinel://host:port[,host:port...]/name[/db]`` the master that Sentinel names ``name``
``rediss+sentinel://...``                               the same, TLS to Sentinel and Redis
=====================================================  ==================================

Building a store never connects, so a server that is down when the store is built (a
worker restart during an outage) costs failed calls, never a failed start: plain Redis and
Sentinel clients connect on their first command, and the Cluster client, which reads the
slot map when it is made, is made on the first call, and again on later calls (at most
once a second) until it succeeds. Only a bad URL fails at build time, as
:class:`~ciba_middleware.errors.ConfigurationError`.

Query options of ours: ``key_prefix`` (default ``ciba:ticket:``), ``socket_timeout`` and
``socket_connect_timeout`` (seconds, default 1 each), ``retries`` (default 1: one more try
on a fresh connection after a connection error, which is what lets the store ride over a
server restart), ``sentinel_username`` and ``sentinel_password`` (Sentinel URLs only).
redis-py's own ``db``, ``max_connections``, ``health_check_interval``, ``client_name``,
``protocol`` and, on TLS URLs only, ``ssl_*`` options are passed through. Anything else is
a :class:`~ciba_middleware.errors.ConfigurationError` at start-up.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ..errors import ConfigurationError, StoreError
from ..redact import mask_url
from . import schemes_of
from ._watchdog import Watchdog
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
    import redis
    import redis.cluster
    from redis.commands.core import Script

    Client = redis.Redis | redis.cluster.RedisCluster

__all__ = ["RedisTicketStore"]

DEFAULT_KEY_PREFIX = "ciba:ticket:"

# Delete KEYS[1] only if it holds ARGV[1] (the service): atomic, one round trip.
_DELETE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Replace KEYS[1]'s value by ARGV[2] only if it is ARGV[1]; ARGV[3]: its new life in
# milliseconds, or '' to keep the one it has. Atomic, one round trip. An expired key reads as
# absent (false), which equals no string.
_SWAP_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""

# Delete KEYS[1] and return its value (nil when absent): of racing callers, one gets it.
# A script rather than GETDEL, which only Redis 6.2 has (Debian 11 ships 6.0).
_TAKE_SCRIPT = """
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('DEL', KEYS[1])
end
return value
"""

# Our own URL options and how to read them.
_OWN_OPTIONS = frozenset({"key_prefix", "socket_timeout", "socket_connect_timeout", "retries"})
_SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
# redis-py URL options passed through as they are (redis-py parses and checks them).
_PASSED_OPTIONS = frozenset({"max_connections", "health_check_interval", "client_name", "protocol"})
_TLS_OPTIONS = frozenset(
    {
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_min_version",
    }
)
#: Each of our schemes (stores.SCHEMES says which are ours) -> (redis-py's scheme, the topology).
_CLIENT_SCHEMES = {
    "redis": ("redis", "server"),
    "rediss": ("rediss", "server"),
    "redis+unix": ("unix", "unix"),
    "redis+cluster": ("redis", "cluster"),
    "rediss+cluster": ("rediss", "cluster"),
    "redis+sentinel": ("redis", "sentinel"),
    "rediss+sentinel": ("rediss", "sentinel"),
}
#: Seconds after a failed attempt to make a client (Cluster) before the next: calls meanwhile
#: fail at once with the same error.
RECONNECT_PAUSE = 1.0
_DEFAULT_PORT = {"server": 6379, "cluster": 6379, "sentinel": 26379}
#: Redis's ``databases`` setting (16 by default) is the real bound, known only to the server;
#: this one keeps nonsense out.
_MAX_DB = 65535
_CLIENT_REPR = re.compile(r"<redis\.client\.Redis\(<.*?,host=([^,]*),port=(\d+),.*?\)>\)>\)>")


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ConfigurationError(
            'the Redis ticket store needs redis-py: pip install "ciba-middleware[redis]"'
        ) from None
    return redis


class RedisTicketStore:
    """Tickets in Redis, for several hosts sharing one server (or cluster).

    Build it from a URL, or around a client you configured yourself (custom TLS, credential
    providers), or around a function that makes one on first use::

        >>> store = RedisTicketStore.from_url("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> from redis.cluster import RedisCluster                         # doctest: +SKIP
        >>> store = RedisTicketStore(connect=lambda: RedisCluster("c1", 7000))  # doctest: +SKIP

    :param client: a ``redis.Redis`` or ``redis.cluster.RedisCluster``. Its timeouts and
        retries are its own; :meth:`from_url` sets bounded ones.
    :param connect: instead of ``client``, a function that returns one, called on the first
        call and, while it raises, again on later calls, at most once a second (its
        redis-py errors become :class:`~ciba_middleware.errors.StoreError`). For clients that connect when they are
        made, such as ``RedisCluster``, so that building the store never needs the server.
    :param default_ttl: seconds a ticket lives when ``issue`` is given no ``ttl``.
    :param key_prefix: put in front of every ticket to make its key, so several
        deployments (or tests) can share one Redis database.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        connect: Callable[[], Client] | None = None,
        default_ttl: float = DEFAULT_TTL,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        if (client is None) == (connect is None):
            raise ConfigurationError("RedisTicketStore needs a client or a connect function, and only one")
        default_ttl = default_ttl_option(default_ttl)
        if not isinstance(key_prefix, str):
            raise ConfigurationError(f"key_prefix must be a string, not {type(key_prefix).__name__}")
        redis_mod = _import_redis()
        self._errors: tuple[type[BaseException], ...] = _errors(redis_mod)
        self._connect_errors: tuple[type[BaseException], ...] = (*self._errors, OSError)
        self.default_ttl = float(default_ttl)
        self.key_prefix = key_prefix
        self._prefix = key_prefix.encode("utf-8")
        self._connect = connect
        self._lock = threading.Lock()
        # None until the client exists; the calls check the one they use, once.
        self._client: Client | None = None
        self._delete_script: Script | None = None
        self._swap_script: Script | None = None
        self._take_script: Script | None = None
        #: The delete's own path (see _HeldConnections); None where redis-py's is taken.
        self._held: _HeldConnections | None = None
        self._also_close: list[Any] = []
        #: When the last attempt to make the client failed, and its message.
        self._failure: tuple[float, str] | None = None
        #: Makes the redis-py asyncio client of delete_async (set by from_url); None: the
        #: store was given its client, and delete_async runs delete in a worker thread.
        self._async_connect: Callable[[], Any] | None = None
        #: What delete_async uses on its event loop, in this process.
        self._aio: _AsyncPaths | None = None
        if client is not None:
            self._adopt(client)

    def _adopt(self, client: Client) -> None:
        self._delete_script = client.register_script(_DELETE_SCRIPT)
        self._swap_script = client.register_script(_SWAP_SCRIPT)
        self._take_script = client.register_script(_TAKE_SCRIPT)
        self._held = _HeldConnections.for_client(client, self._delete_script, self._swap_script, self._take_script)
        self._client = client

    def _connected(self) -> tuple[Client, Script]:
        """The client and its delete script, the client made now if it is not yet.

        One thread makes it; the others wait, and when the attempt failed less than
        :data:`RECONNECT_PAUSE` ago they fail at once with its error rather than each try
        in turn: against seeds that do not answer, an attempt costs every seed's timeout.
        """
        with self._lock:
            if self._client is None:
                assert self._connect is not None
                if self._failure is not None and time.monotonic() < self._failure[0] + RECONNECT_PAUSE:
                    raise StoreError(self._failure[1])
                try:
                    self._adopt(self._connect())
                except self._connect_errors as exc:
                    error = _store_error(exc)
                    self._failure = (time.monotonic(), str(error))
                    raise error from exc
                self._failure = None
            assert self._client is not None
            assert self._delete_script is not None
            return self._client, self._delete_script

    @property
    def client(self) -> Client:
        """The redis-py client, made first if it is not yet (:class:`StoreError` if it cannot be)."""
        try:
            return self._client if self._client is not None else self._connected()[0]
        except self._errors as exc:
            raise _store_error(exc) from exc

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisTicketStore:
        """Build the store and its client from ``url`` (forms and options in the module doc).

        ``options`` may set ``default_ttl``, ``key_prefix``, ``socket_timeout``,
        ``socket_connect_timeout`` and ``retries``; the URL's query wins over them. Nothing
        is connected here.
        """
        redis_mod = _import_redis()
        target = _parse(url, options)
        try:
            store = cls._from_target(redis_mod, target)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"bad Redis URL {mask_url(url)}: {exc}") from None
        store._async_connect = lambda: _async_client(target)
        return store

    @classmethod
    def _from_target(cls, redis_mod: Any, target: _Target) -> RedisTicketStore:
        kwargs = _client_kwargs(target)
        if target.topology == "cluster":
            return cls(connect=lambda: _cluster(target, kwargs), **target.store_options)
        if target.topology == "sentinel":
            from redis.sentinel import Sentinel

            # Neither Sentinel nor master_for connects: the master's address is asked of
            # the sentinels whenever a connection is opened, which is how a failover is
            # followed.
            # Typed as Any here on purpose: redis-py annotates Sentinel in some releases
            # and not in others, and no ignore comment is right for both.
            sentinel_type: Any = Sentinel
            sentinel = sentinel_type(target.hosts, sentinel_kwargs=_sentinel_kwargs(target, kwargs))
            master = sentinel.master_for(target.service, **kwargs)
            store = cls(master, **target.store_options)
            store._also_close.extend(sentinel.sentinels)
            return store
        return cls(redis_mod.Redis.from_url(target.client_url, **kwargs), **target.store_options)

    def _key(self, ticket: str) -> bytes:
        return self._prefix + ticket.encode("utf-8", "surrogatepass")

    def _paths(self) -> tuple[Client, _HeldConnections | None]:
        """The client, made now if it is not yet, and the held connections when it has them."""
        client = self._client if self._client is not None else self._connected()[0]
        return client, self._held

    def issue(self, service_id: str, ttl: float | None = None) -> str:
        ttl = self.default_ttl if ttl is None else checked_ttl(ttl)
        milliseconds = max(1, math.ceil(ttl * 1000))
        service = _encode(service_id)
        try:
            client, held = self._paths()
            while True:
                ticket = new_ticket()
                # NX: a 256-bit collision will not happen, but never overwrite if it does.
                if held is not None:
                    issued = held.command(b"SET", self._key(ticket), service, b"NX", b"PX", b"%d" % milliseconds)
                else:
                    issued = client.set(self._key(ticket), service, nx=True, px=milliseconds)
                if issued:
                    return ticket
        except self._errors as exc:
            raise _store_error(exc) from exc

    def exists(self, service_id: str, ticket: str) -> bool:
        try:
            client, held = self._paths()
            value = held.command(b"GET", self._key(ticket)) if held is not None else client.get(self._key(ticket))
        except self._errors as exc:
            raise _store_error(exc) from exc
        return value is not None and value == _encode(service_id)

    def delete(self, service_id: str, ticket: str) -> bool:
        # The hot path: no _paths() call, the key made inline.
        key = self._prefix + ticket.encode("utf-8", "surrogatepass")
        service = service_id.encode("utf-8", "surrogatepass")
        try:
            if self._client is None:
                self._connected()
            held = self._held
            if held is not None:
                deleted = held.evalsha(key, service)
            else:
                assert self._delete_script is not None
                deleted = self._delete_script(keys=[key], args=[service])
        except self._errors as exc:
            raise _store_error(exc) from exc
        return bool(deleted == 1)

    async def delete_async(self, service_id: str, ticket: str) -> bool:
        """:meth:`delete` on the running event loop (:class:`~ciba_middleware.stores.base.AsyncTicketStore`):
        the same script, one ``EVALSHA``, through redis-py's asyncio client of the same URL,
        made on the first call on each loop and in each process. On plain Redis and Sentinel
        the ``EVALSHA`` goes pre-packed on a connection held out of that client's pool
        (:class:`_AsyncHeldConnections`, as :class:`_HeldConnections` for threads); on
        Cluster through the client's ``Script``. A store built around a client of yours runs
        :meth:`delete` in a worker thread instead."""
        if self._async_connect is None:
            return await asyncio.get_running_loop().run_in_executor(None, self.delete, service_id, ticket)
        key = self._prefix + ticket.encode("utf-8", "surrogatepass")
        service = service_id.encode("utf-8", "surrogatepass")
        aio = self._aio
        try:
            if aio is None or aio.loop is not asyncio.get_running_loop() or aio.pid != os.getpid():
                aio = self._async_paths()
            held = aio.held
            if held is not None:
                deleted = await held.evalsha(key, service)
            else:
                deleted = await aio.script(keys=[key], args=[service])
        except self._connect_errors as exc:
            raise _store_error(exc) from exc
        return bool(deleted == 1)

    async def close_async(self) -> None:
        """Close the running loop's asyncio client (a lifespan's shutdown, a test's loop end);
        the next delete_async makes another."""
        aio, self._aio = self._aio, None
        if aio is not None and aio.loop is asyncio.get_running_loop():
            await aio.aclose()

    def _async_paths(self) -> _AsyncPaths:
        """The asyncio client of the running loop and this process, made now (the one of
        another loop, or of the parent process, is left to that loop; its watchdog stopped
        when that loop is closed)."""
        assert self._async_connect is not None
        old = self._aio
        if old is not None and old.held is not None and old.loop.is_closed():
            old.held.watchdog.stop()
        client = self._async_connect()
        script = client.register_script(_DELETE_SCRIPT)
        held = _AsyncHeldConnections.for_client(client.client if isinstance(client, _WithSentinels) else client, script)
        self._aio = _AsyncPaths(asyncio.get_running_loop(), os.getpid(), client, script, held)
        return self._aio

    def ping(self) -> None:
        try:
            client, held = self._paths()
            if held is not None:
                held.command(b"PING")
            else:
                client.ping()
        except self._errors as exc:
            raise _store_error(exc) from exc

    def close(self) -> None:
        with self._lock:
            client, held = self._client, self._held
            if self._connect is not None:
                # Made here: made afresh if the store is used after all.
                self._client = self._delete_script = self._swap_script = self._take_script = self._held = None
        if held is not None:
            held.give_back()
        if client is not None:
            _close(client)
        for other in self._also_close:
            other.close()
        aio, self._aio = self._aio, None
        if aio is not None:
            _close_async(aio.loop, aio)

    def claim(self, key: str, ttl: float) -> bool:
        """:meth:`ciba_middleware.stores.base.ReplayCache.claim`: ``SET NX PX`` under the key prefix.

        The key holds ``:``, which no ticket does, so a claim never meets a ticket's key.
        """
        milliseconds = max(1, math.ceil(checked_ttl(ttl) * 1000))
        replay_key = self._key(f"replay:{key}")
        try:
            client, held = self._paths()
            if held is not None:
                return held.command(b"SET", replay_key, b"1", b"NX", b"PX", b"%d" % milliseconds) is not None
            return bool(client.set(replay_key, b"1", nx=True, px=milliseconds))
        except self._errors as exc:
            raise _store_error(exc) from exc

    # -- records (base.RecordStore) ------------------------------------------------------

    def _record_key(self, service_id: str, key: str) -> bytes:
        """``{key_prefix}record:{length}:{service}:{key}``: the service's length in bytes
        first, so that no service and key can spell another's (``a:b`` + ``c`` is
        ``record:3:a:b:c``, ``a`` + ``b:c`` is ``record:1:a:b:c``). ``record:`` holds a
        ``:``, which no ticket does, and is not ``replay:``: never a ticket's or a claim's key.
        One record, one key: on Cluster each call touches one slot."""
        service = service_id.encode("utf-8", "surrogatepass")
        return b"%srecord:%d:%s:%s" % (self._prefix, len(service), service, check_record_key(key).encode())

    def add(self, service_id: str, key: str, value: bytes, ttl: float) -> bool:
        """:meth:`ciba_middleware.stores.base.RecordStore.add`: ``SET NX PX``, one command."""
        record = self._record_key(service_id, key)
        value = check_record_value(value)
        milliseconds = b"%d" % max(1, math.ceil(checked_ttl(ttl) * 1000))
        try:
            client, held = self._paths()
            if held is not None:
                return held.command(b"SET", record, value, b"NX", b"PX", milliseconds) is not None
            return bool(client.set(record, value, nx=True, px=int(milliseconds)))
        except self._errors as exc:
            raise _store_error(exc) from exc

    def get(self, service_id: str, key: str) -> bytes | None:
        """:meth:`ciba_middleware.stores.base.RecordStore.get`: ``GET``; Redis's own expiry
        makes an expired record absent."""
        record = self._record_key(service_id, key)
        try:
            client, held = self._paths()
            value = held.command(b"GET", record) if held is not None else client.get(record)
        except self._errors as exc:
            raise _store_error(exc) from exc
        return _bytes(value)

    def swap(self, service_id: str, key: str, expected: bytes, value: bytes, ttl: float | None = None) -> bool:
        """:meth:`ciba_middleware.stores.base.RecordStore.swap`: one ``EVALSHA`` of a script
        that compares and sets (``KEEPTTL`` when ``ttl`` is None, ``PX`` otherwise)."""
        record = self._record_key(service_id, key)
        expected = check_record_value(expected, "expected value")
        value = check_record_value(value)
        milliseconds = b"" if ttl is None else b"%d" % max(1, math.ceil(checked_ttl(ttl) * 1000))
        try:
            _, held = self._paths()
            if held is not None:
                swapped = held.script(held.swap, record, expected, value, milliseconds)
            else:
                assert self._swap_script is not None
                swapped = self._swap_script(keys=[record], args=[expected, value, milliseconds])
        except self._errors as exc:
            raise _store_error(exc) from exc
        return bool(swapped == 1)

    def take(self, service_id: str, key: str) -> bytes | None:
        """:meth:`ciba_middleware.stores.base.RecordStore.take`: one ``EVALSHA`` of a script
        that gets and deletes: of racing callers, the server gives the value to one."""
        record = self._record_key(service_id, key)
        try:
            _, held = self._paths()
            if held is not None:
                value = held.script(held.take, record)
            else:
                assert self._take_script is not None
                value = self._take_script(keys=[record])
        except self._errors as exc:
            raise _store_error(exc) from exc
        return _bytes(value)


class _HeldConnections:
    """The store's path on a plain Redis or Sentinel client: each command on a connection
    kept out of redis-py's pool between commands; the delete one pre-packed ``EVALSHA``.

    ``client.evalsha`` costs several times the CPU of the round trip itself (measured in
    docs/performance.md): for every command, redis-py's pool takes a lock, checks the
    process ID twice, polls the socket for unread data (a system call) and records metrics
    on the way out and in, and the client packs the command, wraps it in a retry closure
    and looks up a reply callback. Here a delete pops a connection from a list (``pop`` and
    ``append`` are atomic, so threads need no lock of ours), sends the command packed but
    for its key and service, reads the integer reply, and appends the connection back.
    Every other command of the store goes the same way, so that the store needs no more
    connections than it has calls at once, as before.

    What redis-py does on a connection is kept, because it is redis-py's own
    ``send_packed_command`` and ``read_response`` that run: the socket and connect
    timeouts, ``health_check_interval``, reconnecting a connection that was dropped, and
    the connection's ``Retry``, which takes over after a failed first attempt exactly as it
    would have in ``execute_command``. What the pool did differently:

    - An idle connection that the server closed (a restart, its ``timeout``) is found when
      the delete fails on it, not by the pool's poll beforehand: the ``Retry`` (one more
      try by default, ``retries=1``) makes it again and the call succeeds; with
      ``retries=0`` that one call fails.
    - A connection that fails is disconnected and given back to the pool, so the next
      delete takes one through the pool's checks (and a Sentinel pool's master lookup).
      One that the pool would no longer take (a Sentinel pool's, after a failover) goes
      back to it to be closed.
    - A forked child forgets the connections of its parent (``os.register_at_fork``) and
      takes its own from the pool, which resets itself in a new process.
    - The connections held count towards the pool's ``max_connections``, as those in use;
      ``close`` gives them back. To RESP3 maintenance notifications they are connections
      in use: one marked for reconnection goes back to the pool, which reconnects it.

    Pools with more to do when a connection comes back (client-side caching, streaming
    credentials that re-authenticate), other pool classes and single-connection clients
    take redis-py's path (:meth:`for_client`).
    """

    __slots__ = (
        "__weakref__",
        "free",
        "get",
        "load",
        "no_script",
        "owns",
        "pool",
        "prefix",
        "reconnects",
        "response_error",
        "swap",
        "take",
    )

    def __init__(
        self,
        pool: Any,
        script: Script,
        swap: Script,
        take: Script,
        *,
        owns: Callable[[Any], bool] | None,
        reconnects: bool,
    ) -> None:
        from redis.exceptions import NoScriptError, ResponseError

        self.free: list[Any] = []
        self.pool = pool
        #: Whether the pool still takes a connection (None: always), and whether
        #: maintenance notifications may have marked one for reconnection.
        self.owns = owns
        self.reconnects = reconnects
        self.get: Callable[[], Any] = _connection_getter(pool)
        # EVALSHA sha 1 key service: all but the key and the service packed once.
        self.prefix, self.load = _Packed.of(script, arguments=2)
        # The same for the records' scripts: swap (record, expected, value, milliseconds)
        # and take (record).
        self.swap = _Packed.of(swap, arguments=4)
        self.take = _Packed.of(take, arguments=1)
        self.response_error = ResponseError
        self.no_script = NoScriptError
        _HELD.add(self)

    @classmethod
    def for_client(cls, client: Client, script: Script, swap: Script, take: Script) -> _HeldConnections | None:
        """The path for ``client``, or None where redis-py's own is needed (see the class doc)."""
        import redis
        from redis.sentinel import SentinelConnectionPool

        if type(client) is not redis.Redis or client.connection is not None:
            return None
        pool = client.connection_pool
        if type(pool) not in (redis.ConnectionPool, SentinelConnectionPool):
            return None
        # (cache and maint_notifications_enabled: from later redis-py versions than 5.0.)
        if getattr(pool, "cache", None) is not None or pool.connection_kwargs.get("credential_provider") is not None:
            return None
        maintained = getattr(pool, "maint_notifications_enabled", None)
        reconnects = maintained is not None and bool(maintained())
        # After a failover, a Sentinel pool no longer owns the connections to the former master.
        owns = pool.owns_connection if type(pool) is SentinelConnectionPool else None
        return cls(pool, script, swap, take, owns=owns, reconnects=reconnects)

    def evalsha(self, key: bytes, service: bytes) -> Any:
        """The script's reply for ``key`` and ``service``: one round trip."""
        return self.run(self.prefix + _key_and_service(key, service))

    def script(self, packed: _Packed, *arguments: bytes) -> Any:
        """The reply of the script ``packed`` (its key first among ``arguments``): one round
        trip, its ``SCRIPT LOAD`` first after a flush."""
        return self.run(packed.prefix + _bulk(*arguments), packed.load)

    def command(self, *parts: bytes) -> Any:
        """The reply to one command, as the server sent it: bytes (never decoded), an
        integer, None for a nil."""
        return self.run(_pack(*parts))

    def run(self, packed: bytes, load: bytes | None = None) -> Any:
        """Send one packed command on a held connection and read its reply; ``load`` is the
        ``SCRIPT LOAD`` of the script it runs, when it is not the delete's."""
        try:
            conn = self.free.pop()
        except IndexError:
            conn = self.get()
        try:
            try:
                reply = self._exchange(conn, packed)
            except self.no_script:
                # The server lost its scripts (a restart, SCRIPT FLUSH): load ours and run
                # it again, as redis-py's Script does.
                self._exchange(conn, self.load if load is None else load)
                reply = self._exchange(conn, packed)
        except self.response_error:
            self._keep(conn)  # an error reply, read whole: the connection is fine
            raise
        except BaseException:
            self._drop(conn)
            raise
        self._keep(conn)
        return reply

    def _exchange(self, conn: Any, packed: bytes) -> Any:
        try:
            conn.send_packed_command((packed,))
            return conn.read_response(disable_decoding=True)
        except self.response_error:
            raise
        except Exception as error:
            # The connection's Retry decides, as if it had made this first attempt itself.
            return conn.retry.call_with_retry(_Again(conn, packed, error), lambda _error: conn.disconnect())

    def _keep(self, conn: Any) -> None:
        if (self.owns is None or self.owns(conn)) and not (self.reconnects and conn.should_reconnect()):
            self.free.append(conn)
        else:
            self.pool.release(conn)  # which closes or reconnects it

    def _drop(self, conn: Any) -> None:
        conn.disconnect()
        self.pool.release(conn)

    def give_back(self) -> None:
        """Hand every held connection back to the pool (the store is closing)."""
        while True:
            try:
                conn = self.free.pop()
            except IndexError:
                return
            self.pool.release(conn)

    def forget(self) -> None:
        """In a forked child: the parent's connections are not ours to use, nor to close."""
        self.free.clear()


class _Again:
    """A retried command: raises the first attempt's error once (the Retry counts it and
    disconnects), then connects again as the pool would (a Sentinel connection asks the
    Sentinels for the master, which may have changed) and sends the command again."""

    __slots__ = ("conn", "error", "packed")

    def __init__(self, conn: Any, packed: bytes, error: Exception) -> None:
        self.conn, self.packed = conn, packed
        self.error: Exception | None = error

    def __call__(self) -> Any:
        error, self.error = self.error, None
        if error is not None:
            raise error
        self.conn.connect()
        self.conn.send_packed_command((self.packed,))
        return self.conn.read_response(disable_decoding=True)


class _AsyncHeldConnections:
    """:class:`_HeldConnections` for an event loop: ``delete_async``'s path on a plain Redis
    or Sentinel asyncio client, the pre-packed ``EVALSHA`` on a connection kept out of the
    asyncio pool between calls.

    ``await script(...)`` on redis-py's asyncio client costs, for every delete, the pool's
    ``asyncio.Lock`` and its metrics on the way out and in, a ``can_read`` check of the
    socket, the command's packing, a retry closure, two ``time.monotonic`` calls for
    observability and the reply callback: 45% of a delete's client instructions
    (docs/operations.md, "What a Redis delete costs"). Here a delete pops a connection from
    a list, sends the command packed but for its key and service and reads the integer
    reply with the connection's own ``send_packed_command`` (or :func:`_written_at_once`)
    and ``read_response`` (its timeout kept by a watchdog, :meth:`_read`), and appends the
    connection back. Only the event loop's thread touches the list, and nothing awaits
    between the pop and the use, so no lock is needed.

    What redis-py does on a connection is kept, because it is its connection's own code
    that runs: the socket timeout (through the watchdog on the first attempt's read, by
    redis-py on the rest) and the connect timeout, ``health_check_interval``, reconnection,
    the ``Retry`` taking over after a failed first attempt (:class:`_AgainAsync`, which
    connects as the pool would: a Sentinel connection asks the Sentinels for the master),
    the ``NOSCRIPT`` reload, a Sentinel connection's ``READONLY`` after a failover (it
    disconnects and the ``Retry`` reconnects to the new master). A connection that fails,
    or a task cancelled during its exchange, disconnects it and gives it back to the pool;
    one connected to a Sentinel master that is no longer the pool's goes back disconnected
    (the asyncio Sentinel pool has no ``owns_connection`` of its own that works); one
    marked for reconnection by maintenance notifications goes back to the pool, which
    reconnects it. The connections count towards the pool's ``max_connections``. A forked
    child forgets its parent's (``os.register_at_fork``) and the store makes a new client.

    Pools with more to do when a connection comes back (streaming credentials), other pool
    classes and single-connection clients keep redis-py's path (:meth:`for_client`), and so
    does Cluster.
    """

    __slots__ = (
        "__weakref__",
        "connection_error",
        "free",
        "get",
        "load",
        "no_script",
        "owns",
        "pool",
        "prefix",
        "reconnects",
        "response_error",
        "timeout_error",
        "watchdog",
    )

    def __init__(self, pool: Any, script: Any, *, owns: Callable[[Any], bool] | None, reconnects: bool) -> None:
        from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

        self.free: list[Any] = []
        self.pool = pool
        self.owns = owns
        self.reconnects = reconnects
        self.get: Callable[[], Any] = _connection_getter(pool)
        self.prefix, self.load = _Packed.of(script, arguments=2)
        self.response_error = ResponseError
        self.no_script = NoScriptError
        self.connection_error = ConnectionError
        self.timeout_error = TimeoutError
        #: Bounds the reads of the first attempts (see _read); stopped by give_back.
        self.watchdog = Watchdog()
        _HELD.add(self)

    @classmethod
    def for_client(cls, client: Any, script: Any) -> _AsyncHeldConnections | None:
        """The path for the asyncio ``client``, or None where redis-py's own is needed."""
        import redis.asyncio
        from redis.asyncio.sentinel import SentinelConnectionPool

        if type(client) is not redis.asyncio.Redis or client.connection is not None:
            return None
        pool = client.connection_pool
        if type(pool) not in (redis.asyncio.ConnectionPool, SentinelConnectionPool):
            return None
        if pool.connection_kwargs.get("credential_provider") is not None:
            return None
        maintained = getattr(pool, "maint_notifications_enabled", None)
        reconnects = maintained is not None and bool(maintained())
        owns = _master_of(pool) if type(pool) is SentinelConnectionPool else None
        return cls(pool, script, owns=owns, reconnects=reconnects)

    async def evalsha(self, key: bytes, service: bytes) -> Any:
        """The script's reply for ``key`` and ``service``: one round trip."""
        packed = self.prefix + _key_and_service(key, service)
        free = self.free
        conn = free.pop() if free else await self.get()
        try:
            try:
                reply = await self._exchange(conn, packed)
            except self.no_script:
                # The server lost its scripts (a restart, SCRIPT FLUSH): load ours and run
                # it again, as redis-py's Script does.
                await self._exchange(conn, self.load)
                reply = await self._exchange(conn, packed)
        except self.response_error:
            await self._keep(conn)  # an error reply, read whole: the connection is fine
            raise
        except BaseException:
            await self._drop(conn)
            raise
        if (self.owns is None or self.owns(conn)) and not (self.reconnects and conn.should_reconnect()):
            free.append(conn)
        else:
            await self._give(conn)
        return reply

    async def _exchange(self, conn: Any, packed: bytes) -> Any:
        try:
            if not _written_at_once(conn, packed):
                await conn.send_packed_command(packed)
            return await self._read(conn)
        except self.response_error:
            raise
        except Exception as error:
            # The connection's Retry decides, as if it had made this first attempt itself.
            return await conn.retry.call_with_retry(_AgainAsync(conn, packed, error), lambda _error: conn.disconnect())

    async def _read(self, conn: Any) -> Any:
        """The reply on ``conn``, bounded by its socket timeout through the watchdog rather
        than ``read_response``'s own ``asyncio`` timeout: a timer per read whose handle stays
        in the loop's heap until its deadline, 39,000 of the 132,900 instructions of a
        delete (docs/operations.md). The watchdog shuts the socket of a read past its
        deadline down, which ends the wait at once; that is then the same ``TimeoutError``
        as redis-py's, and the ``Retry`` takes over as it would."""
        timeout = conn.socket_timeout
        writer = getattr(conn, "_writer", None)
        if not timeout or writer is None:
            return await conn.read_response(disable_decoding=True)
        guard = self.watchdog.watch(writer.transport.get_extra_info("socket").fileno(), timeout)
        try:
            reply = await conn.read_response(disable_decoding=True, timeout=math.inf)
        except self.connection_error as exc:
            self.watchdog.release(guard)
            if guard.fired:
                raise self.timeout_error(f"Timeout reading from socket after {timeout:g} s") from exc
            raise
        except BaseException:
            self.watchdog.release(guard)
            raise
        self.watchdog.release(guard)
        if guard.fired:
            await conn.disconnect()  # the reply came in as the watchdog shut the socket
        return reply

    async def _keep(self, conn: Any) -> None:
        if (self.owns is None or self.owns(conn)) and not (self.reconnects and conn.should_reconnect()):
            self.free.append(conn)
        else:
            await self._give(conn)

    async def _give(self, conn: Any) -> None:
        """Back to the pool: disconnected unless the pool reconnects it itself."""
        if not (self.reconnects and conn.should_reconnect()):
            await conn.disconnect()
        await self.pool.release(conn)

    async def _drop(self, conn: Any) -> None:
        try:
            await conn.disconnect(nowait=True)
        finally:
            await self.pool.release(conn)

    async def give_back(self) -> None:
        """Hand every held connection back to the pool (the store is closing)."""
        self.watchdog.stop()
        while self.free:
            await self.pool.release(self.free.pop())

    def forget(self) -> None:
        """In a forked child: the parent's connections are not ours to use, nor to close."""
        self.free.clear()


class _AgainAsync:
    """:class:`_Again` for an asyncio connection."""

    __slots__ = ("conn", "error", "packed")

    def __init__(self, conn: Any, packed: bytes, error: Exception) -> None:
        self.conn, self.packed = conn, packed
        self.error: Exception | None = error

    async def __call__(self) -> Any:
        error, self.error = self.error, None
        if error is not None:
            raise error
        await self.conn.connect()
        await self.conn.send_packed_command(self.packed)
        return await self.conn.read_response(disable_decoding=True)


class _AsyncPaths(NamedTuple):
    """What ``delete_async`` uses on one event loop, in one process."""

    loop: asyncio.AbstractEventLoop
    pid: int
    #: redis-py's asyncio client (a _WithSentinels for Sentinel), and its delete Script.
    client: Any
    script: Any
    #: The lean path, or None where the Script is used (Cluster, see _AsyncHeldConnections).
    held: _AsyncHeldConnections | None

    async def aclose(self) -> None:
        if self.held is not None:
            await self.held.give_back()
        await self.client.aclose()


def _written_at_once(conn: Any, packed: bytes) -> bool:
    """Write ``packed`` on the asyncio connection ``conn`` without awaiting, when its
    ``send_packed_command`` would do nothing more: connected, no health check due (no
    ``health_check_interval``), the transport open and its buffer empty, so that the write
    goes to the socket at once and ``drain()`` would return at once. False otherwise, and
    the caller awaits ``send_packed_command``, which connects, checks and writes.

    Why: ``send_packed_command`` bounds the write by its socket timeout with
    ``asyncio.wait_for``, which on Python 3.11 makes a task for every command, two more
    turns of the event loop: 72,000 of the 204,000 instructions of a delete on the loop
    (docs/operations.md). A write of a few hundred bytes onto an empty buffer cannot wait;
    a connection that does not answer is caught by ``read_response``'s timeout instead, and
    a closed one by the transport check here or by the read.
    """
    writer = getattr(conn, "_writer", None)
    if writer is None or conn.health_check_interval:
        return False
    transport = writer.transport
    if transport.is_closing() or transport.get_write_buffer_size():
        return False
    writer.write(packed)
    return True


def _master_of(pool: Any) -> Callable[[Any], bool]:
    """Whether a connection of the asyncio Sentinel ``pool`` is to the master it knows."""

    def owns(conn: Any) -> bool:
        return bool(pool.master_address == (conn.host, conn.port))

    return owns


def _connection_getter(pool: Any) -> Callable[[], Any]:
    """``pool.get_connection`` as a call without arguments: redis-py before 5.3 wants a
    command name there, later ones warn when given one."""
    import inspect

    name = inspect.signature(pool.get_connection).parameters.get("command_name")
    if name is not None and name.default is inspect.Parameter.empty:
        return lambda: pool.get_connection("EVALSHA")
    return pool.get_connection  # type: ignore[no-any-return]


def _key_and_service(key: bytes, service: bytes) -> bytes:
    """The delete's two arguments as RESP bulk strings: :func:`_bulk` without its generator."""
    return b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(service), service)


def _sha_and_body(script: Script) -> tuple[bytes, bytes]:
    sha = script.sha.encode() if isinstance(script.sha, str) else script.sha
    body = script.script.encode() if isinstance(script.script, str) else bytes(script.script)
    return sha, body


class _Packed(NamedTuple):
    """A script of one key as the held connections send it: ``EVALSHA sha 1`` packed once
    (``prefix``, the array's length counting the arguments to come), and its ``SCRIPT LOAD``."""

    prefix: bytes
    load: bytes

    @classmethod
    def of(cls, script: Script, arguments: int) -> _Packed:
        sha, body = _sha_and_body(script)
        return cls(b"*%d\r\n" % (3 + arguments) + _bulk(b"EVALSHA", sha, b"1"), _pack(b"SCRIPT", b"LOAD", body))


def _bytes(value: Any) -> bytes | None:
    """A stored value as bytes. A client of one's own may decode replies
    (``decode_responses``): a UTF-8 value (JSON, as the family stores) encoded again is the
    value stored; other bytes cannot come back through such a client."""
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _pack(*parts: bytes) -> bytes:
    """A command in RESP, as redis-py packs it: an array (``*count``) of bulk strings."""
    return b"*%d\r\n" % len(parts) + _bulk(*parts)


def _bulk(*parts: bytes) -> bytes:
    """RESP bulk strings: each ``$length``, CRLF, the bytes, CRLF."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


#: Every _HeldConnections and _AsyncHeldConnections of this process, forgotten in a forked child.
_HELD: weakref.WeakSet[_HeldConnections | _AsyncHeldConnections] = weakref.WeakSet()


def _forget_held() -> None:
    for held in list(_HELD):
        held.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_held)


class _Target(NamedTuple):
    """What a URL names, checked: where to connect and with which options."""

    topology: str
    #: redis-py's URL for plain Redis and Unix sockets; for the others, the first host's,
    #: from which redis-py reads the credentials and passed options.
    client_url: str
    hosts: list[tuple[str, int]]
    service: str
    db: int
    timeouts: dict[str, float]
    retries: int
    sentinel_auth: dict[str, str]
    store_options: dict[str, Any]


def _parse(url: str, options: dict[str, Any]) -> _Target:
    """Check ``url`` whole, without connecting; every problem is one ConfigurationError line."""
    try:
        return _checked(url, options)
    except (ConfigurationError, ValueError) as exc:  # ValueError: urlsplit's "Invalid IPv6 URL", ...
        raise ConfigurationError(f"bad Redis URL {mask_url(url)}: {exc}") from None


def _checked(url: str, options: dict[str, Any]) -> _Target:
    scheme, netloc, path, query, fragment = _split(url)
    if scheme not in schemes_of(RedisTicketStore):
        raise ConfigurationError(f"not a Redis URL: {scheme}://")
    if "@" not in netloc and "@" in url.partition("://")[2][len(netloc) :]:
        raise ConfigurationError(
            "an '@' after the host: in a user name or password, write '/', '?', '#' and '@' as %2F, %3F, %23 and %40"
        )
    if fragment:
        raise ConfigurationError("a Redis URL has no #fragment")
    base, topology = _CLIENT_SCHEMES[scheme]
    settings: dict[str, Any] = {
        "key_prefix": options.pop("key_prefix", DEFAULT_KEY_PREFIX),
        "socket_timeout": options.pop("socket_timeout", 1.0),
        "socket_connect_timeout": options.pop("socket_connect_timeout", 1.0),
        "retries": options.pop("retries", 1),
    }
    known = _OWN_OPTIONS | _PASSED_OPTIONS | {"db"}
    if base == "rediss":
        known |= _TLS_OPTIONS
    if topology == "sentinel":
        known |= _SENTINEL_OPTIONS
    passed: list[tuple[str, str]] = []
    query_dbs: list[str] = []
    sentinel_auth: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in known:
            raise ConfigurationError(_unknown(key, scheme, known))
        if key in _OWN_OPTIONS:
            settings[key] = value
        elif key == "db":
            query_dbs.append(value)
        elif key in _SENTINEL_OPTIONS:
            sentinel_auth[key.removeprefix("sentinel_")] = value
        else:
            passed.append((key, value))
    timeouts = {
        name: number_option("Redis", name, settings[name], exclusive_minimum=True, maximum=3600.0)
        for name in ("socket_timeout", "socket_connect_timeout")
    }
    retries = number_option("Redis", "retries", settings["retries"], integer=True, maximum=100)

    hosts: list[tuple[str, int]] = []
    service = ""
    path_db: str | None = None
    if topology == "unix":
        client_url = f"unix://{netloc}{path}"
    else:
        userinfo, at, host_list = netloc.rpartition("@")
        hosts = _hosts(host_list, _DEFAULT_PORT[topology], several=topology != "server")
        segments = path.split("/")[1:]
        if segments and not segments[-1]:
            segments.pop()  # "redis://h/" and "redis+sentinel://h/name/"
        if topology == "sentinel":
            if not segments or not segments[0]:
                raise ConfigurationError("the Sentinel service name is missing: redis+sentinel://host:26379/name[/db]")
            service = unquote(segments.pop(0))
        if len(segments) > 1 or (segments and not segments[0]):
            raise ConfigurationError(f"the path must be /db at most, not {path!r}")
        path_db = segments[0] if segments else None
        client_url = f"{base}://{userinfo}{at}{host_list.split(',')[0]}"
    if passed:
        client_url += "?" + urlencode(passed, quote_via=quote)
    db = _database(path_db, query_dbs)
    if topology == "cluster" and db != 0:
        raise ConfigurationError("Redis Cluster has only database 0")
    store_options = {"key_prefix": settings["key_prefix"], **options}
    return _Target(topology, client_url, hosts, service, db, timeouts, retries, sentinel_auth, store_options)


def _split(url: str) -> tuple[str, str, str, str, str]:
    """``url`` as scheme, netloc, path, query and fragment.

    By hand, not with urlsplit: recent Pythons refuse a netloc of several hosts with an IPv6
    one among them (``h1:7000,[::1]:7001``), and urlunsplit would drop the ``//`` of
    ``unix:///path``. Each host is then read alone, by urlsplit (:func:`_hosts`).
    """
    scheme, _, rest = url.partition("://")
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    tail, _, fragment = tail.partition("#")
    path, _, query = tail.partition("?")
    return scheme.lower(), netloc, path, query, fragment


def _unknown(key: str, scheme: str, known: frozenset[str]) -> str:
    if key in _TLS_OPTIONS:
        if scheme == "redis+unix":
            return f"{key} is a TLS option, and a Unix socket has no TLS: it would be ignored"
        tls_scheme = scheme.replace("redis", "rediss", 1)
        return f"{key} is a TLS option, and {scheme}:// is not TLS: it would be ignored; use {tls_scheme}:// for TLS"
    if key in _SENTINEL_OPTIONS:
        return f"{key} is an option of redis+sentinel:// URLs only"
    return f"unknown Redis store option {key!r} (known: {', '.join(sorted(known))})"


def _hosts(host_list: str, default_port: int, *, several: bool) -> list[tuple[str, int]]:
    """``host[:port],...`` as pairs; ``[::1]:7000`` for IPv6."""
    hosts = []
    for item in host_list.split(","):
        parts = urlsplit("//" + item)
        if not parts.hostname:
            raise ConfigurationError("a host is missing in the list of hosts")
        hosts.append((parts.hostname, parts.port or default_port))
    if len(hosts) > 1 and not several:
        raise ConfigurationError("several hosts are for redis+cluster:// seeds and redis+sentinel:// sentinels only")
    return hosts


def _database(path_db: str | None, query_dbs: list[str]) -> int:
    numbers = [
        number_option("Redis", "db", value, integer=True, maximum=_MAX_DB)
        for value in ([] if path_db is None else [path_db]) + query_dbs
    ]
    if len(set(numbers)) > 1:
        if path_db is None:
            raise ConfigurationError(f"db is given twice, {numbers[0]} and {numbers[1]}: give it once")
        raise ConfigurationError(f"db is {numbers[0]} in the path but {numbers[1]} in ?db=: give it once")
    return int(numbers[0]) if numbers else 0


def _client_kwargs(target: _Target) -> dict[str, Any]:
    """Keyword arguments for the client: bounded timeouts and retries, and the URL's own."""
    from redis.backoff import NoBackoff
    from redis.connection import parse_url
    from redis.retry import Retry

    kwargs: dict[str, Any] = {**target.timeouts, "retry": Retry(NoBackoff(), target.retries)}
    if target.topology in ("server", "unix"):
        return {**kwargs, "db": target.db}
    # Credentials and passed options as redis-py reads them; the hosts are ours.
    url_kwargs = parse_url(target.client_url)  # type: ignore[no-untyped-call, unused-ignore]
    for name in ("host", "port", "db"):
        url_kwargs.pop(name, None)
    if target.topology == "sentinel":
        # master_for picks its connection class itself: a sentinel-managed one, with TLS
        # when told ssl=True.
        if url_kwargs.pop("connection_class", None) is not None:
            url_kwargs["ssl"] = True
        return {**url_kwargs, **kwargs, "db": target.db}
    return {**url_kwargs, **kwargs}


def _sentinel_kwargs(target: _Target, client_kwargs: dict[str, Any]) -> dict[str, Any]:
    """How to talk to the sentinels: the same timeouts and TLS as to Redis, their own credentials.

    No retry: discovery moves on to the next sentinel by itself, and the Redis connection's
    own retry asks them all again.
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    tls = {key: value for key, value in client_kwargs.items() if key == "ssl" or key in _TLS_OPTIONS}
    return {**target.timeouts, "retry": Retry(NoBackoff(), 0), **tls, **target.sentinel_auth}


def _cluster(target: _Target, kwargs: dict[str, Any]) -> redis.cluster.RedisCluster:
    """Make the Cluster client, which asks the seed nodes for the slot map until one answers."""
    from redis.cluster import ClusterNode, RedisCluster

    nodes = [ClusterNode(host, port) for host, port in target.hosts]  # type: ignore[no-untyped-call, unused-ignore]
    options = dict(kwargs)
    # The cluster-level retry (RedisCluster's own argument, not a connection's).
    retry = options.pop("retry")
    try:
        return RedisCluster(startup_nodes=nodes, retry=retry, **options)
    except BaseException:
        # The seeds it reached keep their connections: close them, or they would linger.
        for node in nodes:
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
        raise


def _async_client(target: _Target) -> Any:
    """The redis-py asyncio client of ``target``: the same options as the thread's client
    (:func:`_client_kwargs`), with asyncio's own ``Retry``. Nothing is connected here."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    kwargs = {**_client_kwargs(target), "retry": Retry(NoBackoff(), target.retries)}
    if target.topology == "cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode(host, port) for host, port in target.hosts]
        return RedisCluster(startup_nodes=nodes, **kwargs)
    if target.topology == "sentinel":
        from redis.asyncio.sentinel import Sentinel

        sentinel_kwargs = {**_sentinel_kwargs(target, kwargs), "retry": Retry(NoBackoff(), 0)}
        sentinel_type: Any = Sentinel
        sentinel = sentinel_type(target.hosts, sentinel_kwargs=sentinel_kwargs)
        return _WithSentinels(sentinel.master_for(target.service, **kwargs), sentinel.sentinels)
    return redis.asyncio.Redis.from_url(target.client_url, **kwargs)


class _WithSentinels:
    """An asyncio Sentinel master client whose ``aclose`` closes the sentinels' clients too."""

    def __init__(self, client: Any, sentinels: list[Any]) -> None:
        self.client = client
        self.sentinels = sentinels

    def register_script(self, script: str) -> Any:
        return self.client.register_script(script)

    async def aclose(self) -> None:
        await self.client.aclose()
        for sentinel in self.sentinels:
            await sentinel.aclose()


def _close_async(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    """Close ``client``, an asyncio client of ``loop``, on that loop when it still runs (from
    any thread); a loop that is closed took its sockets with it."""
    if loop.is_closed():
        return
    close = client.aclose()
    try:
        if asyncio.get_running_loop() is loop:
            loop.create_task(close)
            return
    except RuntimeError:
        pass  # no loop running in this thread
    if loop.is_running():
        asyncio.run_coroutine_threadsafe(close, loop)
    else:
        close.close()


def _close(client: Client) -> None:
    # RedisCluster.close() leaves its nodes' connection pools connected (redis-py 8.1),
    # so their sockets would linger until garbage collection: disconnect them too.
    get_nodes = getattr(client, "get_nodes", None)
    nodes = get_nodes() if get_nodes is not None else []
    client.close()
    for node in nodes:
        if node.redis_connection is not None:
            node.redis_connection.connection_pool.disconnect()


def _store_error(exc: BaseException) -> StoreError:
    """``exc`` as a StoreError; redis-py's Sentinel names each sentinel by its client's whole
    repr (every connection setting), which would make a log line of a kilobyte: host:port."""
    return StoreError("redis: " + _CLIENT_REPR.sub(r"sentinel \1:\2", str(exc)))


def _errors(redis_mod: Any) -> tuple[type[BaseException], ...]:
    """What the client raises when the server fails: RedisClusterException is not a RedisError."""
    return (redis_mod.RedisError, redis_mod.exceptions.RedisClusterException)


def _encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")
