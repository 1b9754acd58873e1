"""ciba-middleware: Authlete's CIBA ``/backchannel/authentication/fail`` API as WSGI middleware.

>>> from ciba_middleware import from_env
>>> application = from_env()                      # doctest: +SKIP

See ``docs/index.md`` for the rest.
"""

from __future__ import annotations

from .auth import Principal, PrincipalKind, StaticTokenVerifier, TokenVerifier, sha256_hex
from .config import Settings, from_env
from .errors import ApiError, ConfigurationError, InvalidParameter, StoreError
from .events import FailEvent
from .middleware import BackchannelFailMiddleware, WSGIMiddleware
from .reasons import Action, Reason
from .response import ClientResponse, FailResponse, client_response, not_found_app
from .stores import TicketStore, store_from_url
from .views import BackchannelFail

__version__ = "0.1.0"

__all__ = [
    "Action",
    "ApiError",
    "BackchannelFail",
    "BackchannelFailMiddleware",
    "ClientResponse",
    "ConfigurationError",
    "FailEvent",
    "FailResponse",
    "InvalidParameter",
    "Principal",
    "PrincipalKind",
    "Reason",
    "Settings",
    "StaticTokenVerifier",
    "StoreError",
    "TicketStore",
    "TokenVerifier",
    "WSGIMiddleware",
    "client_response",
    "from_env",
    "not_found_app",
    "sha256_hex",
    "store_from_url",
]
