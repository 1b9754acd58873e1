"""Whatever a caller sends to a family route, the answer is Authlete-shaped JSON: a 200 with an
action, or a 400 with a result code; never a 500 (hypothesis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import SERVICE, SERVICE_TOKEN, bearer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from ciba_middleware.config import Settings
from ciba_middleware.middleware import BackchannelFailMiddleware
from ciba_middleware.response import not_found_app

from ._family import POLL, SECRET, family_env, signing_key

POSTED = [
    "backchannel/authentication",
    "backchannel/authentication/issue",
    "backchannel/authentication/complete",
    "auth/token",
    "auth/introspection",
]
PARAMETERS = [
    "scope",
    "login_hint",
    "login_hint_token",
    "id_token_hint",
    "client_notification_token",
    "user_code",
    "requested_expiry",
    "binding_message",
    "acr_values",
    "resource",
    "grant_type",
    "auth_req_id",
    "client_id",
    "client_secret",
    "request",
]
FIELDS = [
    "parameters",
    "clientId",
    "clientSecret",
    "ticket",
    "result",
    "subject",
    "authTime",
    "acr",
    "claims",
    "scopes",
    "errorDescription",
    "errorUri",
    "token",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
forms = st.lists(st.tuples(st.sampled_from(PARAMETERS), st.text(max_size=30)), max_size=6)


@pytest.fixture(scope="module")
def middleware(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackchannelFailMiddleware]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = family_env(tmp, signing_key(tmp)[0], CIBA_AUDIT_LOG="off", CIBA_STORE_URL="memory://")
    built = Settings.from_mapping(env).build_middleware(not_found_app, announce=False)
    yield built
    built.store.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(POSTED),
    fields=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
    form=forms,
    with_client=st.booleans(),
)
def test_any_body_gets_an_authlete_answer(
    middleware: BackchannelFailMiddleware,
    route: str,
    fields: dict[str, Any],
    form: list[tuple[str, str]],
    with_client: bool,
) -> None:
    from urllib.parse import urlencode

    if form and "parameters" not in fields:
        fields["parameters"] = urlencode(form)
    if with_client:
        fields.update(clientId=POLL, clientSecret=SECRET)
    response = Client(middleware).post(f"/api/{SERVICE}/{route}", json=fields, headers=bearer(SERVICE_TOKEN))
    body = json.loads(response.get_data())
    assert response.status_code in (200, 400), body
    assert body["resultCode"].startswith("A")
    assert "action" in body
    if response.status_code == 200 and isinstance(body.get("responseContent"), str) and route != "auth/introspection":
        json.loads(body["responseContent"])
