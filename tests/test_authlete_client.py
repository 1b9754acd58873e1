"""The PyPI package authlete 1.3.0 as the client, over HTTP, by changing only its base URL:
against the WSGI, ASGI and Django adapters."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from authlete.api.authlete_api_exception import AuthleteApiException
from authlete.api.authlete_api_impl import AuthleteApiImpl
from authlete.conf.authlete_configuration import AuthleteConfiguration
from authlete.dto.backchannel_authentication_fail_action import BackchannelAuthenticationFailAction
from authlete.dto.backchannel_authentication_fail_reason import BackchannelAuthenticationFailReason
from authlete.dto.backchannel_authentication_fail_request import BackchannelAuthenticationFailRequest
from conftest import API_SECRET, GRANTS, OTHER_TOKEN, SERVICE, SERVICE_TOKEN, LiveServer

from ciba_middleware import Reason
from ciba_middleware.stores import store_from_url


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('authlete') / 'tickets.sqlite3'}"


@pytest.fixture(scope="module", params=["wsgi-gunicorn", "asgi-uvicorn", "django-gunicorn"])
def server(request: pytest.FixtureRequest, store_url: str) -> Iterator[LiveServer]:
    """The fail API under /authlete, through each adapter."""
    env = {"CIBA_STORE_URL": store_url, "CIBA_TOKENS": json.dumps(GRANTS), "CIBA_PATH_PREFIX": "/authlete"}
    if request.param == "asgi-uvicorn":
        live = LiveServer("ciba_middleware.asgi:application", env, server="uvicorn")
    elif request.param == "django-gunicorn":
        # The project's settings name the prefix; the rest comes from the environment.
        env["CIBA_TEST_DJANGO_SETTINGS"] = json.dumps(
            {"PATH_PREFIX": env.pop("CIBA_PATH_PREFIX"), "SERVICE_ID": SERVICE}
        )
        live = LiveServer("djangoproject.wsgi:application", env)
    else:
        live = LiveServer("ciba_middleware.wsgi:application", env)
    yield live
    live.stop()


def api(server: LiveServer, version: str, **overrides: str) -> AuthleteApiImpl:
    settings = {
        "baseUrl": server.url + "/authlete",
        "serviceApiKey": SERVICE,
        "apiVersion": version,
    }
    if version == "V3":
        settings["serviceAccessToken"] = SERVICE_TOKEN
    else:
        settings["serviceApiSecret"] = API_SECRET
    settings.update(overrides)
    return AuthleteApiImpl(AuthleteConfiguration(settings))


@pytest.mark.parametrize("version", ["V3", "V2"])
@pytest.mark.parametrize("reason", list(BackchannelAuthenticationFailReason), ids=lambda r: r.name)
def test_every_reason(
    server: LiveServer, store_url: str, version: str, reason: BackchannelAuthenticationFailReason
) -> None:
    store = store_from_url(store_url)
    ticket = store.issue(SERVICE)
    request = BackchannelAuthenticationFailRequest()
    request.ticket = ticket
    request.reason = reason
    response = api(server, version).backchannelAuthenticationFail(request)

    ours = Reason(reason.name)
    assert response.resultCode == "A185001"
    assert response.action == BackchannelAuthenticationFailAction[ours.action.value]
    assert json.loads(response.responseContent) == {"error": ours.error}
    assert not store.exists(SERVICE, ticket)


@pytest.mark.parametrize("version", ["V3", "V2"])
def test_description_and_uri(server: LiveServer, version: str) -> None:
    request = BackchannelAuthenticationFailRequest()
    request.reason = BackchannelAuthenticationFailReason.INVALID_TARGET
    request.errorDescription = "The resource is unknown."
    request.errorUri = "https://as.example.com/errors/invalid_target"
    response = api(server, version).backchannelAuthenticationFail(request)
    assert response.action == BackchannelAuthenticationFailAction.BAD_REQUEST
    assert response.responseContent == (
        '{"error":"invalid_target","error_description":"The resource is unknown.",'
        '"error_uri":"https://as.example.com/errors/invalid_target"}'
    )


def test_a_request_with_nothing_set_is_server_error(server: LiveServer) -> None:
    response = api(server, "V3").backchannelAuthenticationFail(BackchannelAuthenticationFailRequest())
    assert response.action == BackchannelAuthenticationFailAction.INTERNAL_SERVER_ERROR


@pytest.mark.parametrize(
    ("version", "overrides", "status", "message"),
    [
        pytest.param("V3", {"serviceAccessToken": "wrong"}, 401, "the access token is not valid.", id="v3-bad-token"),
        pytest.param("V3", {"serviceAccessToken": OTHER_TOKEN}, 403, "do not cover the service", id="v3-other-token"),
        pytest.param("V2", {"serviceApiSecret": "wrong"}, 401, "the API key and secret are not valid.", id="v2-bad"),
    ],
)
def test_errors_reach_the_client_as_authlete_errors(
    server: LiveServer, version: str, overrides: dict[str, str], status: int, message: str
) -> None:
    request = BackchannelAuthenticationFailRequest()
    request.reason = BackchannelAuthenticationFailReason.ACCESS_DENIED
    with pytest.raises(AuthleteApiException) as info:
        api(server, version, **overrides).backchannelAuthenticationFail(request)
    assert info.value.response.status_code == status
    assert message in info.value.message
