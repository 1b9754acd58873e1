"""What the backchannel authentication endpoint sends the client after a fail call.

The fail API answers the *authorization server*; the server then answers its *client*
(CIBA Core 13) with a status taken from the API's ``action`` and a body that is the API's
``responseContent``. :func:`client_response` does that translation, whichever way the fail
call was made: in process (a :class:`~ciba_middleware.FailResponse`), or over HTTP with
authlete-python (its ``BackchannelAuthenticationFailResponse``) or any other client that
left the JSON as a dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from .reasons import Action
from .response import HEADERS, FailResponse

__all__ = ["ClientResponse", "client_response"]

_ACTIONS = ", ".join(a.value for a in Action)


@dataclass(frozen=True, slots=True)
class ClientResponse:
    """The status, headers and body for the client of the backchannel authentication endpoint.

    ``headers`` hold ``Content-Type: application/json;charset=UTF-8``,
    ``Cache-Control: no-store`` and ``Pragma: no-cache``; the framework adds
    ``Content-Length``. With Flask::

        r = client_response(fail_response)
        return flask.Response(r.body, status=r.status, headers=r.headers)
    """

    status: int
    headers: list[tuple[str, str]]
    body: str


def client_response(fail_response: object, *, server_error_status: int = 500) -> ClientResponse:
    """Turn the fail API's answer into the response for the client.

    ``fail_response`` is one of:

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

    >>> from ciba_middleware import Reason
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
