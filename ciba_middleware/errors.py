"""Errors of the fail API call itself, each with its HTTP status and result code.

Result codes follow Authlete's scheme: ``A`` + the API number ``185`` + three digits whose
first says who is at fault (``0`` success, ``1`` this server, ``2`` the caller), except
where Authlete itself shows a code for the same case: then Authlete's (``A001202`` for a
missing Authorization header, ``A001101`` for an unexpected server error, from Authlete's
OpenAPI description). Every class carries its status, code and message, and
:mod:`ciba_middleware.core` renders them in one place. The full table, with the source of
each code, is in ``docs/api.md``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ApiError",
    "BadRequest",
    "ConfigurationError",
    "DpopRefused",
    "Forbidden",
    "GrantsUnavailable",
    "InternalError",
    "InvalidParameter",
    "MethodNotAllowed",
    "MissingAuthorization",
    "PayloadTooLarge",
    "StoreError",
    "StoreFailed",
    "Unauthorized",
    "UnsupportedMediaType",
]

API_PATH = "/backchannel/authentication/fail"


class ConfigurationError(Exception):
    """Bad configuration, raised when an object is built, never per request."""


class StoreError(Exception):
    """A ticket store failed or could not be reached.

    Every store wraps its backend's exceptions in this one type, so the middleware can
    answer the contract's 500 without knowing which backend is in use.
    """


class ApiError(Exception):
    """An error answer of the fail API.

    ``status`` is the HTTP status, ``result_code`` Authlete-style ``A185xyz``, and
    ``detail`` says what exactly was wrong. ``with_action`` marks the errors that reach the
    request itself: their body also carries ``action: INTERNAL_SERVER_ERROR`` and a
    ``server_error`` responseContent, as Authlete does for wrong request parameters.
    """

    status: ClassVar[int] = 400
    result_code: ClassVar[str] = "A185200"
    with_action: ClassVar[bool] = True
    headers: tuple[tuple[str, str], ...] = ()
    #: For authentication errors, which check failed (``missing``, ``scheme``,
    #: ``malformed``, ``invalid``, ``dpop``, ``not_covered``): for metrics and the audit log.
    auth_failure: str | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def result_message(self) -> str:
        return f"[{self.result_code}] {API_PATH}, {self.detail}"


class BadRequest(ApiError):
    """The body could not be read as the fields of the request (bad JSON, bad form, ...)."""

    status = 400
    result_code = "A185201"


class InvalidParameter(BadRequest, ValueError):
    """A field was read but its value is not acceptable.

    Also raised by :meth:`BackchannelFailMiddleware.fail` for a bad argument, hence
    ``ValueError``.
    """

    result_code = "A185202"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"'{field}' {detail}")
        self.field = field


class UnsupportedMediaType(ApiError):
    status = 415
    result_code = "A185203"


class PayloadTooLarge(ApiError):
    status = 413
    result_code = "A185204"


class Unauthorized(ApiError):
    """Missing, malformed or unknown credentials (RFC 6750 3.1)."""

    status = 401
    result_code = "A185211"
    with_action = False

    def __init__(self, detail: str, challenge: str, auth_failure: str) -> None:
        super().__init__(detail)
        self.headers = (("WWW-Authenticate", challenge),)
        self.auth_failure = auth_failure


class MissingAuthorization(Unauthorized):
    """No Authorization header: Authlete's own code and text for it."""

    result_code = "A001202"

    def __init__(self, challenge: str) -> None:
        super().__init__("Authorization header is missing.", challenge, "missing")


class DpopRefused(Unauthorized):
    """A DPoP proof that is missing or not valid, or a DPoP-bound token sent without one.

    The challenge is RFC 9449's (section 7.1): ``DPoP`` with ``error="invalid_dpop_proof"``
    for a bad proof, ``error="invalid_token"`` for a token used against its binding.
    """

    result_code = "A185214"

    def __init__(self, detail: str, challenge: str) -> None:
        super().__init__(detail, challenge, "dpop")


class Forbidden(ApiError):
    """Valid credentials that do not cover the service."""

    status = 403
    result_code = "A185212"
    with_action = False
    auth_failure = "not_covered"


class MethodNotAllowed(ApiError):
    status = 405
    result_code = "A185213"
    with_action = False
    headers = (("Allow", "POST"),)


class StoreFailed(ApiError):
    """The ticket store failed: the caller should answer the client ``server_error``."""

    status = 500
    result_code = "A185101"


class GrantsUnavailable(ApiError):
    """No grants could be loaded in this process (a bad ``CIBA_TOKENS_FILE`` found by a
    worker started after the first start): nobody can be authenticated until it is fixed."""

    status = 500
    result_code = "A185103"


class InternalError(ApiError):
    """An unexpected exception; the single place where one becomes an answer."""

    status = 500
    result_code = "A001101"
