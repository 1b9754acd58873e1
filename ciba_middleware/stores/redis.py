"""``redis://``: tickets in Redis, shared by every host that reaches the server.

A ticket is one key, ``{key_prefix}{ticket}``, whose value is the service ID and whose
life is Redis's own key expiry (``SET ... NX PX``). The service lives in the value, not in
the key, so no choice of service IDs or tickets (``:`` included) can make two services
share a key. Delete is one Lua script, run with ``EVALSHA`` in one round trip: it deletes
the key only when its value is the caller's service, atomically on the server.

URL forms (all through redis-py; ``pip install "ciba-middleware[redis]"``):

==========================================  ============================================
``redis://[user:pass@]host[:port][/db]``     TCP
``rediss://...``                             TLS
``redis+unix:///path/to/redis.sock[?db=N]``  a Unix socket (redis-py's ``unix://``)
``redis+cluster://host:port``                Redis Cluster, any one node as the seed
``rediss+cluster://host:port``               Redis Cluster over TLS
==========================================  ============================================

Sentinel has no URL form in redis-py: build the client yourself and pass it in,
``RedisTicketStore(Sentinel([...]).master_for("mymaster"))``.

Query options of ours: ``key_prefix`` (default ``ciba:ticket:``), ``socket_timeout`` and
``socket_connect_timeout`` (seconds, default 1 each), ``retries`` (default 1: one more try
on a fresh connection after a connection error, which is what lets the store ride over a
server restart). redis-py's own ``db``, ``max_connections``, ``health_check_interval``,
``client_name``, ``protocol`` and ``ssl_*`` options are passed through. Anything else is a
:class:`~ciba_middleware.errors.ConfigurationError` at start-up.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError, StoreError
from .base import DEFAULT_TTL, checked_ttl, default_ttl_option, new_ticket, number_option

if TYPE_CHECKING:
    import redis

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
_OWN_OPTIONS = ("key_prefix", "socket_timeout", "socket_connect_timeout", "retries")
# redis-py URL options passed through as they are (redis-py parses and checks them).
_PASSED_OPTIONS = frozenset(
    {
        "db",
        "max_connections",
        "health_check_interval",
        "client_name",
        "protocol",
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
_CLIENT_SCHEMES = {
    "redis": "redis",
    "rediss": "rediss",
    "redis+unix": "unix",
    "redis+cluster": "redis",
    "rediss+cluster": "rediss",
}


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

    Build it from a URL, or around a client you configured yourself (Sentinel, custom TLS)::

        >>> store = RedisTicketStore.from_url("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> from redis.sentinel import Sentinel                             # doctest: +SKIP
        >>> store = RedisTicketStore(Sentinel([("s1", 26379)]).master_for("main"))  # doctest: +SKIP

    :param client: a ``redis.Redis`` or ``redis.cluster.RedisCluster``. Its timeouts and
        retries are its own; :meth:`from_url` sets bounded ones.
    :param default_ttl: seconds a ticket lives when ``issue`` is given no ``ttl``.
    :param key_prefix: put in front of every ticket to make its key, so several
        deployments (or tests) can share one Redis database.
    """

    schemes = tuple(_CLIENT_SCHEMES)

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        default_ttl: float = DEFAULT_TTL,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        default_ttl = default_ttl_option(default_ttl)
        if not isinstance(key_prefix, str):
            raise ConfigurationError(f"key_prefix must be a string, not {type(key_prefix).__name__}")
        redis_mod = _import_redis()
        self._errors: tuple[type[BaseException], ...] = _errors(redis_mod)
        self.client = client
        self.default_ttl = float(default_ttl)
        self.key_prefix = key_prefix
        self._prefix = key_prefix.encode("utf-8")
        self._delete_script = client.register_script(_DELETE_SCRIPT)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisTicketStore:
        """Build the store and its client from ``url`` (forms and options in the module doc).

        ``options`` may set ``default_ttl``, ``key_prefix``, ``socket_timeout``,
        ``socket_connect_timeout`` and ``retries``; the URL's query wins over them.
        """
        redis_mod = _import_redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _CLIENT_SCHEMES:
            raise ConfigurationError(f"not a Redis URL: {scheme}://")
        settings: dict[str, Any] = {
            "key_prefix": options.pop("key_prefix", DEFAULT_KEY_PREFIX),
            "socket_timeout": options.pop("socket_timeout", 1.0),
            "socket_connect_timeout": options.pop("socket_connect_timeout", 1.0),
            "retries": options.pop("retries", 1),
        }
        passed: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in _OWN_OPTIONS:
                settings[key] = value
            elif key in _PASSED_OPTIONS:
                passed.append((key, value))
            else:
                known = ", ".join(sorted({*_OWN_OPTIONS, *_PASSED_OPTIONS}))
                raise ConfigurationError(f"unknown Redis store option {key!r} (known: {known})")
        timeouts = {
            name: number_option("Redis", name, settings[name], exclusive_minimum=True, maximum=3600.0)
            for name in ("socket_timeout", "socket_connect_timeout")
        }
        retries = number_option("Redis", "retries", settings["retries"], integer=True, maximum=100)
        # Not urlunsplit: it drops the "//" of "unix:///path" when the host is empty.
        client_url = f"{_CLIENT_SCHEMES[scheme]}://{parts.netloc}{parts.path}"
        if passed:
            client_url += "?" + urlencode(passed, quote_via=quote)
        client_options = {**timeouts, "retry": Retry(NoBackoff(), retries)}
        databases = [parts.path.strip("/") or "0", *(value for key, value in passed if key == "db")]
        if scheme.endswith("+cluster") and any(db != "0" for db in databases):
            raise ConfigurationError(f"Redis Cluster has only database 0: {_redacted(url)}")
        try:
            if scheme.endswith("+cluster"):
                from redis.cluster import RedisCluster

                # Connecting to the seed node happens here; an unreachable cluster at
                # start-up is an error of the store, not of the configuration.
                client = RedisCluster.from_url(client_url, **client_options)
            else:
                client = redis_mod.Redis.from_url(client_url, **client_options)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"bad Redis URL {_redacted(url)}: {exc}") from None
        except _errors(redis_mod) as exc:
            raise StoreError(f"redis: {exc}") from exc
        return cls(client, key_prefix=settings["key_prefix"], **options)

    def _key(self, ticket: str) -> bytes:
        return self._prefix + ticket.encode("utf-8", "surrogatepass")

    def issue(self, service_id: str, ttl: float | None = None) -> str:
        ttl = self.default_ttl if ttl is None else checked_ttl(ttl)
        milliseconds = max(1, math.ceil(ttl * 1000))
        service = _encode(service_id)
        try:
            while True:
                ticket = new_ticket()
                # NX: a 256-bit collision will not happen, but never overwrite if it does.
                if self.client.set(self._key(ticket), service, nx=True, px=milliseconds):
                    return ticket
        except self._errors as exc:
            raise StoreError(f"redis: {exc}") from exc

    def exists(self, service_id: str, ticket: str) -> bool:
        try:
            value = self.client.get(self._key(ticket))
        except self._errors as exc:
            raise StoreError(f"redis: {exc}") from exc
        return value is not None and value == _encode(service_id)

    def delete(self, service_id: str, ticket: str) -> bool:
        try:
            deleted = self._delete_script(keys=[self._key(ticket)], args=[_encode(service_id)])
        except self._errors as exc:
            raise StoreError(f"redis: {exc}") from exc
        return bool(deleted == 1)

    def ping(self) -> None:
        try:
            self.client.ping()
        except self._errors as exc:
            raise StoreError(f"redis: {exc}") from exc

    def close(self) -> None:
        # RedisCluster.close() leaves its nodes' connection pools connected (redis-py 8.1),
        # so their sockets would linger until garbage collection: disconnect them too.
        get_nodes = getattr(self.client, "get_nodes", None)
        nodes = get_nodes() if get_nodes is not None else []
        self.client.close()
        for node in nodes:
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()

    def claim(self, key: str, ttl: float) -> bool:
        """:meth:`ciba_middleware.stores.base.ReplayCache.claim`: ``SET NX PX`` under the key prefix.

        The key holds ``:``, which no ticket does, so a claim never meets a ticket's key.
        """
        milliseconds = max(1, math.ceil(checked_ttl(ttl) * 1000))
        try:
            return bool(self.client.set(self._key(f"replay:{key}"), b"1", nx=True, px=milliseconds))
        except self._errors as exc:
            raise StoreError(f"redis: {exc}") from exc


def _errors(redis_mod: Any) -> tuple[type[BaseException], ...]:
    """What the client raises when the server fails: RedisClusterException is not a RedisError."""
    return (redis_mod.RedisError, redis_mod.exceptions.RedisClusterException)


def _encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))
