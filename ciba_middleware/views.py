"""What the app's views share, whatever the framework: :class:`BackchannelFail` and its settings.

A view rejects a backchannel authentication request by raising :class:`BackchannelFail`;
each integration (:mod:`ciba_middleware.flask`, :mod:`ciba_middleware.django`,
:mod:`ciba_middleware.asgi`) turns it into an in-process fail call and the client's
response. Two settings say how, read here once for all of them:

``SERVICE_ID``
    The service whose tickets the app issues and fails in process
    (:func:`view_service`); may be left out when the grants cover exactly one service.
``SERVER_ERROR_STATUS``
    The status the client gets for ``server_error`` (:func:`server_error_status`;
    default 500: Authlete notes that many deployments prefer another one).

Framework-free: nothing here imports a web framework.
"""

from __future__ import annotations

from enum import Enum

from .auth import TokenVerifier
from .errors import ConfigurationError
from .reasons import Reason
from .request import check_fields
from .stores.base import number_option

__all__ = ["BackchannelFail", "server_error_status", "view_service"]


class BackchannelFail(Exception):
    """Raise from a view to reject a backchannel authentication request (CIBA Core 13).

    The integration's handler fails the request in process, which deletes ``ticket``
    from the store, and answers the client with the matching status and
    ``{"error": ...}`` body (:func:`ciba_middleware.client_response`).

    ``reason`` is a :class:`ciba_middleware.Reason`, its name, or an Authlete DTO enum
    member. ``description`` and ``uri`` become ``error_description`` and ``error_uri``;
    they are checked here, against RFC 6749's character sets, so a bad one raises
    :class:`ciba_middleware.InvalidParameter` (a ``ValueError``) where the view raises,
    not later in the handler.

    >>> raise BackchannelFail(Reason.ACCESS_DENIED, ticket=ticket)  # doctest: +SKIP
    """

    def __init__(
        self,
        reason: Reason | str | Enum,
        ticket: str | None = None,
        description: str | None = None,
        uri: str | None = None,
    ) -> None:
        name = reason.name if isinstance(reason, Enum) and not isinstance(reason, str) else reason
        params = check_fields({"ticket": ticket, "reason": name, "errorDescription": description, "errorUri": uri})
        super().__init__(params.reason.value if description is None else f"{params.reason.value}: {description}")
        self.reason: Reason = params.reason
        self.ticket: str | None = params.ticket
        self.description: str | None = params.error_description
        self.uri: str | None = params.error_uri


def view_service(value: object, verifier: TokenVerifier, name: str = "CIBA_SERVICE_ID") -> str:
    """The service of in-process calls: ``value``, else the only service the grants cover.

    A number (as ``Flask.config.from_prefixed_env`` leaves ``715948317``) is taken as its
    digits. Raises :class:`ConfigurationError` naming ``name``.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if value not in (None, ""):
        raise ConfigurationError(f"{name} must be a service ID (a string), not {value!r}")
    # StaticTokenVerifier and the reloading one both say which services they cover.
    found = getattr(verifier, "services", None)
    services: list[str] = sorted(found) if isinstance(found, frozenset) else []
    if len(services) == 1:
        return services[0]
    raise ConfigurationError(
        f"{name} is not set and the grants do not name exactly one service "
        f"({', '.join(services) or 'none'}): set it to the service whose tickets this app issues"
    )


def server_error_status(value: object, name: str = "CIBA_SERVER_ERROR_STATUS") -> int:
    """The client's status for ``server_error``: ``value`` (400-599, an int or its digits), else 500."""
    if value is None or value == "":
        return 500
    try:
        status: int = number_option(name, name, value, integer=True, minimum=400, maximum=599)
    except ConfigurationError:
        raise ConfigurationError(f"{name} must be an HTTP error status (400-599), not {value!r}") from None
    return status
