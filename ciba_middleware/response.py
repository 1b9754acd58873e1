"""The fail API's answer: :class:`FailResponse`, and its JSON exactly as Authlete writes it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from .errors import ApiError
from .reasons import Action, Reason

__all__ = ["HEADERS", "SUCCESS_CODE", "SUCCESS_MESSAGE", "FailResponse", "response_content", "success_json"]

SUCCESS_CODE = "A185001"
SUCCESS_MESSAGE = "[A185001] Successfully generated an error response for the backchannel authentication request."

#: Headers of every answer of the fail API (Content-Length is added per answer).
HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "application/json;charset=UTF-8"),
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
)

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
# The string encoder _compact uses for every key and value (C). Writing the few fixed keys
# around it gives the same bytes as _compact on the dict, without building the dict.
_string = json.encoder.encode_basestring_ascii
_ERROR_HEAD = {reason: '{"error":' + _string(reason.error) for reason in Reason}


def response_content(reason: Reason, error_description: str | None = None, error_uri: str | None = None) -> str:
    """The JSON the client gets: ``error``, then ``error_description`` and ``error_uri`` when given."""
    content = _ERROR_HEAD[reason]
    if error_description is not None:
        content += ',"error_description":' + _string(error_description)
    if error_uri is not None:
        content += ',"error_uri":' + _string(error_uri)
    return content + "}"


@dataclass(frozen=True, slots=True)
class FailResponse:
    """What the fail API answered: Authlete's ``BackchannelAuthenticationFailResponse``.

    ``action`` says what to do, and ``response_content`` is the body to send the client;
    :func:`ciba_middleware.client_response` turns both into a status, headers and body.

    >>> r = FailResponse.success(Reason.ACCESS_DENIED)
    >>> r.action, r.response_content
    (<Action.FORBIDDEN: 'FORBIDDEN'>, '{"error":"access_denied"}')
    """

    result_code: str
    result_message: str
    action: Action
    response_content: str

    @classmethod
    def success(
        cls, reason: Reason, error_description: str | None = None, error_uri: str | None = None
    ) -> FailResponse:
        return cls(
            SUCCESS_CODE,
            SUCCESS_MESSAGE,
            reason.action,
            response_content(reason, error_description, error_uri),
        )

    @classmethod
    def from_error(cls, error: ApiError) -> FailResponse:
        """The answer for an error that reached the request: INTERNAL_SERVER_ERROR."""
        return cls(error.result_code, error.result_message, Action.INTERNAL_SERVER_ERROR, _SERVER_ERROR_CONTENT)

    def to_dict(self) -> dict[str, str]:
        """Authlete's field names, as in the HTTP body."""
        return {
            "resultCode": self.result_code,
            "resultMessage": self.result_message,
            "action": self.action.value,
            "responseContent": self.response_content,
        }

    def to_json(self) -> bytes:
        return _compact(self.to_dict()).encode("ascii")

    @property
    def ok(self) -> bool:
        """True when the call succeeded (``A185001``), whatever the action."""
        return self.result_code == SUCCESS_CODE


_SERVER_ERROR_CONTENT = response_content(Reason.SERVER_ERROR)
_SUCCESS_HEAD = {
    reason: f'{{"resultCode":"{SUCCESS_CODE}","resultMessage":{_string(SUCCESS_MESSAGE)},'
    f'"action":{_string(reason.action.value)},"responseContent":'
    for reason in Reason
}


def success_json(reason: Reason, error_description: str | None = None, error_uri: str | None = None) -> bytes:
    """``FailResponse.success(...).to_json()``, byte for byte, without the objects in between."""
    content = response_content(reason, error_description, error_uri)
    return f"{_SUCCESS_HEAD[reason]}{_string(content)}}}".encode("ascii")


def error_body(error: ApiError) -> bytes:
    """The JSON body of an error answer: Authlete's ``result``, plus the action when it applies."""
    if error.with_action:
        return FailResponse.from_error(error).to_json()
    body: dict[str, Any] = {"resultCode": error.result_code, "resultMessage": error.result_message}
    return _compact(body).encode("ascii")


def status_line(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"
