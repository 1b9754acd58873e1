"""authlete-python's ``AuthleteApi``, with the CIBA API family served in process.

Code written against authlete-python calls the fail API as::

    api = AuthleteApiImpl(AuthleteConfiguration(...))
    response = api.backchannelAuthenticationFail(request)

With the middleware in the same process, one line changes and no HTTP is made::

    api = InProcessAuthleteApi(middleware, service_id="715948317")

The request DTO goes in, a ``BackchannelAuthenticationFailResponse`` comes out, built from the
same JSON the HTTP route answers; where the HTTP path would raise ``AuthleteApiException`` (a
non-2xx answer: a bad field, a failing store), so does this, with ``message`` the
``resultMessage`` and ``response`` a ``requests.Response`` holding the status and body the HTTP
route gives.

When the middleware serves the CIBA family (``CIBA_CLIENTS``), so does this object, the same
way: ``backchannelAuthentication``, ``backchannelAuthenticationIssue``,
``backchannelAuthenticationComplete``, ``token`` (the CIBA grant), ``introspection``,
``getServiceJwks`` and ``getServiceConfiguration`` (both return the JSON text, as
``AuthleteApiImpl`` does). Every other ``AuthleteApi`` method raises ``AuthleteApiException``
saying it is not served in process: the tickets and tokens this object handles are the
store's, never Authlete's (docs/authlete.md).

Needs the ``authlete`` extra: ``pip install 'ciba-middleware[authlete]'``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol

import requests
from authlete.api.authlete_api import AuthleteApi
from authlete.api.authlete_api_exception import AuthleteApiException
from authlete.api.settings import Settings
from authlete.dto.backchannel_authentication_complete_response import BackchannelAuthenticationCompleteResponse
from authlete.dto.backchannel_authentication_fail_response import BackchannelAuthenticationFailResponse
from authlete.dto.backchannel_authentication_issue_response import BackchannelAuthenticationIssueResponse
from authlete.dto.backchannel_authentication_response import BackchannelAuthenticationResponse
from authlete.dto.introspection_response import IntrospectionResponse
from authlete.dto.token_response import TokenResponse
from requests.structures import CaseInsensitiveDict

from .errors import API_PATH, ConfigurationError, InvalidParameter, StoreFailed
from .response import HEADERS, FailResponse

__all__ = ["InProcessAuthleteApi"]

#: The family's AuthleteApi methods: the route each calls, and the DTO it returns (None: text).
FAMILY: dict[str, tuple[str, type[Any] | None]] = {
    "backchannelAuthentication": ("backchannel/authentication", BackchannelAuthenticationResponse),
    "backchannelAuthenticationIssue": ("backchannel/authentication/issue", BackchannelAuthenticationIssueResponse),
    "backchannelAuthenticationComplete": (
        "backchannel/authentication/complete",
        BackchannelAuthenticationCompleteResponse,
    ),
    "token": ("auth/token", TokenResponse),
    "introspection": ("auth/introspection", IntrospectionResponse),
}
#: The AuthleteApi methods served here (and getSettings, which every AuthleteApi has).
SERVED = frozenset(
    ("backchannelAuthenticationFail", "getSettings", "getServiceJwks", "getServiceConfiguration", *FAMILY)
)


class _Fails(Protocol):
    prefix: str

    def fail(
        self,
        service_id: str,
        ticket: str | None = ...,
        reason: Any = ...,
        error_description: str | None = ...,
        error_uri: str | None = ...,
    ) -> FailResponse: ...


def _not_served(name: str) -> Callable[..., Any]:
    def method(self: InProcessAuthleteApi, *args: Any, **kwargs: Any) -> Any:
        raise AuthleteApiException(
            None,
            None,
            None,
            f"{name} is not served in process; only the CIBA family is "
            "(call Authlete's API for the others with AuthleteApiImpl)",
        )

    method.__name__ = name
    return method


# AuthleteApi is an ABC of every Authlete API: the ones not served here raise.
_Unserved: Any = type(
    "_Unserved",
    (AuthleteApi,),
    {name: _not_served(name) for name in sorted(AuthleteApi.__abstractmethods__ - SERVED)},
)


class InProcessAuthleteApi(_Unserved):  # type: ignore[misc]
    """An ``AuthleteApi`` whose ``backchannelAuthenticationFail`` is :meth:`FailApi.fail`.

    :param api: a :class:`~ciba_middleware.core.FailApi`, or the
        :class:`~ciba_middleware.BackchannelFailMiddleware` (or Flask extension's) holding one.
    :param service_id: the service every call is for, as ``serviceApiKey`` in
        authlete-python's configuration.
    """

    def __init__(self, api: _Fails, service_id: str) -> None:
        if not isinstance(service_id, str) or not service_id:
            raise ValueError(f"service_id must be a non-empty string, not {service_id!r}")
        self._api = api
        self._service_id = service_id
        self._settings = Settings()
        self._url = f"in-process:{getattr(api, 'prefix', '')}/api/{service_id}{API_PATH}"

    def getSettings(self) -> Any:
        """authlete-python's ``Settings`` (timeouts): kept, but nothing here waits on a network."""
        return self._settings

    def backchannelAuthenticationFail(self, request: Any) -> Any:
        """Fail the request in process; what ``AuthleteApiImpl.backchannelAuthenticationFail`` returns or raises."""
        fields = {name: getattr(request, name, None) for name in ("ticket", "reason", "errorDescription", "errorUri")}
        body = _request_json(fields)
        try:
            response = self._api.fail(
                self._service_id, fields["ticket"], fields["reason"], fields["errorDescription"], fields["errorUri"]
            )
        except InvalidParameter as exc:
            raise self._error(exc.status, FailResponse.from_error(exc), body, exc) from exc
        if response.result_code == StoreFailed.result_code:
            raise self._error(StoreFailed.status, response, body, None)
        return BackchannelAuthenticationFailResponse.from_json(response.to_json().decode("ascii"))

    def _error(self, status: int, response: FailResponse, body: str, cause: Exception | None) -> AuthleteApiException:
        """The exception authlete-python raises for a non-2xx answer, with that answer attached."""
        return self._raised(self._url, status, response.to_json(), response.result_message, body, cause)

    def _raised(
        self, url: str, status: int, content: bytes, message: str, body: str | None, cause: Exception | None
    ) -> AuthleteApiException:
        answer = requests.Response()
        answer.status_code = status
        answer.reason = HTTPStatus(status).phrase
        answer.url = url
        answer.encoding = "utf-8"
        answer.headers = CaseInsensitiveDict(dict(HEADERS))
        # requests keeps a received body here; a built Response has no other place for it.
        answer._content = content
        return AuthleteApiException(url, None, body, message, cause, answer)

    def _family(self, endpoint: str, request: Any) -> tuple[str, dict[str, Any]]:
        """Call the family's ``endpoint`` with the DTO's fields; the JSON answer, or the
        exception AuthleteApiImpl raises for a non-2xx one."""
        call = getattr(getattr(self._api, "api", self._api), "call", None)
        url = f"in-process:{getattr(self._api, 'prefix', '')}/api/{self._service_id}/{endpoint}"
        if call is None:
            raise AuthleteApiException(url, None, None, f"{self._api!r} serves no CIBA family")
        body = request.to_json() if request is not None else None
        fields = json.loads(body) if body is not None else {}
        try:
            status, payload = call(endpoint, self._service_id, fields)
        except ConfigurationError as exc:
            raise AuthleteApiException(url, None, body, str(exc), exc) from exc
        text = json.dumps(payload, separators=(",", ":"))
        if not 200 <= status < 300:
            raise self._raised(url, status, text.encode(), str(payload.get("resultMessage")), body, None)
        return text, payload

    def backchannelAuthentication(self, request: Any) -> Any:
        """``/backchannel/authentication`` in process."""
        return self._dto("backchannelAuthentication", request)

    def backchannelAuthenticationIssue(self, request: Any) -> Any:
        """``/backchannel/authentication/issue`` in process."""
        return self._dto("backchannelAuthenticationIssue", request)

    def backchannelAuthenticationComplete(self, request: Any) -> Any:
        """``/backchannel/authentication/complete`` in process."""
        return self._dto("backchannelAuthenticationComplete", request)

    def token(self, request: Any) -> Any:
        """``/auth/token`` (the CIBA grant) in process."""
        return self._dto("token", request)

    def introspection(self, request: Any) -> Any:
        """``/auth/introspection`` in process."""
        return self._dto("introspection", request)

    def getServiceJwks(self, pretty: bool = True, includePrivateKeys: bool = False) -> Any:
        """``/service/jwks/get`` in process: the JWK Set as JSON text (never a private key)."""
        return self._family("service/jwks/get", None)[0]

    def getServiceConfiguration(self, request: Any = None) -> Any:
        """``/service/configuration`` in process: the discovery document as JSON text."""
        return self._family("service/configuration", None)[0]

    def _dto(self, method: str, request: Any) -> Any:
        endpoint, response_class = FAMILY[method]
        text, _ = self._family(endpoint, request)
        assert response_class is not None
        return response_class.from_json(text)


def _request_json(fields: dict[str, Any]) -> str:
    """The request body authlete-python would have sent, for the exception (as ``requestBody``)."""
    return json.dumps({k: getattr(v, "name", v) for k, v in fields.items()})
