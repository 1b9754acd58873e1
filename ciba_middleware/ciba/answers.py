"""The family's vocabulary: its endpoints, actions, result codes and errors.

Result codes follow Authlete's scheme, ``A`` + an API number + three digits, and are
Authlete's own where Authlete shows one (``A179001``, ``A056001``). Elsewhere the numbers
are ours: 179 for ``/backchannel/authentication`` (Authlete's number for it), 186 issue,
187 complete, 188 token, 189 introspection, 190 jwks, 191 configuration. The first of the
three digits says who is at fault: ``0`` nobody, ``1`` this server, ``2`` the API's caller,
``3`` the CIBA client (an answer for the client, HTTP 200 to the caller). The API caller's
authentication and the request's framing keep the fail API's codes (``A001202``,
``A185211``, ...). ``docs/api.md`` lists them all.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple

from ..errors import ApiError
from ..response import HEADERS

__all__ = [
    "ENDPOINTS",
    "SUFFIXES",
    "ApiAction",
    "Endpoint",
    "FamilyError",
    "Reply",
    "StoreDown",
    "encode_answer",
    "error_content",
    "wired",
]


class ApiAction(StrEnum):
    """Every ``action`` a family call may answer, by Authlete's names."""

    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    USER_IDENTIFICATION = "USER_IDENTIFICATION"
    OK = "OK"
    INVALID_TICKET = "INVALID_TICKET"
    NOTIFICATION = "NOTIFICATION"
    NO_ACTION = "NO_ACTION"
    SERVER_ERROR = "SERVER_ERROR"
    INVALID_CLIENT = "INVALID_CLIENT"


class Endpoint(NamedTuple):
    """One route of the family: its name (the path after ``/api[/{serviceId}]``), the
    methods it takes, its API number, and the action of a server-side failure (None: the
    route has no action)."""

    name: str
    methods: tuple[str, ...]
    number: int
    server_action: ApiAction | None

    @property
    def suffix(self) -> str:
        return "/" + self.name


ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        Endpoint("backchannel/authentication", ("POST",), 179, ApiAction.INTERNAL_SERVER_ERROR),
        Endpoint("backchannel/authentication/issue", ("POST",), 186, ApiAction.INTERNAL_SERVER_ERROR),
        Endpoint("backchannel/authentication/complete", ("POST",), 187, ApiAction.SERVER_ERROR),
        Endpoint("auth/token", ("POST",), 188, ApiAction.INTERNAL_SERVER_ERROR),
        Endpoint("auth/introspection", ("POST",), 189, ApiAction.INTERNAL_SERVER_ERROR),
        Endpoint("service/jwks/get", ("GET",), 190, None),
        Endpoint("service/configuration", ("GET", "POST"), 191, None),
    )
}
#: Every route's path ending, for one ``str.endswith`` on each request's path.
SUFFIXES = tuple(e.suffix for e in ENDPOINTS.values())


class Reply(NamedTuple):
    """A family call's successful answer (HTTP 200): its body, and what the event records."""

    body: Mapping[str, Any]
    action: ApiAction | None
    result_code: str
    #: The ticket the call created or used, for the event's hash; never logged in clear.
    ticket: str | None = None
    #: The answer's headers (``Content-Length`` last) and bytes, encoded once for a reply
    #: many calls get (:func:`wired`); None: the API encodes ``body`` for each call.
    wire: tuple[tuple[tuple[str, str], ...], bytes] | None = None


_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def encode_answer(payload: Mapping[str, Any]) -> bytes:
    """A family answer's bytes as the API sends them: compact JSON, ASCII."""
    return _compact(payload).encode("ascii")


def wired(reply: Reply) -> Reply:
    """``reply`` with its answer encoded (:attr:`Reply.wire`): what the API would send for
    it, its null fields left out, as for every reply. For a reply made once and given to
    many calls (every pending poll gets the same one)."""
    answer = encode_answer({name: value for name, value in reply.body.items() if value is not None})
    return reply._replace(wire=((*HEADERS, ("Content-Length", str(len(answer)))), answer))


class FamilyError(ApiError):
    """An error answer of a family route, the API caller's or this server's problem.

    ``code`` is the last three digits; the route's number completes the result code.
    """

    status: ClassVar[int] = 400
    code: ClassVar[str] = "201"

    def __init__(self, detail: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(detail)
        if code is not None:
            self.code = code  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]


class StoreDown(FamilyError):
    """The store failed: the client should get ``server_error``."""

    status = 500
    code = "101"


@functools.lru_cache(maxsize=256)
def error_content(error: str, description: str | None = None, uri: str | None = None) -> str:
    """RFC 6749 5.2's JSON error for the client.

    Remembered: most answers are a few fixed texts (every pending poll's is the same), and
    the bound keeps callers' own descriptions from growing the table."""
    body: dict[str, str] = {"error": error}
    if description is not None:
        body["error_description"] = description
    if uri is not None:
        body["error_uri"] = uri
    return json.dumps(body, separators=(",", ":"))
