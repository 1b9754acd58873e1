"""Our answers validate against Authlete's own OpenAPI description of the fail API.

tests/data/authlete-fail-api.openapi.yaml is the extract from Authlete's public OpenAPI
description (Apache 2.0) that the contract cites, copied so the test needs nothing outside
the repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import webtest
import yaml
from conftest import API_SECRET, GRANTS, SERVICE, SERVICE_TOKEN, basic
from openapi_schema_validator import OAS30Validator

from ciba_middleware import BackchannelFailMiddleware, StaticTokenVerifier
from ciba_middleware.stores import store_from_url

SPEC = yaml.safe_load((Path(__file__).parent / "data" / "authlete-fail-api.openapi.yaml").read_text())
OPERATION = SPEC["paths"]["/api/{serviceId}/backchannel/authentication/fail"]["post"]
V3 = f"/api/{SERVICE}/backchannel/authentication/fail"
V2 = "/api/backchannel/authentication/fail"


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def schema_for(status: int) -> dict[str, Any]:
    """Authlete's schema for a status; statuses it does not list get its generic ``result``."""
    responses = OPERATION["responses"]
    if str(status) not in responses:
        return SPEC["components"]["schemas"]["result"]  # type: ignore[no-any-return]
    content = resolve(responses[str(status)])["content"]["application/json"]
    return resolve(content["schema"])


def validate(status: int, body: dict[str, Any]) -> None:
    schema = schema_for(status)
    OAS30Validator(schema).validate(body)
    # Nothing beyond what Authlete's schemas name, whatever the status.
    names = set(SPEC["components"]["schemas"]["backchannel_authentication_fail_response"]["properties"])
    assert set(body) <= names


def basic_own() -> dict[str, str]:
    return basic(SERVICE, API_SECRET)


CASES = [
    pytest.param("POST", V3, {"reason": "ACCESS_DENIED"}, {}, 200, id="200-v3"),
    pytest.param("POST", V2, {"reason": "UNKNOWN_USER_ID", "errorDescription": "x", "errorUri": "/e"}, basic_own(), 200,
                 id="200-v2"),
    pytest.param("POST", V3, {"reason": "NOPE"}, {}, 400, id="400"),
    pytest.param("POST", V3, {"reason": "ACCESS_DENIED"}, {"Authorization": "Bearer nope"}, 401, id="401"),
    pytest.param("POST", "/api/42/backchannel/authentication/fail", {}, {}, 403, id="403"),
    pytest.param("GET", V3, None, {}, 405, id="405"),
    pytest.param("POST", V3, {"errorDescription": "x" * 20000}, {}, 413, id="413"),
    pytest.param("POST", V3, "text", {"Content-Type": "text/plain"}, 415, id="415"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), CASES)
def test_answers_validate(method: str, path: str, body: Any, headers: dict[str, str], status: int) -> None:
    middleware = BackchannelFailMiddleware(
        lambda e, s: [], store=store_from_url("memory://"), verifier=StaticTokenVerifier(GRANTS)
    )
    app = webtest.TestApp(middleware)
    all_headers = {"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json", **headers}
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode() if body is not None else b""
    response = app.request(path, method=method, headers=all_headers, body=raw, expect_errors=True)
    assert response.status_int == status
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    validate(status, response.json)


def test_500_validates(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    store = store_from_url(f"sqlite:///{path}")
    store.close()
    path.unlink()
    path.mkdir()
    middleware = BackchannelFailMiddleware(lambda e, s: [], store=store, verifier=StaticTokenVerifier(GRANTS))
    response = webtest.TestApp(middleware).post_json(
        V3, {"ticket": "t" * 43}, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, expect_errors=True
    )
    assert response.status_int == 500
    validate(500, response.json)


def test_the_action_enum_is_authletes() -> None:
    from ciba_middleware import Action, Reason

    response_schema = SPEC["components"]["schemas"]["backchannel_authentication_fail_response"]
    request_schema = SPEC["components"]["schemas"]["backchannel_authentication_fail_request"]
    assert [a.value for a in Action] == response_schema["properties"]["action"]["enum"]
    assert [r.value for r in Reason] == request_schema["properties"]["reason"]["enum"]
