"""authlete-python's AuthleteApi served in process: the same answers and exceptions as over HTTP."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from authlete.api.authlete_api import AuthleteApi
from authlete.api.authlete_api_exception import AuthleteApiException
from authlete.api.authlete_api_impl import AuthleteApiImpl
from authlete.conf.authlete_configuration import AuthleteConfiguration
from authlete.dto.backchannel_authentication_fail_reason import BackchannelAuthenticationFailReason
from authlete.dto.backchannel_authentication_fail_request import BackchannelAuthenticationFailRequest
from authlete.dto.backchannel_authentication_fail_response import BackchannelAuthenticationFailResponse
from authlete.dto.backchannel_authentication_request import BackchannelAuthenticationRequest
from conftest import GRANTS, SERVICE, SERVICE_TOKEN, LiveServer

from ciba_middleware import BackchannelFailMiddleware, FailEvent, StaticTokenVerifier
from ciba_middleware.authlete import InProcessAuthleteApi
from ciba_middleware.core import FailApi
from ciba_middleware.stores import store_from_url


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('inprocess') / 'tickets.sqlite3'}?timeout=0"


@pytest.fixture(scope="module")
def server(store_url: str) -> Iterator[LiveServer]:
    live = LiveServer(
        "ciba_middleware.wsgi:application", {"CIBA_STORE_URL": store_url, "CIBA_TOKENS": json.dumps(GRANTS)}
    )
    yield live
    live.stop()


@pytest.fixture
def events() -> list[FailEvent]:
    return []


@pytest.fixture
def local(store_url: str, events: list[FailEvent]) -> InProcessAuthleteApi:
    middleware = BackchannelFailMiddleware(
        None,  # type: ignore[arg-type]
        store=store_from_url(store_url),
        verifier=StaticTokenVerifier(GRANTS),
        observers=[events.append],
    )
    return InProcessAuthleteApi(middleware, SERVICE)


def over_http(server: LiveServer) -> AuthleteApiImpl:
    settings = {
        "baseUrl": server.url,
        "serviceApiKey": SERVICE,
        "apiVersion": "V3",
        "serviceAccessToken": SERVICE_TOKEN,
    }
    return AuthleteApiImpl(AuthleteConfiguration(settings))


def request(ticket: str | None = None, reason: Any = None, **fields: str) -> BackchannelAuthenticationFailRequest:
    dto = BackchannelAuthenticationFailRequest()
    dto.ticket = ticket
    dto.reason = reason
    for name, value in fields.items():
        setattr(dto, name, value)
    return dto


def test_it_is_an_authlete_api(local: InProcessAuthleteApi) -> None:
    assert isinstance(local, AuthleteApi)
    settings = local.getSettings()
    assert settings is local.getSettings()
    assert type(settings).__name__ == "Settings"


@pytest.mark.parametrize(
    "reason", [None, *BackchannelAuthenticationFailReason], ids=lambda r: getattr(r, "name", "none")
)
def test_every_reason_answers_as_over_http(
    local: InProcessAuthleteApi, server: LiveServer, store_url: str, reason: Any
) -> None:
    store = store_from_url(store_url)
    mine, theirs = store.issue(SERVICE), store.issue(SERVICE)
    got = local.backchannelAuthenticationFail(request(mine, reason))
    expected = over_http(server).backchannelAuthenticationFail(request(theirs, reason))
    assert isinstance(got, BackchannelAuthenticationFailResponse)
    assert got.to_json() == expected.to_json()
    assert got.action == expected.action
    assert not store.exists(SERVICE, mine)
    assert not store.exists(SERVICE, theirs)


def test_description_and_uri_answer_as_over_http(local: InProcessAuthleteApi, server: LiveServer) -> None:
    fields = {"errorDescription": "The resource is unknown.", "errorUri": "https://as.example.com/errors/x"}
    dto = request(None, BackchannelAuthenticationFailReason.INVALID_TARGET, **fields)
    assert (
        local.backchannelAuthenticationFail(dto).to_json()
        == over_http(server).backchannelAuthenticationFail(dto).to_json()
    )


def test_the_call_is_audited_as_in_process(
    local: InProcessAuthleteApi, events: list[FailEvent], store_url: str
) -> None:
    ticket = store_from_url(store_url).issue(SERVICE)
    local.backchannelAuthenticationFail(request(ticket, BackchannelAuthenticationFailReason.ACCESS_DENIED))
    (event,) = events
    assert (event.via, event.service_id, event.deleted) == ("in_process", SERVICE, True)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"errorDescription": "caf\u00e9"}, "A185202"),
        ({"errorDescription": ""}, "A185202"),
        ({"errorUri": "%zz"}, "A185202"),
        ({"reason": "NOPE"}, "A185202"),
    ],
)
def test_a_bad_field_raises_as_over_http(
    local: InProcessAuthleteApi, server: LiveServer, fields: dict[str, str], code: str
) -> None:
    reason = fields.pop("reason", "ACCESS_DENIED")
    with pytest.raises(AuthleteApiException) as mine:
        local.backchannelAuthenticationFail(request(None, reason, **fields))
    with pytest.raises(AuthleteApiException) as theirs:
        over_http(server).backchannelAuthenticationFail(request(None, reason, **fields))
    assert mine.value.message == theirs.value.message
    assert mine.value.message.startswith(f"[{code}] ")
    assert mine.value.response.status_code == theirs.value.response.status_code == 400
    assert mine.value.response.json() == theirs.value.response.json()
    assert mine.value.response.headers["Content-Type"] == theirs.value.response.headers["Content-Type"]
    assert isinstance(mine.value.cause, ValueError)


def test_a_failing_store_raises_500_as_over_http(
    local: InProcessAuthleteApi, server: LiveServer, store_url: str
) -> None:
    ticket = store_from_url(store_url).issue(SERVICE)
    path = Path(store_url.removeprefix("sqlite:///").partition("?")[0])
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # timeout=0: the store fails at once
    try:
        with pytest.raises(AuthleteApiException) as mine:
            local.backchannelAuthenticationFail(request(ticket, BackchannelAuthenticationFailReason.ACCESS_DENIED))
        with pytest.raises(AuthleteApiException) as theirs:
            over_http(server).backchannelAuthenticationFail(
                request(ticket, BackchannelAuthenticationFailReason.ACCESS_DENIED)
            )
    finally:
        lock.close()
    assert mine.value.message == theirs.value.message
    assert mine.value.message.startswith("[A185101] ")
    assert mine.value.response.status_code == theirs.value.response.status_code == 500
    assert mine.value.response.json() == theirs.value.response.json()
    assert json.loads(mine.value.requestBody)["ticket"] == ticket


def test_other_apis_are_not_served(local: InProcessAuthleteApi) -> None:
    # The CIBA family's methods are served once clients are configured (tests/ciba/).
    with pytest.raises(AuthleteApiException, match="the CIBA family is not configured"):
        local.backchannelAuthentication(BackchannelAuthenticationRequest())
    with pytest.raises(AuthleteApiException, match="authorization is not served"):
        local.authorization(None)


def test_a_fail_api_works_as_well_as_the_middleware(store_url: str) -> None:
    api = FailApi(store=store_from_url(store_url), verifier=StaticTokenVerifier(GRANTS), prefix="/authlete")
    local = InProcessAuthleteApi(api, SERVICE)
    response = local.backchannelAuthenticationFail(request(None, BackchannelAuthenticationFailReason.UNKNOWN_USER_ID))
    assert response.resultCode == "A185001"
    with pytest.raises(AuthleteApiException) as info:
        local.backchannelAuthenticationFail(request(None, "ACCESS_DENIED", errorDescription='"'))
    assert info.value.url == f"in-process:/authlete/api/{SERVICE}/backchannel/authentication/fail"


@pytest.mark.parametrize("service", ["", None, 5])
def test_a_service_id_is_required(store_url: str, service: Any) -> None:
    api = FailApi(store=store_from_url(store_url), verifier=StaticTokenVerifier(GRANTS))
    with pytest.raises(ValueError, match="service_id must be a non-empty string"):
        InProcessAuthleteApi(api, service)
