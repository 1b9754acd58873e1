"""``redis://``: tickets in Redis, shared by every host that reaches the server.

A ticket is one key, ``{key_prefix}{ticket}``, whose value is the service ID and whose
life is Redis's own key expiry (``SET ... NX PX``). The service lives in the value, not in
the key, so no choice of service IDs or tickets (``:`` included) can make two services
share a key. Delete is one Lua script, run with ``EVALSHA`` in one round trip: it deletes
the key only when its value is the caller's service, atomically on the server.

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
from .base import DEFAULT_TTL, checked_ttl, default_ttl_option, new_ticket, number_option

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
        #: The delete's own path (see _HeldConnections); None where redis-py's is taken.
        self._held: _HeldConnections | None = None
        self._also_close: list[Any] = []
        #: When the last attempt to make the client failed, and its message.
        self._failure: tuple[float, str] | None = None
        if client is not None:
            self._adopt(client)

    def _adopt(self, client: Client) -> None:
        self._delete_script = client.register_script(_DELETE_SCRIPT)
        self._held = _HeldConnections.for_client(client, self._delete_script)
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
            kwargs = _client_kwargs(target)
            if target.topology == "cluster":
                return cls(connect=lambda: _cluster(target, kwargs), **target.store_options)
            if target.topology == "sentinel":
                from redis.sentinel import Sentinel

                # Neither Sentinel nor master_for connects: the master's address is asked of
                # the sentinels whenever a connection is opened, which is how a failover is
                # followed.
                sentinel = Sentinel(target.hosts, sentinel_kwargs=_sentinel_kwargs(target, kwargs))  # type: ignore[no-untyped-call]
                master = sentinel.master_for(target.service, **kwargs)  # type: ignore[no-untyped-call]
                store = cls(master, **target.store_options)
                store._also_close.extend(sentinel.sentinels)
                return store
            return cls(redis_mod.Redis.from_url(target.client_url, **kwargs), **target.store_options)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"bad Redis URL {mask_url(url)}: {exc}") from None

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
                self._client = self._delete_script = self._held = None
        if held is not None:
            held.give_back()
        if client is not None:
            _close(client)
        for other in self._also_close:
            other.close()

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
    )

    def __init__(self, pool: Any, script: Script, *, owns: Callable[[Any], bool] | None, reconnects: bool) -> None:
        import inspect

        from redis.exceptions import NoScriptError, ResponseError

        self.free: list[Any] = []
        self.pool = pool
        #: Whether the pool still takes a connection (None: always), and whether
        #: maintenance notifications may have marked one for reconnection.
        self.owns = owns
        self.reconnects = reconnects
        # redis-py before 5.3 wants a command name here, later ones warn when given one.
        name = inspect.signature(pool.get_connection).parameters.get("command_name")
        needs_name = name is not None and name.default is inspect.Parameter.empty
        self.get: Callable[[], Any] = (lambda: pool.get_connection("EVALSHA")) if needs_name else pool.get_connection
        sha = script.sha.encode() if isinstance(script.sha, str) else script.sha
        body = script.script.encode() if isinstance(script.script, str) else bytes(script.script)
        # EVALSHA sha 1 key service: all but the key and the service packed once.
        self.prefix = b"*5\r\n" + _bulk(b"EVALSHA", sha, b"1")
        self.load = _pack(b"SCRIPT", b"LOAD", body)
        self.response_error = ResponseError
        self.no_script = NoScriptError
        _HELD.add(self)

    @classmethod
    def for_client(cls, client: Client, script: Script) -> _HeldConnections | None:
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
        return cls(pool, script, owns=owns, reconnects=reconnects)

    def evalsha(self, key: bytes, service: bytes) -> Any:
        """The script's reply for ``key`` and ``service``: one round trip."""
        # The two bulk strings of _bulk(key, service), without its generator.
        return self.run(self.prefix + b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(service), service))

    def command(self, *parts: bytes) -> Any:
        """The reply to one command, as the server sent it: bytes (never decoded), an
        integer, None for a nil."""
        return self.run(_pack(*parts))

    def run(self, packed: bytes) -> Any:
        """Send one packed command on a held connection and read its reply."""
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
                self._exchange(conn, self.load)
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


def _pack(*parts: bytes) -> bytes:
    """A command in RESP, as redis-py packs it: an array (``*count``) of bulk strings."""
    return b"*%d\r\n" % len(parts) + _bulk(*parts)


def _bulk(*parts: bytes) -> bytes:
    """RESP bulk strings: each ``$length``, CRLF, the bytes, CRLF."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


#: Every _HeldConnections of this process, forgotten in a forked child.
_HELD: weakref.WeakSet[_HeldConnections] = weakref.WeakSet()


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
    url_kwargs = parse_url(target.client_url)  # type: ignore[no-untyped-call]
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

    nodes = [ClusterNode(host, port) for host, port in target.hosts]  # type: ignore[no-untyped-call]
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
