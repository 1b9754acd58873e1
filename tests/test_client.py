"""client_response: the fail API's answer -> what the backchannel endpoint sends its client."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from authlete.dto.backchannel_authentication_action import BackchannelAuthenticationAction
from authlete.dto.backchannel_authentication_fail_response import BackchannelAuthenticationFailResponse
from authlete.dto.backchannel_authentication_response import BackchannelAuthenticationResponse
from conftest import API_HEADERS

from ciba_middleware import ClientResponse, FailResponse, Reason, client_response
from ciba_middleware.errors import StoreFailed

HEADERS = list(API_HEADERS.items())


def as_itself(response: FailResponse) -> object:
    return response


def as_dict(response: FailResponse) -> object:
    """What a client gets by parsing the HTTP body, e.g. ``requests.post(...).json()``."""
    return json.loads(response.to_json())


def as_authlete_dto(response: FailResponse) -> object:
    """What authlete-python 1.3.0's ``backchannelAuthenticationFail`` returns for that body."""
    return BackchannelAuthenticationFailResponse.from_json(response.to_json().decode())


KINDS = [
    pytest.param(as_itself, id="FailResponse"),
    pytest.param(as_dict, id="dict"),
    pytest.param(as_authlete_dto, id="authlete-dto"),
]

STATUS = {
    Reason.ACCESS_DENIED: 403,
    Reason.EXPIRED_LOGIN_HINT_TOKEN: 400,
    Reason.INVALID_BINDING_MESSAGE: 400,
    Reason.INVALID_TARGET: 400,
    Reason.INVALID_USER_CODE: 400,
    Reason.MISSING_USER_CODE: 400,
    Reason.SERVER_ERROR: 500,
    Reason.UNAUTHORIZED_CLIENT: 400,
    Reason.UNKNOWN_USER_ID: 400,
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reason", [pytest.param(r, id=r.value) for r in Reason])
def test_every_reason(kind: Callable[[FailResponse], object], reason: Reason) -> None:
    answer = client_response(kind(FailResponse.success(reason)))
    assert answer == ClientResponse(STATUS[reason], HEADERS, f'{{"error":"{reason.value.lower()}"}}')


@pytest.mark.parametrize("kind", KINDS)
def test_description_and_uri_are_passed_on_verbatim(kind: Callable[[FailResponse], object]) -> None:
    fail = FailResponse.success(Reason.INVALID_USER_CODE, "The user code is wrong.", "https://as.example/errors#uc")
    answer = client_response(kind(fail))
    assert answer.status == 400
    assert answer.body == (
        '{"error":"invalid_user_code","error_description":"The user code is wrong.",'
        '"error_uri":"https://as.example/errors#uc"}'
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("reason", "status"),
    [
        pytest.param(Reason.SERVER_ERROR, 503, id="server-error-replaced"),
        pytest.param(Reason.ACCESS_DENIED, 403, id="forbidden-untouched"),
        pytest.param(Reason.UNKNOWN_USER_ID, 400, id="bad-request-untouched"),
    ],
)
def test_server_error_status(kind: Callable[[FailResponse], object], reason: Reason, status: int) -> None:
    assert client_response(kind(FailResponse.success(reason)), server_error_status=503).status == status


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_failure_becomes_server_error(kind: Callable[[FailResponse], object]) -> None:
    fail = FailResponse.from_error(StoreFailed("the ticket store failed"))
    assert not fail.ok
    assert client_response(kind(fail)) == ClientResponse(500, HEADERS, '{"error":"server_error"}')


def test_headers_are_a_fresh_list_each_time() -> None:
    first = client_response(FailResponse.success(Reason.ACCESS_DENIED))
    first.headers.append(("X-Mine", "1"))
    assert client_response(FailResponse.success(Reason.ACCESS_DENIED)).headers == HEADERS


def wrong_dto() -> object:
    """A response of another API (``/backchannel/authentication``), passed by mistake."""
    return BackchannelAuthenticationResponse(
        {"action": BackchannelAuthenticationAction.USER_IDENTIFICATION, "responseContent": "{}"}
    )


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        pytest.param(
            {"action": "OK", "responseContent": '{"error":"x"}'},
            ValueError,
            "the fail response's action is 'OK', which is not one of INTERNAL_SERVER_ERROR, BAD_REQUEST, FORBIDDEN",
            id="unknown-action",
        ),
        pytest.param(
            {"action": "forbidden", "responseContent": '{"error":"x"}'},
            ValueError,
            "the fail response's action is 'forbidden', which is not one of "
            "INTERNAL_SERVER_ERROR, BAD_REQUEST, FORBIDDEN",
            id="action-wrong-case",
        ),
        pytest.param(
            {"resultCode": "A185201", "resultMessage": "bad"},
            ValueError,
            "the fail response's action is None, which is not one of INTERNAL_SERVER_ERROR, BAD_REQUEST, FORBIDDEN",
            id="error-body-without-action",
        ),
        pytest.param(
            BackchannelAuthenticationFailResponse.from_json('{"resultCode":"A185201"}'),
            ValueError,
            "the fail response's action is None, which is not one of INTERNAL_SERVER_ERROR, BAD_REQUEST, FORBIDDEN",
            id="dto-without-action",
        ),
        pytest.param(
            wrong_dto(),
            ValueError,
            "the fail response's action is 'USER_IDENTIFICATION', which is not one of "
            "INTERNAL_SERVER_ERROR, BAD_REQUEST, FORBIDDEN",
            id="dto-of-another-api",
        ),
        pytest.param(
            {"action": "FORBIDDEN"},
            ValueError,
            "the fail response has no responseContent (got NoneType)",
            id="no-response-content",
        ),
        pytest.param(
            {"action": "FORBIDDEN", "responseContent": {"error": "access_denied"}},
            ValueError,
            "the fail response has no responseContent (got dict)",
            id="response-content-not-a-string",
        ),
        pytest.param(
            b'{"action":"FORBIDDEN"}',
            TypeError,
            "fail_response must be a FailResponse, a mapping with 'action' and 'responseContent', "
            "or an Authlete BackchannelAuthenticationFailResponse, not bytes",
            id="raw-bytes",
        ),
    ],
)
def test_what_is_not_a_fail_response(given: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        client_response(given)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        pytest.param(200, ValueError, "server_error_status must be an HTTP error status (400-599), not 200", id="200"),
        pytest.param(600, ValueError, "server_error_status must be an HTTP error status (400-599), not 600", id="600"),
        pytest.param(True, TypeError, "server_error_status must be an int, not bool", id="bool"),
        pytest.param("503", TypeError, "server_error_status must be an int, not str", id="str"),
    ],
)
def test_bad_server_error_status(status: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        client_response(FailResponse.success(Reason.SERVER_ERROR), server_error_status=status)
    assert str(caught.value) == message
