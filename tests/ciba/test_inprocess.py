"""InProcessAuthleteApi serves the family in process: the same DTOs as over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from authlete.api.authlete_api_exception import AuthleteApiException
from authlete.dto.backchannel_authentication_complete_action import BackchannelAuthenticationCompleteAction
from authlete.dto.backchannel_authentication_complete_request import BackchannelAuthenticationCompleteRequest
from authlete.dto.backchannel_authentication_complete_result import BackchannelAuthenticationCompleteResult
from authlete.dto.backchannel_authentication_issue_request import BackchannelAuthenticationIssueRequest
from authlete.dto.backchannel_authentication_request import BackchannelAuthenticationRequest
from authlete.dto.introspection_action import IntrospectionAction
from authlete.dto.introspection_request import IntrospectionRequest
from authlete.dto.token_action import TokenAction
from authlete.dto.token_request import TokenRequest
from conftest import SERVICE

from ciba_middleware.authlete import InProcessAuthleteApi
from ciba_middleware.config import Settings
from ciba_middleware.middleware import BackchannelFailMiddleware
from ciba_middleware.response import not_found_app

from ._family import GRANT, ISSUER, POLL, SECRET, family_env, form, signing_key


@pytest.fixture
def middleware(tmp_path: Path) -> Iterator[BackchannelFailMiddleware]:
    env = family_env(tmp_path, signing_key(tmp_path)[0], CIBA_AUDIT_LOG="off")
    built = Settings.from_mapping(env).build_middleware(not_found_app, announce=False)
    yield built
    built.store.close()


def test_the_whole_sequence_in_process(middleware: BackchannelFailMiddleware) -> None:
    api = InProcessAuthleteApi(middleware, SERVICE)
    request = BackchannelAuthenticationRequest()
    request.parameters = form(scope="openid", login_hint="alice")
    request.clientId, request.clientSecret = POLL, SECRET
    ticket = api.backchannelAuthentication(request).ticket
    issue = BackchannelAuthenticationIssueRequest()
    issue.ticket = ticket
    auth_req_id = api.backchannelAuthenticationIssue(issue).authReqId
    complete = BackchannelAuthenticationCompleteRequest()
    complete.ticket, complete.subject = ticket, "alice"
    complete.result = BackchannelAuthenticationCompleteResult.AUTHORIZED
    assert api.backchannelAuthenticationComplete(complete).action is BackchannelAuthenticationCompleteAction.NO_ACTION
    token = TokenRequest()
    token.parameters = form(grant_type=GRANT, auth_req_id=auth_req_id)
    token.clientId, token.clientSecret = POLL, SECRET
    granted = api.token(token)
    assert granted.action is TokenAction.OK
    introspection = IntrospectionRequest()
    introspection.token = granted.accessToken
    assert api.introspection(introspection).action is IntrospectionAction.OK
    assert json.loads(api.getServiceConfiguration())["issuer"] == ISSUER
    assert "keys" in json.loads(api.getServiceJwks())


def test_a_callers_error_raises_as_over_http(middleware: BackchannelFailMiddleware) -> None:
    api = InProcessAuthleteApi(middleware.api, SERVICE)
    with pytest.raises(AuthleteApiException) as raised:
        api.backchannelAuthenticationIssue(BackchannelAuthenticationIssueRequest())
    assert raised.value.response.status_code == 400
    assert raised.value.response.json()["resultCode"] == "A186201"
    assert raised.value.message.startswith("[A186201] /backchannel/authentication/issue, ")
