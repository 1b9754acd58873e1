"""docs/openapi.yaml's CIBA family against real answers: every documented status of every
family route (v3 and v2) is produced by the middleware, and its body, headers and request
match the document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import API_SECRET, OTHER_TOKEN, SERVICE, SERVICE_TOKEN, basic, bearer
from test_docs import DOCS, check_headers, errors_of, load_yaml, resolve
from werkzeug.test import Client

from ciba_middleware import Principal, PrincipalKind
from ciba_middleware.ciba.answers import ENDPOINTS
from ciba_middleware.config import Settings
from ciba_middleware.core import FailApi
from ciba_middleware.middleware import BackchannelFailMiddleware
from ciba_middleware.response import not_found_app

from ._family import GRANT, POLL, SECRET, family_env, form, signing_key

SPEC = load_yaml(DOCS / "openapi.yaml")
FAMILY_PATHS = {
    path: item for path, item in SPEC["paths"].items() if not path.endswith("/backchannel/authentication/fail")
}
DOCUMENTED = sorted(
    (path, method, status)
    for path, item in FAMILY_PATHS.items()
    for method, operation in item.items()
    if method != "parameters"
    for status in operation["responses"]
)


class BrokenVerifier:
    """A bug on bearer tokens (the last-resort 500), and API keys covering another service (403 on v2)."""

    def verify_bearer(self, token: str) -> Principal | None:
        raise RuntimeError("a bug in the verifier")

    def verify_api_key(self, api_key: str, api_secret: str) -> Principal | None:
        return Principal(PrincipalKind.API_KEY, "elsewhere", frozenset({"elsewhere"}))


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Client]]:
    tmp = tmp_path_factory.mktemp("openapi")
    env = family_env(tmp, signing_key(tmp)[0], CIBA_AUDIT_LOG="off")
    main = Settings.from_mapping(env).build_middleware(not_found_app, announce=False)
    other = Settings.from_mapping(env).build_middleware(not_found_app, announce=False)
    broken = BackchannelFailMiddleware.around(
        not_found_app, FailApi(store=other.store, verifier=BrokenVerifier(), family=other.api.family)
    )
    yield Client(main), Client(broken)
    main.store.close()
    other.store.close()


def endpoint_of(path: str) -> str:
    name = path.removeprefix("/api/{serviceId}/").removeprefix("/api/")
    assert name in ENDPOINTS
    return name


def valid_body(client: Client, name: str, headers: dict[str, str]) -> dict[str, Any]:
    if name == "backchannel/authentication":
        return {"parameters": form(scope="openid", login_hint="alice"), "clientId": POLL, "clientSecret": SECRET}
    if name == "backchannel/authentication/issue":
        return {"ticket": "A" * 43}
    if name == "backchannel/authentication/complete":
        auth = valid_body(client, "backchannel/authentication", headers)
        path = f"/api/{SERVICE}/backchannel/authentication"
        ticket = client.post(path, json=auth, headers=bearer(SERVICE_TOKEN)).get_json()["ticket"]
        client.post(
            f"/api/{SERVICE}/backchannel/authentication/issue", json={"ticket": ticket}, headers=bearer(SERVICE_TOKEN)
        )
        return {"ticket": ticket, "result": "ACCESS_DENIED"}
    if name == "auth/token":
        return {"parameters": form(grant_type=GRANT, auth_req_id="unknown"), "clientId": POLL, "clientSecret": SECRET}
    return {"token": "unknown"}


@pytest.mark.parametrize(("template", "method", "status"), DOCUMENTED, ids=lambda v: str(v))
def test_documented_answer(clients: tuple[Client, Client], template: str, method: str, status: str) -> None:
    main, broken = clients
    v3 = template.startswith("/api/{serviceId}/")
    path = template.replace("{serviceId}", SERVICE)
    name = endpoint_of(template)
    good = bearer(SERVICE_TOKEN) if v3 else basic(SERVICE, API_SECRET)
    client, headers, body, content_type = main, good, None, "application/json"
    if status == "200":
        body = json.dumps(valid_body(main, name, good)) if method == "post" else None
    elif status == "400":
        body = "{"
    elif status == "401":
        headers = {}
    elif status == "403":
        client, headers = (main, bearer(OTHER_TOKEN)) if v3 else (broken, basic(SERVICE, "any"))
    elif status == "413":
        body = "x" * 20000
    elif status == "415":
        body, content_type = "x", "text/plain"
    elif status == "500":
        client, headers = broken, bearer(SERVICE_TOKEN)
        body = json.dumps(valid_body(main, name, good)) if method == "post" else None
    if body is not None:
        headers = {**headers, "Content-Type": content_type}
    response = client.open(path, method=method.upper(), headers=headers, data=body)
    assert str(response.status_code) == status, response.get_data(as_text=True)
    operation = FAMILY_PATHS[template][method]
    documented = resolve(SPEC, operation["responses"][status])
    check_headers(SPEC, documented, response)  # type: ignore[arg-type]
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    schema = documented["content"]["application/json"]["schema"]
    answer = response.get_json()
    assert errors_of(SPEC, schema, answer) == []
    if status == "200" and method == "post" and body is not None and "requestBody" in operation:
        request_schema = resolve(SPEC, operation["requestBody"])["content"]["application/json"]["schema"]
        assert errors_of(SPEC, request_schema, json.loads(body)) == []


def test_every_family_route_is_documented_for_both_versions() -> None:
    for name in ENDPOINTS:
        assert f"/api/{{serviceId}}/{name}" in FAMILY_PATHS
        assert f"/api/{name}" in FAMILY_PATHS


def test_requests_of_authlete_python_match_the_documented_request_schemas(tmp_path: Path) -> None:
    """The bodies authlete-python 1.3.0 sends (every field, nulls included) are documented."""
    from authlete.dto.backchannel_authentication_complete_request import BackchannelAuthenticationCompleteRequest
    from authlete.dto.backchannel_authentication_complete_result import BackchannelAuthenticationCompleteResult
    from authlete.dto.backchannel_authentication_issue_request import BackchannelAuthenticationIssueRequest
    from authlete.dto.backchannel_authentication_request import BackchannelAuthenticationRequest
    from authlete.dto.introspection_request import IntrospectionRequest
    from authlete.dto.token_request import TokenRequest

    complete = BackchannelAuthenticationCompleteRequest()
    complete.ticket, complete.result = "t", BackchannelAuthenticationCompleteResult.AUTHORIZED
    issue = BackchannelAuthenticationIssueRequest()
    issue.ticket = "t"
    auth, token = BackchannelAuthenticationRequest(), TokenRequest()
    auth.parameters = token.parameters = "scope=openid"
    introspection = IntrospectionRequest()
    introspection.token = "x"
    for name, dto in (
        ("backchannel/authentication", auth),
        ("backchannel/authentication/issue", issue),
        ("backchannel/authentication/complete", complete),
        ("auth/token", token),
        ("auth/introspection", introspection),
    ):
        operation = FAMILY_PATHS[f"/api/{{serviceId}}/{name}"]["post"]
        schema = resolve(SPEC, operation["requestBody"])["content"]["application/json"]["schema"]
        assert errors_of(SPEC, schema, json.loads(dto.to_json())) == [], name
