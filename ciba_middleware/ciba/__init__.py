"""The rest of Authlete's CIBA API family, served beside the fail API (``docs/api.md``).

Transport-free, like :mod:`ciba_middleware.core`: :class:`~ciba_middleware.ciba.family.Family`
answers a route's fields for a service, and :class:`~ciba_middleware.core.FailApi` routes,
checks the caller and renders. Built from ``CIBA_CLIENTS`` by :mod:`ciba_middleware.config`::

    from ciba_middleware.ciba import ClientRegistry, Family, FamilyOptions, SigningKey

    family = Family(
        store=store,  # a TicketStore that is also a RecordStore
        clients=ClientRegistry([{"client_id": "app", "service": "42", "client_secret_sha256": "..."}]),
        key=SigningKey.from_file("/run/secrets/id-token.jwk"),
        options=FamilyOptions(issuer="https://op.example.com"),
    )
    api = FailApi(store=store, verifier=verifier, family=family)

An authorization server built on the family, with hooks, ping and push delivery and framework
views: :mod:`~ciba_middleware.ciba.endpoints`, :mod:`~ciba_middleware.ciba.delivery`,
:mod:`~ciba_middleware.ciba.mount` (``docs/build-a-ciba-server.md``).

Signing ID tokens needs joserfc: ``pip install 'ciba-middleware[ciba]'``.
"""

from __future__ import annotations

# The names below are loaded when first used: the core imports ``ciba.answers`` on every
# start, and must not pull in the rest of the family (delivery, endpoints, keys) with it.
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .answers import ENDPOINTS, ApiAction
    from .clients import Client, ClientRegistry, ReloadingClients
    from .delivery import Notification, Notifier
    from .endpoints import (
        AuthenticationRequest,
        BindingMessagePolicy,
        CibaEndpoints,
        ClientResponse,
        EndpointRequest,
        Hooks,
        PendingRequest,
        Reject,
    )
    from .family import GRANT_TYPE, Family, FamilyOptions
    from .keys import SigningKey

__all__ = [
    "ENDPOINTS",
    "GRANT_TYPE",
    "ApiAction",
    "AuthenticationRequest",
    "BindingMessagePolicy",
    "CibaEndpoints",
    "Client",
    "ClientRegistry",
    "ClientResponse",
    "EndpointRequest",
    "Family",
    "FamilyOptions",
    "Hooks",
    "Notification",
    "Notifier",
    "PendingRequest",
    "Reject",
    "ReloadingClients",
    "SigningKey",
]

#: Where each name of ``__all__`` lives.
_HOMES = {
    "ENDPOINTS": "answers",
    "ApiAction": "answers",
    "Client": "clients",
    "ClientRegistry": "clients",
    "ReloadingClients": "clients",
    "Notification": "delivery",
    "Notifier": "delivery",
    "AuthenticationRequest": "endpoints",
    "BindingMessagePolicy": "endpoints",
    "CibaEndpoints": "endpoints",
    "EndpointRequest": "endpoints",
    "ClientResponse": "endpoints",
    "Hooks": "endpoints",
    "PendingRequest": "endpoints",
    "Reject": "endpoints",
    "GRANT_TYPE": "family",
    "Family": "family",
    "FamilyOptions": "family",
    "SigningKey": "keys",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
