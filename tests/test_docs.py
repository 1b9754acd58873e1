"""The documentation is true to the code.

- docs/openapi.yaml is valid OpenAPI 3.0, every answer a real gunicorn server gives for
  every status the middleware can answer matches it (status, headers, body), and its
  schemas stay compatible with Authlete's own description of the fail API
  (its extract in tests/data/authlete-fail-api.openapi.yaml, kept in the repository).
- docs/api.md lists every result code with its status; docs/configuration.md every
  ``CIBA_*`` variable the package and the demo read.
- README.md's test command is the one .ci/run runs.
- Every console block of README.md and docs/*.md, run in a shell per page with the servers
  it starts, prints what the page shows, volatile parts masked (below: "every console
  example is real"); the commands it cannot run are named in NOT_RUN, with why.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import difflib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
import yaml
from conftest import (
    API_SECRET,
    ORG_TOKEN,
    OTHER_SERVICE,
    REDIS_URL,
    ROOT,
    SERVICE,
    SERVICE_TOKEN,
    LiveServer,
    ciba_env,
    free_port,
    port_open,
    unreachable,
)
from jsonschema import Draft4Validator
from openapi_spec_validator import validate as validate_spec
from test_framework_docs import edit_django_project

from ciba_middleware import errors, sha256_hex
from ciba_middleware.request import check_fields
from ciba_middleware.stores import new_ticket

DOCS = ROOT / "docs"
AUTHLETE_SPEC = ROOT / "tests" / "data" / "authlete-fail-api.openapi.yaml"

V3 = "/api/{serviceId}/backchannel/authentication/fail"
V2 = "/api/backchannel/authentication/fail"
V3_PATH = f"/api/{SERVICE}/backchannel/authentication/fail"
BEARER = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{SERVICE}:{API_SECRET}".encode()).decode()}
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PREFIX = "/backchannel/authentication/fail, "
SUCCESS = "[A185001] Successfully generated an error response for the backchannel authentication request."


def load_yaml(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_yaml(DOCS / "openapi.yaml")


@pytest.fixture(scope="module")
def authlete_spec() -> dict[str, Any]:
    if not AUTHLETE_SPEC.is_file():
        unreachable(f"Authlete's extract is not at {AUTHLETE_SPEC}")
    return load_yaml(AUTHLETE_SPEC)


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local ``$ref``s until a node without one."""
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema draft 4 for Python's ``re``.

    ``nullable: true`` becomes a type union, and a pattern's final ``$`` becomes ``\\Z``:
    in ECMA-262, which patterns follow, ``$`` is the end of the string, while Python's also
    matches before a final newline.
    """
    if isinstance(node, dict):
        converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
        if node.get("nullable") is True and "type" in node:
            converted["type"] = [node["type"], "null"]
        if isinstance(node.get("pattern"), str) and node["pattern"].endswith("$"):
            converted["pattern"] = node["pattern"][:-1] + "\\Z"
        return converted
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    return node


def errors_of(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    """Where ``instance`` breaks ``schema``, whose ``$ref``s point into ``document``."""
    root = {"components": _json_schema(document.get("components", {})), "allOf": [_json_schema(schema)]}
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft4Validator(root).iter_errors(instance)]


# -- the document itself ------------------------------------------------------------------


def test_openapi_document_is_valid(spec: dict[str, Any]) -> None:
    validate_spec(spec)


def test_security_schemes_are_bearer_or_dpop_on_v3_and_those_or_basic_on_v2(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {
        "bearer": {"type": "http", "scheme": "bearer", "description": schemes["bearer"]["description"]},
        "basic": {"type": "http", "scheme": "basic", "description": schemes["basic"]["description"]},
        "dpop": {"type": "http", "scheme": "dpop", "description": schemes["dpop"]["description"]},
    }
    assert spec["paths"][V3]["post"]["security"] == [{"bearer": []}, {"dpop": []}]
    assert spec["paths"][V2]["post"]["security"] == [{"basic": []}, {"bearer": []}, {"dpop": []}]


def test_documented_examples_match_their_schemas(spec: dict[str, Any]) -> None:
    checked = 0
    for name, response in spec["components"]["responses"].items():
        for media in response.get("content", {}).values():
            if "example" in media:
                assert errors_of(spec, media["schema"], media["example"]) == [], name
                checked += 1
    for name, schema in spec["components"]["schemas"].items():
        if "example" in schema:
            assert errors_of(spec, schema, schema["example"]) == [], name
            checked += 1
    body = spec["components"]["requestBodies"]["FailRequest"]["content"]["application/json"]
    for example in body["examples"].values():
        assert errors_of(spec, body["schema"], example["value"]) == []
        checked += 1
    assert checked >= 10


# -- compatibility with Authlete's description --------------------------------------------


def test_routes_and_request_fields_are_authletes(spec: dict[str, Any], authlete_spec: dict[str, Any]) -> None:
    theirs = authlete_spec["paths"][V3]["post"]
    ours = spec["paths"][V3]["post"]
    assert ours["operationId"] == theirs["operationId"]
    their_request = authlete_spec["components"]["schemas"]["backchannel_authentication_fail_request"]
    for media_type in theirs["requestBody"]["content"]:
        our_request = resolve(spec, resolve(spec, ours["requestBody"])["content"][media_type]["schema"])
        assert set(our_request["properties"]) == set(their_request["properties"]), media_type
        for name, their_field in their_request["properties"].items():
            our_field = our_request["properties"][name]
            assert our_field["type"] == their_field["type"], (media_type, name)
        their_reasons = their_request["properties"]["reason"]["enum"]
        assert [r for r in our_request["properties"]["reason"]["enum"] if r is not None] == their_reasons
    their_bearer = authlete_spec["components"]["securitySchemes"]["bearer"]
    our_bearer = spec["components"]["securitySchemes"]["bearer"]
    assert (our_bearer["type"], our_bearer["scheme"]) == (their_bearer["type"], their_bearer["scheme"])


def _properties(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every property a schema names, through ``$ref`` and ``allOf`` (later parts narrow)."""
    schema = resolve(document, schema)
    found: dict[str, dict[str, Any]] = {}
    for part in schema.get("allOf", []):
        for name, prop in _properties(document, part).items():
            found[name] = {**found.get(name, {}), **prop}
    for name, prop in schema.get("properties", {}).items():
        found[name] = {**found.get(name, {}), **resolve(document, prop)}
    return found


@pytest.mark.parametrize("status", ["200", "400", "401", "403", "500"])
def test_response_schemas_are_compatible_with_authletes(
    spec: dict[str, Any], authlete_spec: dict[str, Any], status: str
) -> None:
    """Each of our bodies is one Authlete's schema accepts: same names, same types, enums within theirs."""
    their_response = resolve(authlete_spec, authlete_spec["paths"][V3]["post"]["responses"][status])
    their_props = _properties(authlete_spec, their_response["content"]["application/json"]["schema"])
    for path in (V3, V2):
        our_response = resolve(spec, spec["paths"][path]["post"]["responses"][status])
        our_props = _properties(spec, our_response["content"]["application/json"]["schema"])
        assert set(their_props) <= set(our_props), (path, status)
        for name, their_prop in their_props.items():
            our_prop = our_props[name]
            assert our_prop["type"] == their_prop["type"], (path, status, name)
            if "enum" in their_prop:
                assert set(our_prop["enum"]) <= set(their_prop["enum"]), (path, status, name)


# -- real answers -------------------------------------------------------------------------


@dataclass
class Case:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | str | None
    status: int
    result_code: str
    message: str
    #: The action and responseContent of a 200.
    action: str = ""
    content: str = ""
    #: "custom": the server whose verifier is buggy (bearer) or narrow (API key).
    server: str = "main"
    #: Hold SQLite's write lock during the call, so the store fails.
    lock_store: bool = False
    #: Send the body with Transfer-Encoding: chunked (no Content-Length).
    chunked: bool = False

    @property
    def template(self) -> str:
        return V2 if self.path == V2 else V3


def ok(path: str, headers: dict[str, str], body: str, action: str, content: str) -> Case:
    return Case("POST", path, headers, body, 200, "A185001", SUCCESS, action, content)


def error(
    method: str, path: str, headers: dict[str, str], body: bytes | str | None, status: int, code: str, detail: str
) -> Case:
    return Case(method, path, headers, body, status, code, f"[{code}] {PREFIX}{detail}")


ALL_REASONS = ", ".join(
    [
        "ACCESS_DENIED",
        "EXPIRED_LOGIN_HINT_TOKEN",
        "INVALID_BINDING_MESSAGE",
        "INVALID_TARGET",
        "INVALID_USER_CODE",
        "MISSING_USER_CODE",
        "SERVER_ERROR",
        "UNAUTHORIZED_CLIENT",
        "UNKNOWN_USER_ID",
    ]
)

CASES = [
    pytest.param(
        ok(V3_PATH, {**BEARER, **JSON}, '{"reason":"ACCESS_DENIED"}', "FORBIDDEN", '{"error":"access_denied"}'),
        id="200-v3-json",
    ),
    pytest.param(
        ok(
            V3_PATH,
            {**BEARER, **JSON},
            '{"ticket":null,"reason":null,"errorDescription":null,"errorUri":null}',
            "INTERNAL_SERVER_ERROR",
            '{"error":"server_error"}',
        ),
        id="200-v3-json-nulls",
    ),
    pytest.param(
        ok(
            V2,
            {**BASIC, **FORM},
            "reason=UNKNOWN_USER_ID&errorDescription=No+user+matches&errorUri=https%3A%2F%2Fas.example%2Fe",
            "BAD_REQUEST",
            '{"error":"unknown_user_id","error_description":"No user matches","error_uri":"https://as.example/e"}',
        ),
        id="200-v2-form",
    ),
    pytest.param(
        ok(
            "/api/1001/backchannel/authentication/fail",
            {"Authorization": f"Bearer {ORG_TOKEN}", **FORM},
            "reason=INVALID_USER_CODE",
            "BAD_REQUEST",
            '{"error":"invalid_user_code"}',
        ),
        id="200-v3-organization-token",
    ),
    pytest.param(
        error(
            "POST",
            V3_PATH,
            {**BEARER, **JSON},
            '{"reason":"NOPE"}',
            400,
            "A185202",
            f"'reason' is \"NOPE\", which is not one of {ALL_REASONS}.",
        ),
        id="400-unknown-reason",
    ),
    pytest.param(
        error(
            "POST",
            V2,
            {**BASIC, **FORM},
            "errorDescription=",
            400,
            "A185202",
            "'errorDescription' must not be empty; omit it or send null.",
        ),
        id="400-empty-description",
    ),
    pytest.param(
        error(
            "POST", V3_PATH, {**BEARER, **JSON}, "[1]", 400, "A185201", "the body must be a JSON object, not an array."
        ),
        id="400-not-an-object",
    ),
    pytest.param(
        error(
            "POST",
            V3_PATH,
            {**BEARER, **FORM},
            "reason=ACCESS_DENIED&reason=UNKNOWN_USER_ID",
            400,
            "A185201",
            "the form has the field 'reason' more than once.",
        ),
        id="400-duplicate-field",
    ),
    pytest.param(
        error("POST", V3_PATH, JSON, "{}", 401, "A001202", "Authorization header is missing."),
        id="401-v3-missing",
    ),
    pytest.param(
        error(
            "POST",
            V3_PATH,
            {"Authorization": "Bearer wrong", **JSON},
            "{}",
            401,
            "A185211",
            "the access token is not valid.",
        ),
        id="401-v3-invalid",
    ),
    pytest.param(
        error(
            "POST",
            V3_PATH,
            {"Authorization": "Bearer a b", **JSON},
            "{}",
            401,
            "A185211",
            "the access token is malformed.",
        ),
        id="401-v3-malformed",
    ),
    pytest.param(
        error(
            "POST",
            V3_PATH,
            {**BASIC, **JSON},
            "{}",
            401,
            "A185211",
            "the Authorization header must use the Bearer or DPoP scheme.",
        ),
        id="401-v3-basic",
    ),
    pytest.param(
        error("POST", V2, JSON, "{}", 401, "A001202", "Authorization header is missing."),
        id="401-v2-missing",
    ),
    pytest.param(
        error(
            "POST",
            V2,
            {"Authorization": "Basic " + base64.b64encode(f"{SERVICE}:wrong".encode()).decode(), **JSON},
            "{}",
            401,
            "A185211",
            "the API key and secret are not valid.",
        ),
        id="401-v2-invalid",
    ),
    pytest.param(
        error(
            "POST",
            V2,
            {"Authorization": "Digest x", **JSON},
            "{}",
            401,
            "A185211",
            "the Authorization header must use the Basic, Bearer or DPoP scheme.",
        ),
        id="401-v2-digest",
    ),
    pytest.param(
        error(
            "POST",
            f"/api/{OTHER_SERVICE}/backchannel/authentication/fail",
            {**BEARER, **JSON},
            "{}",
            403,
            "A185212",
            f"the credentials do not cover the service '{OTHER_SERVICE}'.",
        ),
        id="403-v3-other-service",
    ),
    *(
        pytest.param(
            error(method, path, BEARER, None, 405, "A185213", f"use POST, not '{method}'."),
            id=f"405-{'v3' if path == V3_PATH else 'v2'}-{method}",
        )
        for path in (V3_PATH, V2)
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "HEAD")
    ),
    pytest.param(
        error(
            "POST",
            V3_PATH,
            {**BEARER, **JSON},
            "a" * 20000,
            413,
            "A185204",
            "the body is 20000 bytes; the limit is 16384.",
        ),
        id="413-v3",
    ),
    pytest.param(
        replace(
            error(
                "POST", V2, {**BASIC, **FORM}, "a" * 20000, 413, "A185204", "the body is over the limit of 16384 bytes."
            ),
            chunked=True,
        ),
        id="413-v2-chunked",
    ),
    pytest.param(
        error(
            "POST",
            V2,
            {**BASIC, "Content-Type": "text/plain"},
            "x",
            415,
            "A185203",
            "Content-Type is 'text/plain'; use application/json or application/x-www-form-urlencoded.",
        ),
        id="415-content-type",
    ),
    pytest.param(
        error(
            "POST",
            V3_PATH,
            {**BEARER, "Content-Type": "application/json; charset=rot13"},
            "{}",
            415,
            "A185203",
            "charset 'rot13' is not supported; use utf-8.",
        ),
        id="415-charset",
    ),
    pytest.param(
        replace(
            error(
                "POST",
                V3_PATH,
                {**BEARER, **FORM},
                f"ticket={new_ticket()}&reason=ACCESS_DENIED",
                500,
                "A185101",
                "the ticket store failed; the ticket may not have been deleted.",
            ),
            lock_store=True,
        ),
        id="500-v3-store-failed",
    ),
    pytest.param(
        replace(
            error(
                "POST",
                V2,
                {**BASIC, **JSON},
                json.dumps({"ticket": new_ticket()}),
                500,
                "A185101",
                "the ticket store failed; the ticket may not have been deleted.",
            ),
            lock_store=True,
        ),
        id="500-v2-store-failed",
    ),
    pytest.param(
        replace(
            error(
                "POST",
                V3_PATH,
                {**BEARER, **JSON},
                "{}",
                500,
                "A001101",
                "an unexpected error occurred; see the server log.",
            ),
            server="custom",
        ),
        id="500-unexpected",
    ),
    pytest.param(
        replace(
            error(
                "POST",
                V2,
                {**BASIC, **JSON},
                "{}",
                403,
                "A185212",
                f"the credentials do not cover the service '{SERVICE}'.",
            ),
            server="custom",
        ),
        id="403-v2-narrow-verifier",
    ),
]

# A custom TokenVerifier: a bug on bearer tokens (the middleware's last-resort 500), and
# API keys that authenticate as a principal covering another service (a 403 on v2).
CUSTOM_APP = textwrap.dedent(
    """
    from ciba_middleware import BackchannelFailMiddleware, Principal, PrincipalKind, not_found_app
    from ciba_middleware.stores import store_from_url

    class CustomVerifier:
        def verify_bearer(self, token):
            raise RuntimeError("a bug in the verifier")

        def verify_api_key(self, api_key, api_secret):
            return Principal(PrincipalKind.API_KEY, "elsewhere", frozenset({"elsewhere"}))

    application = BackchannelFailMiddleware(
        not_found_app, store=store_from_url("memory://"), verifier=CustomVerifier()
    )
    """
)


@dataclass
class Servers:
    main: LiveServer
    custom: LiveServer
    database: Path


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("docs")
    database = tmp / "tickets.sqlite3"
    # timeout=0: a locked database fails the call at once, as an unreachable store would.
    main = LiveServer(
        "ciba_middleware.wsgi:application", ciba_env(tmp, CIBA_STORE_URL=f"sqlite:///{database}?timeout=0")
    )
    (tmp / "custom_app.py").write_text(CUSTOM_APP, encoding="utf-8")
    try:
        custom = LiveServer("custom_app:application", {"PYTHONPATH": str(tmp)})
    except BaseException:
        main.stop()
        raise
    yield Servers(main, custom, database)
    main.stop()
    custom.stop()


def send(servers: Servers, case: Case) -> requests.Response:
    server = servers.custom if case.server == "custom" else servers.main
    body: Any = case.body.encode() if isinstance(case.body, str) else case.body
    if case.chunked:
        body = iter([body])
    if not case.lock_store:
        return requests.request(case.method, server.url + case.path, headers=case.headers, data=body, timeout=10)
    lock = sqlite3.connect(servers.database, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        return requests.request(case.method, server.url + case.path, headers=case.headers, data=body, timeout=10)
    finally:
        lock.close()


def check_headers(spec: dict[str, Any], documented: dict[str, Any], response: requests.Response) -> None:
    for name, header in documented.get("headers", {}).items():
        header = resolve(spec, header)
        value = response.headers.get(name)
        if header.get("required"):
            assert value is not None, f"{name} is documented as required"
        if value is not None:
            assert errors_of(spec, header["schema"], value) == [], name


@pytest.mark.parametrize("case", CASES)
def test_real_answer_matches_the_documents(
    servers: Servers, spec: dict[str, Any], authlete_spec: dict[str, Any], case: Case
) -> None:
    response = send(servers, case)
    assert response.status_code == case.status
    operation = spec["paths"][case.template][case.method.lower()]
    documented = resolve(spec, operation["responses"][str(case.status)])
    check_headers(spec, documented, response)
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    if case.method == "HEAD":
        assert response.content == b""
        assert "content" not in documented
        return

    body = response.json()
    assert list(documented["content"]) == ["application/json"]
    schema = documented["content"]["application/json"]["schema"]
    assert errors_of(spec, schema, body) == []
    assert body["resultCode"] == case.result_code
    assert body["resultMessage"] == case.message
    if case.status == 200:
        assert (body["action"], body["responseContent"]) == (case.action, case.content)
        request_body = resolve(spec, operation["requestBody"])["content"][case.headers["Content-Type"]]["schema"]
        assert isinstance(case.body, str)
        sent = (
            json.loads(case.body)
            if case.headers["Content-Type"] == JSON["Content-Type"]
            else dict(parse_qsl(case.body))
        )
        assert errors_of(spec, request_body, sent) == []

    their_responses = authlete_spec["paths"][V3]["post"]["responses"]
    if case.method == "POST" and str(case.status) in their_responses:
        their = resolve(authlete_spec, their_responses[str(case.status)])
        assert errors_of(authlete_spec, their["content"]["application/json"]["schema"], body) == []


FIELD_VALUES = [
    # A fixed ticket-shaped value: pytest-xdist's workers must collect the same test ids.
    *(("ticket", value) for value in ("", "x", "A" * 43, "ü", 5, True, ["a"], {"a": 1}, None)),
    *(("reason", value) for value in ("ACCESS_DENIED", "UNKNOWN_USER_ID", "access_denied", "", "NOPE", 1, None)),
    *(
        ("errorDescription", value)
        for value in ("No such user.", "a!#[]^~", "", 'say "hi"', "back\\slash", "tab\tx", "é", "x\n", 3, None)
    ),
    *(
        ("errorUri", value)
        for value in (
            "https://as.example.com/errors/unknown_user_id",
            "https://as.example.com/e?q=1&r=%20#frag",
            "http://[::1]:8080/p",
            "urn:example:error",
            "/relative/path",
            "#fragment",
            "mailto:ops@example.com",
            "",
            "%zz",
            "http://a b",
            ":no-scheme",
            "http://x/%4",
            "http://a]b",
            'http://a"b',
            "http://a\\b",
            "https://ünicode.example",
            ["https://as.example.com"],
            None,
        )
    ),
]


@pytest.mark.parametrize(("name", "value"), FIELD_VALUES, ids=lambda v: repr(v)[:30])
def test_the_request_schema_accepts_exactly_what_the_middleware_accepts(
    spec: dict[str, Any], name: str, value: Any
) -> None:
    """The documented JSON field schemas (patterns, enums, types) against ``check_fields`` itself."""
    schema = resolve(spec, spec["paths"][V3]["post"]["requestBody"])["content"]["application/json"]["schema"]
    try:
        check_fields({name: value})
    except errors.InvalidParameter:
        accepted = False
    else:
        accepted = True
    assert (errors_of(spec, schema, {name: value}) == []) is accepted


def test_the_form_schema_allows_each_field_once(spec: dict[str, Any]) -> None:
    """A form field given twice is a 400: the description allows no arrays, unknown fields included."""
    schema = resolve(spec, spec["paths"][V3]["post"]["requestBody"])["content"]["application/x-www-form-urlencoded"]
    assert errors_of(spec, schema["schema"], {"reason": "ACCESS_DENIED", "extra": "x"}) == []
    assert errors_of(spec, schema["schema"], {"reason": ["ACCESS_DENIED", "ACCESS_DENIED"]}) != []
    assert errors_of(spec, schema["schema"], {"extra": ["a", "b"]}) != []


def test_every_documented_status_is_exercised(spec: dict[str, Any]) -> None:
    exercised = {(p.values[0].template, p.values[0].method.lower(), str(p.values[0].status)) for p in CASES}
    documented = {
        (path, method, status)
        for path, item in spec["paths"].items()
        if path in (V3, V2)  # the CIBA family's: tests/ciba/test_openapi.py
        for method, operation in item.items()
        if method != "parameters"
        for status in operation["responses"]
    }
    assert documented == exercised


# -- the prose docs -----------------------------------------------------------------------


def _api_errors() -> list[type[errors.ApiError]]:
    found = [getattr(errors, name) for name in errors.__all__]
    return [
        cls
        for cls in found
        if isinstance(cls, type) and issubclass(cls, errors.ApiError) and cls is not errors.ApiError
    ]


def test_api_md_lists_every_result_code_with_its_status() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    rows = {(code, int(status)) for code, status in re.findall(r"^\| `(A\d{6})` \| (\d{3}) \|", text, re.MULTILINE)}
    expected = {(cls.result_code, cls.status) for cls in _api_errors()} | {("A185001", 200)}
    assert rows == expected


def test_configuration_md_lists_every_variable_the_code_reads() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    sources = [*(ROOT / "ciba_middleware").rglob("*.py"), *(ROOT / "example_app").rglob("*.py")]
    source = "\n".join(p.read_text(encoding="utf-8") for p in sources)
    # Names only: a prefix the code matches ("CIBA_DEMO_") is not a variable.
    variables = set(re.findall(r'"(CIBA_[A-Z0-9_]*[A-Z0-9])"', source))
    assert "CIBA_TOKENS" in variables
    documented = set(re.findall(r"^\| `(CIBA_[A-Z0-9_]+)` \|", text, re.MULTILINE))
    assert variables <= documented


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "    bash scripts/check\n" in readme or "\nbash scripts/check\n" in readme
    assert re.search(r"^exec bash scripts/check$", ci, re.MULTILINE)


# -- every console example is real ---------------------------------------------------------
#
# Each ```console block of README.md and docs/*.md is run: a line starting with "$ " is a
# command (continued while its lines end with "\"), the lines after it its output (stdout
# and stderr as a terminal shows them). The blocks of a page run in order in one bash
# session, in an empty directory with a clean environment (the test venv's bin first on
# PATH, no CIBA_* variable), so that `export`, `cd` and `TICKET=$(...)` carry over as they
# do for a reader. A command that starts a server (gunicorn, `ciba-middleware serve`, the
# demo, uvicorn, `flask run`, `runserver`, `mkdocs serve`) runs in the background until the
# page ends (or another server takes its port), when it gets Ctrl-C; what it printed is
# compared in any order (workers interleave): all of it when the doc shows the ^C, else what
# it printed on starting, until it was quiet for a second; nothing when the page shows no
# output for it. The ports of the docs become free ones, and back in the output. A line
# "..." of the page stands for any lines (a traceback's frames).
#
# Volatile parts are masked on both sides (MASKS): times, dates, durations, pids, request
# IDs, random tokens and tickets, digests, versions of other software. A random value a
# command printed and the doc pastes into a later command (a ticket, a token, its digest) is
# replaced there by the value this run printed.


@dataclass
class Command:
    text: str
    output: list[str]
    #: Where it is: "page:line".
    where: str
    #: The output shows a Ctrl-C (a line starting with ^C): the server's whole output.
    stops_server: bool = False


def console_blocks(page: Path) -> list[list[Command]]:
    blocks = []
    text = page.read_text(encoding="utf-8")
    for match in re.finditer(r"^( *)```console\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL):
        first = text[: match.start()].count("\n") + 2
        commands: list[Command] = []
        lines = [line.removeprefix(match.group(1)) for line in match.group(2).splitlines()]
        index = 0
        while index < len(lines):
            line = lines[index]
            if not line.startswith("$ "):
                assert commands, f"{page.name}:{first + index}: output before any command"
                commands[-1].output.append(line.removeprefix("^C"))
                commands[-1].stops_server |= line.startswith("^C")
                index += 1
                continue
            start = index
            command = [line[2:]]
            while command[-1].endswith("\\"):
                index += 1
                command.append(lines[index])
            commands.append(Command("\n".join(command), [], f"{page.name}:{first + start}"))
            index += 1
        blocks.append(commands)
    return blocks


_MONTH = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
#: (pattern, replacement): applied, in order, to the documented and the real output alike.
MASKS = [
    # Times: HTTP dates, ISO 8601 and log stamps (gunicorn's, logging's), access logs' dates.
    (rf"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d {_MONTH} \d{{4}} \d\d:\d\d:\d\d GMT", "<date>"),
    (r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d([.,]\d+)?(Z|[+-]\d\d:?\d\d)?( [+-]\d{4})?", "<time>"),
    (rf"\d\d/{_MONTH}/\d{{4}} \d\d:\d\d:\d\d", "<time>"),
    (r"\b\d\d:\d\d:\d\d\b", "<clock>"),
    (r"\b(in|took) \d+(\.\d+)? (seconds|s|ms)\b", r"\1 <duration>"),
    (r'"duration_ms":\d+(\.\d+)?', '"duration_ms":<duration>'),
    (r'"(exp|iat|auth_time|nbf)":\d+', r'"\1":<epoch>'),
    # Processes.
    (r"\[\d+\]", "[<pid>]"),
    (r"\b(pid:? |process )\d+", r"\1<pid>"),
    (r"\(\d+\)$", "(<pid>)"),
    # Random values: request IDs, digests, tokens, tickets, auth_req_ids, JWTs, keys.
    (r"\b[0-9a-f]{64}\b", "<sha256>"),
    (r"\b[0-9a-f]{32}\b", "<request-id>"),
    (r"\beyJ[\w-]*\.[\w-]*\.[\w-]*", "<jwt>"),
    (r"(?<![\w-])[\w-]{43}(?![\w-])", "<random>"),
    (r"(ticket_hash\":\"|ticket |version )[0-9a-f]{12}\b", r"\1<hash>"),
    # Other software's versions.
    (r"\b(gunicorn|uvicorn|Django|Werkzeug|Python|version) \d+(\.\d+)+\b", r"\1 <version>"),
]
_MASKS = [(re.compile(pattern), replacement) for pattern, replacement in MASKS]
#: The masks whose values a later command may paste: what they hide is bound to this run's.
_BINDABLE = [re.compile(r"\b[0-9a-f]{64}\b"), re.compile(r"(?<![\w-])[\w-]{43}(?![\w-])")]


def mask(line: str) -> str:
    for pattern, replacement in _MASKS:
        line = pattern.sub(replacement, line)
    return line.rstrip()


#: The commands that start a server, after any VAR=value prefix, and the port each takes
#: when the command names none.
SERVERS = {
    r"(\.venv/bin/)?gunicorn\b": 8000,
    r"ciba-middleware serve\b": 8080,
    r"python -m example_app\b": 8080,
    r"uvicorn\b": 8000,
    r"flask .*\brun\b": 5000,
    r"python manage\.py runserver\b": 8000,
    r"mkdocs serve\b": 8000,
}
_ASSIGNMENTS = r"^(?:\w+=(?:'[^']*'|\"[^\"]*\"|\S*) +)*"
_PORT = re.compile(
    r"(?<=127\.0\.0\.1:)(\d{4,5})\b|(?<=localhost:)(\d{4,5})\b|(?<=--port )(\d{4,5})\b|(?<=runserver )(\d{4,5})\b"
)


#: Ports of the shared Redis and PostgreSQL: a page's store URL keeps them.
_BACKEND_PORTS = {"6379", "5432"}


def server_default_port(command: str) -> int | None:
    """The port a server command listens on by default; None if it is not a server command."""
    if "|" in command:
        return None
    for pattern, port in SERVERS.items():
        if re.match(_ASSIGNMENTS + pattern, command):
            return port
    return None


def _with_explicit_port(command: str, port: int) -> str:
    """The server command with its default port written out, so that it can be moved."""
    command = command.removesuffix(" &")  # in the background of the same terminal: so it is here
    if _PORT.search(command):
        return command
    if "gunicorn" in command:
        return f"{command} --bind 127.0.0.1:{port}"
    if "runserver" in command:
        return f"{command} 127.0.0.1:{port}"
    if "mkdocs serve" in command:
        return f"{command} --dev-addr 127.0.0.1:{port}"
    return f"{command} --port {port}"


_WORKER_EXITING = re.compile(r"\[INFO\] Worker exiting \(pid: \d+\)$")


@dataclass
class Server:
    command: Command
    port: int
    pgid: int
    log: Path
    #: What it printed once started, before the next command.
    started: list[str] = dataclasses.field(default_factory=list)
    #: Started by the page's setup: its output is not the page's.
    quiet: bool = False


@dataclass
class PageSetup:
    """What a page assumes before its first block, in the words of the page."""

    #: Files written into the directory: name -> index of the page's ```python block, or
    #: the text the page describes.
    files: dict[str, int | str] = dataclasses.field(default_factory=dict)
    #: Variables set as if exported earlier (the page says so in prose).
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Commands run silently first (servers the page says are running, for instance).
    before: list[str] = dataclasses.field(default_factory=list)
    #: Run the page from the repository's root instead of an empty directory.
    in_repository: bool = False
    #: Ports of the page that something else holds (the page says so).
    occupied: tuple[str, ...] = ()
    #: Text of the page's commands -> what the test runs instead (its own Redis database,
    #: say); the output shows the page's text again.
    rewrites: dict[str, str] = dataclasses.field(default_factory=dict)
    #: A command -> what the reader does after it, as the page's prose says (edit files).
    after: dict[str, Callable[[Path], None]] = dataclasses.field(default_factory=dict)
    #: The shared Redis is used (the test is skipped without it, or fails under CI).
    redis: bool = False
    #: A part of a command -> what holds while it runs (a lock the page describes).
    during: dict[str, Callable[[Path], AbstractContextManager[object]]] = dataclasses.field(default_factory=dict)


class ConsoleSession:
    """One bash, as a reader's terminal: commands one after another, servers in the background."""

    def __init__(self, page: Path, cwd: Path, setup: PageSetup) -> None:
        self.page = page
        self.cwd = ROOT if setup.in_repository else cwd
        self.scratch = cwd
        self.ports: dict[str, str] = {}
        self.bindings: dict[str, str] = dict(setup.rewrites)
        self.rewrites = setup.rewrites
        self.during = setup.during
        self.servers: list[Server] = []
        self.failures: list[str] = []
        self.count = 0
        bin_dir = Path(sys.executable).parent
        env = {
            "PATH": f"{bin_dir}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
            "HOME": str(cwd),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "PYTHONUNBUFFERED": "1",
            **setup.env,
        }
        self.bash = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.cwd,
            env=env,
            text=True,
        )
        # Job control: each background server in a process group of its own, which a
        # Ctrl-C (SIGINT to the group) reaches as it would from a terminal.
        self._send("set -m; __rc=0\n")
        # The venv a reader made in the clone (`.venv/bin/...`): the test's.
        (cwd / ".venv").symlink_to(Path(sys.prefix))
        self.holders: list[socket.socket] = []
        for documented in setup.occupied:
            holder = socket.create_server(("127.0.0.1", 0))
            self.ports[documented] = str(holder.getsockname()[1])
            self.holders.append(holder)
        for command in setup.before:
            self.run(Command(command, [], "setup"), compare=False)

    def _send(self, text: str) -> None:
        assert self.bash.stdin is not None
        self.bash.stdin.write(text)
        self.bash.stdin.flush()

    def substitute(self, text: str) -> str:
        for documented, real in self.bindings.items():
            text = text.replace(documented, real)

        def moved(match: re.Match[str]) -> str:
            documented = match.group(0)
            if documented in _BACKEND_PORTS:
                return documented
            if documented not in self.ports:
                self.ports[documented] = str(free_port())
            return self.ports[documented]

        return _PORT.sub(moved, text)

    def _real_output(self, text: str) -> list[str]:
        for documented, real in [*self.rewrites.items(), ("~", str(self.scratch))]:
            text = text.replace(real, documented)
        for documented, real in self.ports.items():
            # A port on its own, not digits inside a token or a digest.
            text = re.sub(rf"(?<![\w-]){real}(?![\w-])", documented, text)
        return text.replace("\r\n", "\n").splitlines()

    def run(self, command: Command, compare: bool = True) -> None:
        port = server_default_port(command.text)
        if port is not None:
            self.start_server(command, port, quiet=not compare)
            return
        holds = [hold for part, hold in self.during.items() if part in command.text]
        self.count += 1
        out = self.scratch / f".console-{self.count}.out"
        done = self.scratch / f".console-{self.count}.done"
        text = self.substitute(command.text)
        with contextlib.ExitStack() as stack:
            for hold in holds:
                stack.enter_context(hold(self.cwd))
            self._send(f"(exit $__rc); {{ {text}\n}} > {out} 2>&1 < /dev/null; __rc=$?; echo $__rc > {done}\n")
            deadline = time.monotonic() + 120
            while not done.exists() or not done.read_text():
                assert time.monotonic() < deadline, f"{command.where}: {command.text} did not end in 120 s"
                time.sleep(0.02)
        if compare:
            self.compare(command, self._real_output(out.read_text(encoding="utf-8", errors="replace")))

    def start_server(self, command: Command, default_port: int, quiet: bool = False) -> None:
        text = self.substitute(_with_explicit_port(command.text, default_port))
        match = _PORT.search(text)
        assert match
        port = int(match.group(0))
        for server in [s for s in self.servers if s.port == port]:
            self.stop(server)
        self.count += 1
        log = self.scratch / f".console-{self.count}.log"
        pid_file = self.scratch / f".console-{self.count}.pid"
        self._send(f"{{ {text}\n}} > {log} 2>&1 < /dev/null &\necho $! > {pid_file}\n")
        deadline = time.monotonic() + 60
        # The log too: the port may still be open from the server stopped just before, while
        # the new command has not yet opened its output.
        while not pid_file.exists() or not pid_file.read_text().strip() or not log.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pid = int(pid_file.read_text())
        server = Server(command, port, pid, log, quiet=quiet)
        while not port_open("127.0.0.1", port):
            if not _alive(pid):
                printed = self._real_output(log.read_text(encoding="utf-8", errors="replace"))
                assert not quiet, f"{command.where}: {command.text} ended: {printed}"
                # It ended by itself (a configuration error, say): an ordinary command.
                self.compare(command, printed)
                return
            assert time.monotonic() < deadline, f"{command.where}: {command.text} did not listen in 60 s"
            time.sleep(0.05)
        # What the terminal shows before the reader moves on: the start-up, once it is quiet
        # (and, on a loaded machine, not before it has as many lines as the page shows).
        size, quiet_since = -1, time.monotonic()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            time.monotonic() - quiet_since < 1.0
            or len(self._real_output(log.read_text(encoding="utf-8", errors="replace"))) < len(command.output)
        ):
            if log.stat().st_size != size:
                size, quiet_since = log.stat().st_size, time.monotonic()
            time.sleep(0.05)
        server.started = self._real_output(log.read_text(encoding="utf-8", errors="replace"))
        self.servers.append(server)

    def stop(self, server: Server) -> None:
        """Ctrl-C, then what the server printed against what the page shows."""
        self.servers.remove(server)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pgid, signal.SIGINT)
        deadline = time.monotonic() + 20
        while _group_alive(server.pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pgid, signal.SIGKILL)
        if server.quiet or not server.command.output:
            return  # a server whose output the page does not show: it started, that is all
        real = self._real_output(server.log.read_text(encoding="utf-8", errors="replace"))
        if not server.command.stops_server:
            real = server.started
        # A worker that gets the Ctrl-C itself may exit before it logs that it does: its line
        # is there or not, on the page as in a terminal (the page says so).
        shown = [line for line in server.command.output if not _WORKER_EXITING.search(line)]
        real = [line for line in real if not _WORKER_EXITING.search(line)]
        server.command = dataclasses.replace(server.command, output=shown)
        self.compare(server.command, real, any_order=True)

    def compare(self, command: Command, real: list[str], any_order: bool = False) -> None:
        shown = list(command.output)
        for documented, produced in zip(_bindable(shown), _bindable(real), strict=False):
            if documented != produced:
                self.bindings[documented] = produced
        # A blank line between two commands of a block is the page's layout.
        masked_shown = [mask(line) for line in shown]
        masked_real = [mask(line) for line in real]
        while masked_shown and not masked_shown[-1]:
            masked_shown.pop()
        while masked_real and not masked_real[-1]:
            masked_real.pop()
        if any_order and "..." not in masked_shown:  # with "...", the lines in order
            masked_shown.sort()
            masked_real.sort()
        if not _matches(masked_shown, masked_real):
            diff = difflib.unified_diff(masked_shown, masked_real, "the page", "the run", lineterm="", n=0)
            self.failures.append(
                f"{command.where}: $ {command.text}\n" + "\n".join(list(diff)[2:]) + "\nit printed:\n" + "\n".join(real)
            )

    def close(self) -> None:
        for holder in self.holders:
            holder.close()
        try:
            while self.servers:
                self.stop(self.servers[0])
        finally:
            for server in self.servers:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pgid, signal.SIGKILL)
            if self.bash.poll() is None:
                self._send("exit\n")
                try:
                    self.bash.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.bash.kill()
            assert self.bash.stdin is not None
            self.bash.stdin.close()


def _matches(shown: list[str], real: list[str]) -> bool:
    """The lines are equal, a line "..." of the page standing for any lines (a traceback's)."""
    if "..." not in shown:
        return shown == real
    pattern = "".join(r"(?:.*\n)*?" if line == "..." else re.escape(line) + r"\n" for line in shown)
    return re.fullmatch(pattern, "".join(line + "\n" for line in real)) is not None


def _bindable(lines: list[str]) -> list[str]:
    text = "\n".join(lines)
    found: list[tuple[int, str]] = []
    for pattern in _BINDABLE:
        found.extend((m.start(), m.group(0)) for m in pattern.finditer(text))
    return [value for _, value in sorted(found)]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


#: Commands not run (those that contain the key), each with why: the page shows them, the
#: test cannot run them as shown.
NOT_RUN = {
    "python3 -m venv .venv && .venv/bin/pip install": "installs into a new venv from the network, for minutes; "
    "tests/test_packaging.py installs the built wheel into a clean venv instead",
    "pip install -e '.[asgi]' fastapi python-multipart": "the test venv has these already (the test extra); "
    "installing would change the venv the suite runs in",
    "CIBA_STORE_URL=postgresql://app@db:5432/tickets": "names a database host of the reader's network ('db'), "
    "which answers that the database does not exist",
}

#: The grants README.md's server runs with, and docs/api.md's.
EXAMPLE_GRANTS = [
    {"service": "715948317", "token": "dev-token-715948317"},
    {"service": "715948317", "api_secret": "dev-secret-715948317"},
]


#: cli.md's app that already carries the middleware, as the page describes it.
CARRIER = "from ciba_middleware import from_env, not_found_app\n\napp = from_env(not_found_app)\n"


@contextlib.contextmanager
def _sqlite_locked(cwd: Path) -> Iterator[None]:
    """Another process holds the write lock of the default SQLite store (the store-failure example)."""
    lock = sqlite3.connect(cwd / "ciba-tickets.sqlite3", isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        lock.close()


#: A grant for the pages whose commands only count the grants.
GRANT_715948317 = json.dumps([{"service": "715948317", "token_sha256": sha256_hex("not-a-secret")}])


#: What each page assumes before its first block.
SETUPS: dict[str, PageSetup] = {
    "cli.md": PageSetup(
        files={"hello.py": 0, "carrier.py": CARRIER},
        occupied=("8000",),
    ),
    "getting-started.md": PageSetup(files={"fail_with_authlete.py": 0}),
    # The demo the page starts with `bash scripts/demo`, which makes a venv first.
    "README.md": PageSetup(
        files={"app.py": 0}, env={"PYTHONPATH": str(ROOT)}, before=["python -m example_app --port 8080"]
    ),
    # The server of README.md's "The API over HTTP"; the store fails at once when locked.
    "api.md": PageSetup(
        env={"CIBA_TOKENS": json.dumps(EXAMPLE_GRANTS)},
        before=[
            "CIBA_STORE_URL='sqlite:///ciba-tickets.sqlite3?timeout=0' "
            "gunicorn --bind 127.0.0.1:8000 ciba_middleware.wsgi:application"
        ],
        during={"ticket=FMU5Ne1SxQJTy1DSkcl4tnC_N_--WMTenfU141bS7lI": _sqlite_locked},
    ),
    "deployment.md": PageSetup(env={"CIBA_TOKENS": '[{"service": "1", "token": "aaaa"}]'}),
    # The Redis database of the test run, rather than the page's 15.
    "operations.md": PageSetup(
        env={"CIBA_TOKENS": GRANT_715948317},
        rewrites={"redis://127.0.0.1:6379/15": REDIS_URL.rstrip("/")},
        redis=True,
    ),
    # The settings, views and URLs the page has the reader write into the new project.
    "django.md": PageSetup(after={"cd mysite": lambda cwd: edit_django_project(cwd / "mysite")}),
    # The demo is the repository's, run from a clone.
    "example-app.md": PageSetup(env={"PYTHONPATH": str(ROOT)}),
    # `mkdocs serve` serves the repository's docs/.
    "packaging.md": PageSetup(in_repository=True),
}

CONSOLE_PAGES = [page for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))] if console_blocks(page)]


def _not_run(command: Command) -> str | None:
    for part, why in NOT_RUN.items():
        if part in command.text:
            return why
    return None


def test_every_exception_names_a_command_of_the_docs() -> None:
    commands = [c.text for page in CONSOLE_PAGES for block in console_blocks(page) for c in block]
    for part in NOT_RUN:
        assert [c for c in commands if part in c], part


@pytest.mark.parametrize("page", CONSOLE_PAGES, ids=lambda page: page.name)
def test_console_examples_print_what_the_page_shows(page: Path, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        unreachable("curl is not installed")
    setup = SETUPS.get(page.name, PageSetup())
    if setup.redis and not port_open("127.0.0.1", 6379):
        unreachable("Redis is not listening on 127.0.0.1:6379")
    blocks = console_blocks(page)
    python = python_blocks(page)
    files = {name: python[index] if isinstance(index, int) else index for name, index in setup.files.items()}
    for code in python:
        named = re.match(r"# ([\w/.-]+\.py)\n", code)
        if named:
            files[named.group(1)] = code
    session = ConsoleSession(page, tmp_path, setup)
    try:
        for block in blocks:
            for command in block:
                if _not_run(command) is None:
                    # The page's files as the reader has them by now: with the session's
                    # ports (a base URL, say) and the values made so far (a token).
                    for name, text in files.items():
                        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
                        if not (tmp_path / name).exists() or (tmp_path / name).read_text() != session.substitute(text):
                            (tmp_path / name).write_text(session.substitute(text), encoding="utf-8")
                    session.run(command)
                    if command.text in setup.after:
                        setup.after[command.text](tmp_path)
    finally:
        session.close()
    assert not session.failures, "\n\n".join(session.failures)


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)


# -- the console runner itself ------------------------------------------------------------


def _session_of(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> ConsoleSession:
    tmp_path.mkdir(exist_ok=True)
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    (work := tmp_path / "work").mkdir()
    for name, content in (files or {}).items():
        (work / name).write_text(content, encoding="utf-8")
    session = ConsoleSession(page, work, PageSetup())
    try:
        for block in console_blocks(page):
            for command in block:
                session.run(command)
    finally:
        session.close()
    return session


def test_the_runner_reports_an_output_the_page_does_not_show(tmp_path: Path) -> None:
    session = _session_of(tmp_path, "```console\n$ echo hello\ngoodbye\n$ echo $?\n0\n```\n")
    assert len(session.failures) == 1
    assert "page.md:2: $ echo hello" in session.failures[0]
    assert "-goodbye\n+hello" in session.failures[0]


def test_the_runner_masks_volatile_parts_binds_pasted_values_and_keeps_the_state(tmp_path: Path) -> None:
    """A random value printed, then pasted by the page into a later command; `cd`, exit codes."""
    text = textwrap.dedent(
        """\
        ```console
        $ python -c 'import secrets; print(secrets.token_urlsafe(32))'
        RHo-IiridkeT4bNbYGAVYnG9G_b0m56_eZ_1kjUgeY0
        $ V=RHo-IiridkeT4bNbYGAVYnG9G_b0m56_eZ_1kjUgeY0; echo ${#V} "$V" | grep -c -- "$V"
        1
        $ mkdir d && cd d && false
        $ echo $? "$(basename "$PWD")"
        1 d
        $ date -u '+%Y-%m-%dT%H:%M:%SZ'
        2026-11-27T06:45:08Z
        $ python -c 'raise SystemExit("boom")'
        ...
        boom
        ```
        """
    )
    assert _session_of(tmp_path, text).failures == []


#: A server that says where it listens, for the runner's own test.
_ECHO_SERVER = textwrap.dedent(
    """\
    import argparse, http.server
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    port = parser.parse_args().port
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
    """
)


def test_the_runner_compares_a_servers_start_up_and_moves_its_port(tmp_path: Path) -> None:
    """The page's port becomes a free one, and back in the output; a stale start-up fails."""
    shown = "listening on http://127.0.0.1:8000"
    call = "curl -s -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8000/"
    good = f"```console\n$ python echo_server.py --port 8000\n{shown}\n$ {call}\n200\n```\n"
    files = {"echo_server.py": _ECHO_SERVER}
    SERVERS[r"python echo_server\.py\b"] = 8000
    try:
        assert _session_of(tmp_path / "good", good, files).failures == []
        stale = good.replace(f"{shown}\n", "listening on http://127.0.0.1:8000 (pid 7)\n")
        failures = _session_of(tmp_path / "stale", stale, files).failures
    finally:
        del SERVERS[r"python echo_server\.py\b"]
    assert len(failures) == 1
    assert f"+{shown}" in failures[0]
