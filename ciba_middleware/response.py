"""Everything that renders an answer.

- to the *caller* of the fail API: :class:`FailResponse` and its JSON exactly as Authlete
  writes it (:func:`success_json`, :func:`error_body`, the pre-encoded answer of each
  reason in :data:`PLAIN_ANSWERS`);
- to the *client* of the backchannel authentication endpoint, after a fail call:
  :func:`client_response` and :class:`ClientResponse` (CIBA Core 13), also what the
  toolkit's endpoints answer;
- to any other request of the fail API alone: :func:`not_found_app`, a JSON 404.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .reasons import Action, Reason

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "HEADERS",
    "PLAIN_ANSWERS",
    "STATUS_LINES",
    "SUCCESS_CODE",
    "SUCCESS_MESSAGE",
    "ClientResponse",
    "FailResponse",
    "client_response",
    "error_body",
    "not_found_app",
    "response_content",
    "status_line",
    "success_json",
]

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


#: ``{404: "404 Not Found", ...}``: every status line, made once.
STATUS_LINES: dict[int, str] = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


def status_line(code: int) -> str:
    """``404 Not Found``: the status line of ``code``, as WSGI wants it."""
    line = STATUS_LINES.get(code)
    return line if line is not None else f"{code} {HTTPStatus(code).phrase}"


def _with_length(body: bytes) -> tuple[tuple[tuple[str, str], ...], bytes]:
    return (*HEADERS, ("Content-Length", str(len(body)))), body


#: The headers and body of the success answer for each reason without description or URI,
#: encoded once: most calls get one of these.
PLAIN_ANSWERS: dict[Reason, tuple[tuple[tuple[str, str], ...], bytes]] = {
    reason: _with_length(success_json(reason)) for reason in Reason
}


def not_found_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """A WSGI app that answers every request with a JSON 404."""
    body = b'{"error":"not_found"}'
    start_response(
        "404 Not Found",
        [("Content-Type", "application/json;charset=UTF-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


# -- the answer to the CIBA client ---------------------------------------------------------

_ACTIONS = ", ".join(a.value for a in Action)


@dataclass(frozen=True, slots=True)
class ClientResponse:
    """An answer for a CIBA *client*: status, headers and JSON body, framework-free.

    The fail API answers the *authorization server*; the server then answers its *client*
    (CIBA Core 13) with a status taken from the API's ``action`` and a body that is the
    API's ``responseContent`` (:func:`client_response`). The toolkit's endpoint handlers
    (:class:`ciba_middleware.ciba.CibaEndpoints`) answer their clients with one too.

    ``headers`` hold ``Content-Type: application/json;charset=UTF-8``,
    ``Cache-Control: no-store`` and ``Pragma: no-cache``; the framework adds
    ``Content-Length``. With Flask::

        r = client_response(fail_response)
        return flask.Response(r.body, status=r.status, headers=r.headers)
    """

    status: int
    headers: list[tuple[str, str]]
    body: str

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


def client_response(fail_response: object, *, server_error_status: int = 500) -> ClientResponse:
    """Turn the fail API's answer into the response for the client.

    Whichever way the fail call was made, ``fail_response`` is one of:

    - a :class:`ciba_middleware.FailResponse` (from :meth:`BackchannelFailMiddleware.fail`);
    - a mapping with Authlete's field names ``action`` and ``responseContent``
      (the JSON body of a remote call, parsed);
    - an object with attributes ``action`` (an enum whose ``name`` is the action, or a
      string) and ``responseContent``: authlete-python's
      ``BackchannelAuthenticationFailResponse``.

    The status is 400 for ``BAD_REQUEST``, 403 for ``FORBIDDEN`` and ``server_error_status``
    for ``INTERNAL_SERVER_ERROR``: Authlete notes that commercial deployments often prefer
    another status than 5xx there. Any other action, or a missing ``responseContent``,
    raises :class:`ValueError` rather than answering the client something made up.

    >>> r = client_response(FailResponse.success(Reason.ACCESS_DENIED))
    >>> r.status, r.body
    (403, '{"error":"access_denied"}')
    """
    if isinstance(server_error_status, bool) or not isinstance(server_error_status, int):
        raise TypeError(f"server_error_status must be an int, not {type(server_error_status).__name__}")
    if not 400 <= server_error_status <= 599:
        raise ValueError(f"server_error_status must be an HTTP error status (400-599), not {server_error_status}")

    if isinstance(fail_response, FailResponse):
        action: object = fail_response.action
        content: object = fail_response.response_content
    elif isinstance(fail_response, Mapping):
        action = fail_response.get("action")
        content = fail_response.get("responseContent")
    elif hasattr(fail_response, "action") and hasattr(fail_response, "responseContent"):
        action = fail_response.action
        content = fail_response.responseContent
    else:
        raise TypeError(
            "fail_response must be a FailResponse, a mapping with 'action' and 'responseContent', "
            f"or an Authlete BackchannelAuthenticationFailResponse, not {type(fail_response).__name__}"
        )

    known = _action(action)
    if not isinstance(content, str) or not content:
        raise ValueError(f"the fail response has no responseContent (got {type(content).__name__})")
    status = server_error_status if known is Action.INTERNAL_SERVER_ERROR else known.status
    return ClientResponse(status, list(HEADERS), content)


def _action(value: object) -> Action:
    """The Action named by ``value``: an Action, an Authlete enum member, or its name."""
    if isinstance(value, Enum) and not isinstance(value, str):
        value = value.name
    if isinstance(value, str):
        try:
            return Action(value)
        except ValueError:
            pass
    raise ValueError(f"the fail response's action is {value!r}, which is not one of {_ACTIONS}")
