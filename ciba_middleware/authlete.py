"""authlete-python's ``AuthleteApi``, with ``backchannelAuthenticationFail`` served in process.

Code written against authlete-python calls the fail API as::

    api = AuthleteApiImpl(AuthleteConfiguration(...))
    response = api.backchannelAuthenticationFail(request)

With the middleware in the same process, one line changes and no HTTP is made::

    api = InProcessAuthleteApi(middleware, service_id="715948317")

The request DTO goes in, a ``BackchannelAuthenticationFailResponse`` comes out, built from the
same JSON the HTTP route answers; where the HTTP path would raise ``AuthleteApiException`` (a
non-2xx answer: a bad field, a failing store), so does this, with ``message`` the
``resultMessage`` and ``response`` a ``requests.Response`` holding the status and body the HTTP
route gives. Every other ``AuthleteApi`` method raises ``AuthleteApiException`` saying it is not
served in process: the tickets this object fails are the ticket store's, never Authlete's
(docs/authlete.md, "Where tickets come from").

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
from authlete.dto.backchannel_authentication_fail_response import BackchannelAuthenticationFailResponse
from requests.structures import CaseInsensitiveDict

from .errors import API_PATH, InvalidParameter, StoreFailed
from .response import HEADERS, FailResponse

__all__ = ["InProcessAuthleteApi"]

#: The one AuthleteApi method served here (and getSettings, which every AuthleteApi has).
SERVED = frozenset(("backchannelAuthenticationFail", "getSettings"))


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
            f"{name} is not served in process; only backchannelAuthenticationFail is "
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
        answer = requests.Response()
        answer.status_code = status
        answer.reason = HTTPStatus(status).phrase
        answer.url = self._url
        answer.encoding = "utf-8"
        answer.headers = CaseInsensitiveDict(dict(HEADERS))
        # requests keeps a received body here; a built Response has no other place for it.
        answer._content = response.to_json()
        return AuthleteApiException(self._url, None, body, response.result_message, cause, answer)


def _request_json(fields: dict[str, Any]) -> str:
    """The request body authlete-python would have sent, for the exception (as ``requestBody``)."""
    return json.dumps({k: getattr(v, "name", v) for k, v in fields.items()})
