"""Ticket stores, chosen by URL.

==========================  =================================================
``memory://``               one process only; for tests and trying things out
``sqlite:///path/to/file``  the embedded default; many threads and processes
                            on one host (``sqlite:////abs/path`` or
                            ``sqlite:///rel/path``)
``redis://`` ...            several hosts (``pip install ciba-middleware[redis]``);
                            also ``rediss://``, ``redis+unix://``,
                            ``redis+cluster://h1:7000,h2:7001`` (seeds),
                            ``redis+sentinel://s1:26379,s2/mymaster[/db]``,
                            ``rediss+cluster://``, ``rediss+sentinel://``;
                            built without connecting
``postgresql://`` ...       several hosts (``pip install ciba-middleware[postgres]``);
                            ``postgres://`` too
==========================  =================================================

>>> store = store_from_url("memory://")
>>> ticket = store.issue("715948317", ttl=60)
>>> store.delete("715948317", ticket)
True

Each backend module is imported only when its scheme is used, so a missing optional
dependency is reported, naming the extra to install, only to those who asked for it.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError, StoreError
from .base import DEFAULT_TTL, TicketStore, new_ticket, ticket_hash, well_formed

__all__ = [
    "DEFAULT_TTL",
    "SCHEMES",
    "StoreError",
    "TicketStore",
    "new_ticket",
    "schemes_of",
    "store_from_url",
    "ticket_hash",
    "well_formed",
]

#: URL scheme -> "module:Class": the one place that says which class serves which scheme,
#: read by :func:`store_from_url`, the CLI and each store's own ``from_url``.
SCHEMES: dict[str, str] = {
    "memory": "ciba_middleware.stores.memory:MemoryTicketStore",
    "sqlite": "ciba_middleware.stores.sqlite:SQLiteTicketStore",
    "redis": "ciba_middleware.stores.redis:RedisTicketStore",
    "rediss": "ciba_middleware.stores.redis:RedisTicketStore",
    "redis+unix": "ciba_middleware.stores.redis:RedisTicketStore",
    "redis+cluster": "ciba_middleware.stores.redis:RedisTicketStore",
    "rediss+cluster": "ciba_middleware.stores.redis:RedisTicketStore",
    "redis+sentinel": "ciba_middleware.stores.redis:RedisTicketStore",
    "rediss+sentinel": "ciba_middleware.stores.redis:RedisTicketStore",
    "postgresql": "ciba_middleware.stores.postgresql:PostgreSQLTicketStore",
    "postgres": "ciba_middleware.stores.postgresql:PostgreSQLTicketStore",
}


def schemes_of(cls: type) -> tuple[str, ...]:
    """The schemes :data:`SCHEMES` gives to ``cls`` (or to the store class it extends).

    >>> from ciba_middleware.stores.memory import MemoryTicketStore
    >>> schemes_of(MemoryTicketStore)
    ('memory',)
    """
    targets = {f"{c.__module__}:{c.__qualname__}" for c in cls.__mro__}
    return tuple(scheme for scheme, target in SCHEMES.items() if target in targets)


def store_from_url(url: str, **options: Any) -> TicketStore:
    """Build the store that ``url`` names.

    ``options`` go to the backend's ``from_url`` (``default_ttl`` is understood by all);
    URL query parameters set backend-specific options, documented per backend in
    ``docs/operations.md``. An unknown scheme or a bad option raises
    :class:`ConfigurationError` at once.
    """
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # "Invalid IPv6 URL": the backend's own check names the problem
        scheme = url.partition("://")[0].lower()
    target = SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise ConfigurationError(
            f"unknown ticket store URL scheme {scheme + '://' if scheme else repr(url)}; expected one of {known}"
        )
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    store: TicketStore = cls.from_url(url, **options)
    return store
