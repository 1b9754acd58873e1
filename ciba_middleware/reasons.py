"""The fail API's vocabulary: reasons, actions and the table that joins them.

The names are Authlete's (``BackchannelAuthenticationFailRequest.Reason`` and
``BackchannelAuthenticationFailResponse.Action`` in authlete-java-common), so a value
read from an Authlete client's DTO converts with ``Reason(value.name)``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Action", "Reason"]


class Action(StrEnum):
    """What the authorization server does next with ``responseContent``.

    Only these three exist: authlete-python 1.3.0 raises a bare ``KeyError`` on any other.
    """

    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    BAD_REQUEST = "BAD_REQUEST"
    FORBIDDEN = "FORBIDDEN"

    @property
    def status(self) -> int:
        """The HTTP status the client gets for this action (CIBA Core 13)."""
        return _STATUS[self]


class Reason(StrEnum):
    """Why the backchannel authentication request was rejected (CIBA Core 13, RFC 8707 2)."""

    ACCESS_DENIED = "ACCESS_DENIED"
    EXPIRED_LOGIN_HINT_TOKEN = "EXPIRED_LOGIN_HINT_TOKEN"  # noqa: S105 (a name, not a secret)
    INVALID_BINDING_MESSAGE = "INVALID_BINDING_MESSAGE"
    INVALID_TARGET = "INVALID_TARGET"
    INVALID_USER_CODE = "INVALID_USER_CODE"
    MISSING_USER_CODE = "MISSING_USER_CODE"
    SERVER_ERROR = "SERVER_ERROR"
    UNAUTHORIZED_CLIENT = "UNAUTHORIZED_CLIENT"
    UNKNOWN_USER_ID = "UNKNOWN_USER_ID"

    @property
    def error(self) -> str:
        """The ``error`` code the client sees, e.g. ``access_denied``."""
        return self.value.lower()

    @property
    def action(self) -> Action:
        """The action Authlete returns for this reason."""
        if self is Reason.ACCESS_DENIED:
            return Action.FORBIDDEN
        if self is Reason.SERVER_ERROR:
            return Action.INTERNAL_SERVER_ERROR
        return Action.BAD_REQUEST


_STATUS = {Action.INTERNAL_SERVER_ERROR: 500, Action.BAD_REQUEST: 400, Action.FORBIDDEN: 403}
