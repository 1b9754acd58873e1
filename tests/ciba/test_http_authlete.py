"""The CIBA family over HTTP, driven by authlete-python 1.3.0 unchanged (only its base URL),
under gunicorn with two workers on the default SQLite store: the sequence of
authlete-java-jaxrs's handlers, then each way a request can end."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from authlete.api.authlete_api_exception import AuthleteApiException
from authlete.api.authlete_api_impl import AuthleteApiImpl
from authlete.conf.authlete_configuration import AuthleteConfiguration
from authlete.dto.backchannel_authentication_action import BackchannelAuthenticationAction
from authlete.dto.backchannel_authentication_complete_action import BackchannelAuthenticationCompleteAction
from authlete.dto.backchannel_authentication_complete_request import BackchannelAuthenticationCompleteRequest
from authlete.dto.backchannel_authentication_complete_result import BackchannelAuthenticationCompleteResult
from authlete.dto.backchannel_authentication_fail_reason import BackchannelAuthenticationFailReason
from authlete.dto.backchannel_authentication_fail_request import BackchannelAuthenticationFailRequest
from authlete.dto.backchannel_authentication_issue_action import BackchannelAuthenticationIssueAction
from authlete.dto.backchannel_authentication_issue_request import BackchannelAuthenticationIssueRequest
from authlete.dto.backchannel_authentication_request import BackchannelAuthenticationRequest
from authlete.dto.introspection_action import IntrospectionAction
from authlete.dto.introspection_request import IntrospectionRequest
from authlete.dto.token_action import TokenAction
from authlete.dto.token_request import TokenRequest
from authlete.types.delivery_mode import DeliveryMode
from authlete.types.grant_type import GrantType
from authlete.types.user_identification_hint_type import UserIdentificationHintType
from conftest import API_SECRET, SERVICE, SERVICE_TOKEN, LiveServer
from joserfc import jwt
from joserfc.jwk import import_key

from ciba_middleware.ciba.clients import client_number

from ._family import GRANT, ISSUER, NOTIFY, OTHER, PING, POLL, PUSH, SECRET, family_env, form, signing_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return signing_key(tmp_path_factory.mktemp("key"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, key: tuple[Path, dict[str, Any]]) -> Iterator[LiveServer]:
    env = family_env(tmp_path_factory.mktemp("family"), key[0], CIBA_PATH_PREFIX="/authlete")
    live = LiveServer("ciba_middleware.wsgi:application", env, workers=2)
    yield live
    live.stop()


def api(server: LiveServer, version: str = "V3") -> AuthleteApiImpl:
    settings = {"baseUrl": server.url + "/authlete", "serviceApiKey": SERVICE, "apiVersion": version}
    if version == "V3":
        settings["serviceAccessToken"] = SERVICE_TOKEN
    else:
        settings["serviceApiSecret"] = API_SECRET
    return AuthleteApiImpl(AuthleteConfiguration(settings))


def authenticate(client: AuthleteApiImpl, client_id: str = POLL, secret: str = SECRET, **params: str) -> Any:
    request = BackchannelAuthenticationRequest()
    request.parameters = form(**{"scope": "openid", "login_hint": "alice", **params})
    request.clientId = client_id
    request.clientSecret = secret
    return client.backchannelAuthentication(request)


def issue(client: AuthleteApiImpl, ticket: str) -> Any:
    request = BackchannelAuthenticationIssueRequest()
    request.ticket = ticket
    return client.backchannelAuthenticationIssue(request)


def started(client: AuthleteApiImpl, client_id: str = POLL, **params: str) -> tuple[str, str]:
    """A request authenticated and issued: its ticket and auth_req_id."""
    response = authenticate(client, client_id, **params)
    assert response.action is BackchannelAuthenticationAction.USER_IDENTIFICATION, response.responseContent
    issued = issue(client, response.ticket)
    assert issued.action is BackchannelAuthenticationIssueAction.OK
    return response.ticket, issued.authReqId


def token(client: AuthleteApiImpl, auth_req_id: str, client_id: str = POLL, secret: str = SECRET) -> Any:
    request = TokenRequest()
    request.parameters = form(grant_type=GRANT, auth_req_id=auth_req_id)
    request.clientId = client_id
    request.clientSecret = secret
    return client.token(request)


def complete(client: AuthleteApiImpl, ticket: str, result: str, **fields: Any) -> Any:
    request = BackchannelAuthenticationCompleteRequest()
    request.ticket = ticket
    request.result = BackchannelAuthenticationCompleteResult[result]
    for name, value in fields.items():
        setattr(request, name, value)
    return client.backchannelAuthenticationComplete(request)


def error_of(response: Any) -> str:
    error: str = json.loads(response.responseContent)["error"]
    return error


def verified(id_token: str, jwk: dict[str, Any]) -> dict[str, Any]:
    """The ID token's claims, checked against the configured key's public half."""
    public = {k: v for k, v in jwk.items() if k != "d"}
    claims: dict[str, Any] = jwt.decode(id_token, import_key(public), algorithms=["ES256"]).claims
    return claims


@pytest.mark.parametrize("version", ["V3", "V2"])
def test_the_sequence_of_the_java_handlers(server: LiveServer, key: tuple[Path, dict[str, Any]], version: str) -> None:
    client = api(server, version)
    # 1. The client's backchannel authentication request.
    response = authenticate(client, binding_message="W4SCT", acr_values="urn:acr:1", requested_expiry="120")
    assert response.resultCode == "A179001"
    assert response.action is BackchannelAuthenticationAction.USER_IDENTIFICATION
    assert response.clientId == client_number(SERVICE, POLL)[0]
    assert (response.clientIdAlias, response.clientIdAliasUsed, response.clientName) == (POLL, True, "Poller")
    assert response.deliveryMode is DeliveryMode.POLL
    assert [scope.name for scope in response.scopes] == ["openid"]
    assert (response.hintType, response.hint) == (UserIdentificationHintType.LOGIN_HINT, "alice")
    assert (response.bindingMessage, response.acrs, response.requestedExpiry) == ("W4SCT", ["urn:acr:1"], 120)
    assert len(response.ticket) >= 43
    # 3. The server issues the auth_req_id.
    issued = issue(client, response.ticket)
    assert issued.action is BackchannelAuthenticationIssueAction.OK
    assert (issued.expiresIn, issued.interval) == (120, 5)
    assert json.loads(issued.responseContent) == {"auth_req_id": issued.authReqId, "expires_in": 120, "interval": 5}
    assert len(issued.authReqId) >= 43  # 256 bits, URL-safe base64
    # 5. The client polls: pending, then too soon (the two workers share the store).
    pending = token(client, issued.authReqId)
    assert (pending.action, error_of(pending)) == (TokenAction.BAD_REQUEST, "authorization_pending")
    assert error_of(token(client, issued.authReqId)) == "slow_down"
    # 4. The user authorizes.
    done = complete(client, response.ticket, "AUTHORIZED", subject="alice", acr="urn:acr:1", authTime=1_700_000_000)
    assert done.action is BackchannelAuthenticationCompleteAction.NO_ACTION
    assert done.authReqId == issued.authReqId
    # 5. The token response, once.
    granted = token(client, issued.authReqId)
    assert granted.action is TokenAction.OK, granted.responseContent
    content = json.loads(granted.responseContent)
    assert content["token_type"] == "Bearer"
    assert content["expires_in"] == 3600 == granted.accessTokenDuration
    assert content["access_token"] == granted.accessToken
    assert (granted.grantType, granted.subject, granted.scopes) == (GrantType.CIBA, "alice", ["openid"])
    claims = verified(content["id_token"], key[1])
    assert (claims["iss"], claims["sub"], claims["aud"], claims["auth_time"]) == (ISSUER, "alice", POLL, 1_700_000_000)
    assert claims["acr"] == "urn:acr:1"
    assert claims["exp"] - claims["iat"] == 3600
    assert "at_hash" in claims
    assert error_of(token(client, issued.authReqId)) == "invalid_grant"  # replay
    # 6. The resource server introspects the access token.
    request = IntrospectionRequest()
    request.token = granted.accessToken
    introspected = client.introspection(request)
    assert introspected.action is IntrospectionAction.OK
    assert (introspected.usable, introspected.subject, introspected.scopes) == (True, "alice", ["openid"])
    assert introspected.clientId == client_number(SERVICE, POLL)[0]
    assert introspected.expiresAt > time.time() * 1000


def test_denial(server: LiveServer) -> None:
    client = api(server)
    ticket, auth_req_id = started(client)
    done = complete(client, ticket, "ACCESS_DENIED", errorDescription="the user said no")
    assert done.action is BackchannelAuthenticationCompleteAction.NO_ACTION
    denied = token(client, auth_req_id)
    assert json.loads(denied.responseContent) == {"error": "access_denied", "error_description": "the user said no"}


def test_transaction_failed_gives_expired_token(server: LiveServer) -> None:
    client = api(server)
    ticket, auth_req_id = started(client)
    complete(client, ticket, "TRANSACTION_FAILED")
    assert error_of(token(client, auth_req_id)) == "expired_token"


def test_expiry_by_requested_expiry(server: LiveServer) -> None:
    client = api(server)
    ticket, auth_req_id = started(client, requested_expiry="1")
    time.sleep(1.2)
    assert error_of(token(client, auth_req_id)) == "expired_token"
    with pytest.raises(AuthleteApiException) as raised:
        complete(client, ticket, "AUTHORIZED", subject="alice")
    assert raised.value.response.status_code == 400
    assert json.loads(raised.value.response.text)["resultCode"] == "A187205"


def test_another_clients_auth_req_id(server: LiveServer) -> None:
    client = api(server)
    ticket, auth_req_id = started(client)
    complete(client, ticket, "AUTHORIZED", subject="alice")
    assert error_of(token(client, auth_req_id, client_id=OTHER)) == "invalid_grant"
    assert token(client, auth_req_id).action is TokenAction.OK  # still the right client's, once


def test_wrong_client_secret(server: LiveServer) -> None:
    client = api(server)
    refused = authenticate(client, secret="not-the-secret")
    assert refused.action is BackchannelAuthenticationAction.UNAUTHORIZED
    assert error_of(refused) == "invalid_client"
    _, auth_req_id = started(client)
    bad = token(client, auth_req_id, secret="not-the-secret")
    assert (bad.action, error_of(bad)) == (TokenAction.INVALID_CLIENT, "invalid_client")


def test_missing_openid(server: LiveServer) -> None:
    refused = authenticate(api(server), scope="profile")
    assert refused.action is BackchannelAuthenticationAction.BAD_REQUEST
    assert error_of(refused) == "invalid_scope"


def test_two_hints(server: LiveServer) -> None:
    refused = authenticate(api(server), login_hint_token="eyJ.x.y")
    assert (refused.action, error_of(refused)) == (BackchannelAuthenticationAction.BAD_REQUEST, "invalid_request")


def test_a_failed_ticket_cannot_be_issued(server: LiveServer) -> None:
    client = api(server)
    response = authenticate(client)
    fail = BackchannelAuthenticationFailRequest()
    fail.ticket = response.ticket
    fail.reason = BackchannelAuthenticationFailReason.UNKNOWN_USER_ID
    assert client.backchannelAuthenticationFail(fail).resultCode == "A185001"
    assert issue(client, response.ticket).action is BackchannelAuthenticationIssueAction.INVALID_TICKET


def test_ping_client(server: LiveServer) -> None:
    client = api(server)
    ticket, auth_req_id = started(client, PING, client_notification_token="ping-token-1")
    done = complete(client, ticket, "AUTHORIZED", subject="bob")
    assert done.action is BackchannelAuthenticationCompleteAction.NOTIFICATION
    assert (done.clientId, done.clientIdAliasUsed, done.deliveryMode) == (int(PING), False, DeliveryMode.PING)
    assert (done.clientNotificationEndpoint, done.clientNotificationToken) == (NOTIFY, "ping-token-1")
    assert json.loads(done.responseContent) == {"auth_req_id": auth_req_id}
    assert token(client, auth_req_id, client_id=PING).action is TokenAction.OK


def test_push_client(server: LiveServer, key: tuple[Path, dict[str, Any]]) -> None:
    client = api(server)
    ticket, auth_req_id = started(client, PUSH, client_notification_token="push-token-1")
    done = complete(client, ticket, "AUTHORIZED", subject="carol")
    assert done.action is BackchannelAuthenticationCompleteAction.NOTIFICATION
    assert (done.clientNotificationEndpoint, done.clientNotificationToken) == (NOTIFY, "push-token-1")
    content = json.loads(done.responseContent)
    assert content["auth_req_id"] == auth_req_id
    assert content["access_token"] == done.accessToken
    claims = verified(content["id_token"], key[1])
    assert claims["urn:openid:params:jwt:claim:auth_req_id"] == auth_req_id
    assert claims["sub"] == "carol"
    # Push clients never use the token endpoint.
    assert error_of(token(client, auth_req_id, client_id=PUSH)) == "invalid_grant"
    ticket, auth_req_id = started(client, PUSH, client_notification_token="push-token-2")
    denied = complete(client, ticket, "ACCESS_DENIED")
    assert json.loads(denied.responseContent) == {"auth_req_id": auth_req_id, "error": "access_denied"}


def test_jwks_and_configuration(server: LiveServer, key: tuple[Path, dict[str, Any]]) -> None:
    client = api(server)
    jwks = json.loads(client.getServiceJwks())
    public = {k: v for k, v in key[1].items() if k != "d"}
    assert [{k: v for k, v in found.items() if k in public} for found in jwks["keys"]] == [public]
    assert jwks["keys"][0]["alg"] == "ES256"
    configuration = json.loads(client.getServiceConfiguration())
    assert configuration["issuer"] == ISSUER
    assert configuration["grant_types_supported"] == [GRANT]
    assert configuration["backchannel_token_delivery_modes_supported"] == ["poll", "ping", "push"]
    answer = requests.get(f"{server.url}/authlete/api/{SERVICE}/service/configuration", timeout=5)
    assert answer.status_code == 401  # the same callers as the fail API
