"""The documentation is true to the code.

- docs/openapi.yaml is valid OpenAPI 3.0, every answer a real gunicorn server gives for
  every status the middleware can answer matches it (status, headers, body), and its
  schemas stay compatible with Authlete's own description of the fail API
  (its extract in tests/data/authlete-fail-api.openapi.yaml, kept in the repository).
- docs/api.md lists every result code with its status; docs/configuration.md every
  ``CIBA_*`` variable the package and the demo read.
- README.md's test command is the one .ci/run runs, and the curl examples of README.md and
  docs/api.md give, against a real server, exactly the output they show.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import sqlite3
import subprocess
import textwrap
from collections.abc import Iterator
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
    ROOT,
    SERVICE,
    SERVICE_TOKEN,
    LiveServer,
    ciba_env,
    unreachable,
)
from jsonschema import Draft4Validator
from openapi_spec_validator import validate as validate_spec

from ciba_middleware import errors
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
    *(("ticket", value) for value in ("", "x", new_ticket(), "ü", 5, True, ["a"], {"a": 1}, None)),
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
    variables = set(re.findall(r'"(CIBA_[A-Z0-9_]+)"', source))
    assert "CIBA_TOKENS" in variables
    documented = set(re.findall(r"^\| `(CIBA_[A-Z0-9_]+)` \|", text, re.MULTILINE))
    assert variables <= documented


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "    bash scripts/check\n" in readme or "\nbash scripts/check\n" in readme
    assert re.search(r"^exec bash scripts/check$", ci, re.MULTILINE)


# -- the examples in the prose docs are real ----------------------------------------------

#: The configuration the curl examples of README.md and docs/api.md were run with.
EXAMPLE_HOST = "http://127.0.0.1:8000"
EXAMPLE_GRANTS = [
    {"service": "715948317", "token": "dev-token-715948317"},
    {"service": "715948317", "api_secret": "dev-secret-715948317"},
]
_DATE = re.compile(r"^(Date|Request-Id): .*$", re.MULTILINE)


def console_examples(path: Path) -> list[Any]:
    """``(command, output)`` of each ``$ curl`` against the example server in ``path``'s console blocks."""
    examples = []
    for block in re.findall(r"^```console\n(.*?)^```", path.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL):
        for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            lines = chunk.splitlines()
            # The command runs on while its lines end with a backslash; the output follows.
            end = next(i for i, line in enumerate(lines) if not line.endswith("\\"))
            command = " ".join(line.removesuffix("\\").strip() for line in lines[: end + 1])
            if command.startswith("curl ") and EXAMPLE_HOST in command:
                output = "\n".join(lines[end + 1 :]).strip("\n")
                examples.append(pytest.param(command, output, id=f"{path.name}:{len(examples) + 1}"))
    return examples


DOC_EXAMPLES = [*console_examples(ROOT / "README.md"), *console_examples(DOCS / "api.md")]


def test_docs_have_curl_examples() -> None:
    assert len(DOC_EXAMPLES) >= 15


@pytest.fixture(scope="module")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path]]:
    if shutil.which("curl") is None:
        unreachable("curl is not installed")
    tmp = tmp_path_factory.mktemp("examples")
    (tmp / "big").write_bytes(b"a" * 20000)  # docs/api.md: head -c 20000 /dev/zero | tr '\0' a > big
    server = LiveServer(
        "ciba_middleware.wsgi:application",
        # timeout=0: the store-failure example holds the write lock (see below).
        {"CIBA_STORE_URL": f"sqlite:///{tmp / 'tickets.sqlite3'}?timeout=0", "CIBA_TOKENS": json.dumps(EXAMPLE_GRANTS)},
    )
    yield server, tmp
    server.stop()


@pytest.mark.parametrize(("command", "output"), DOC_EXAMPLES)
def test_curl_example_gives_the_documented_output(
    example_server: tuple[LiveServer, Path], command: str, output: str
) -> None:
    server, cwd = example_server
    argv = shlex.split(command.replace(EXAMPLE_HOST, server.url))
    lock = sqlite3.connect(cwd / "tickets.sqlite3", isolation_level=None)
    try:
        if "A185101" in output:  # the store-failure example: SQLite locked by another process
            lock.execute("BEGIN EXCLUSIVE")
        result = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=30, check=False)
    finally:
        lock.close()
    assert result.returncode == 0, result.stderr
    got = result.stdout.decode().replace("\r\n", "\n").strip("\n")
    assert _DATE.sub("Date: -", got) == _DATE.sub("Date: -", output)


#: The pages this test file keeps honest; the others' links are their authors' to check.
#: README.md's links are absolute, for the package index: tests/test_packaging.py checks them.
LINKED_PAGES = [
    *(DOCS / name for name in ("index.md", "getting-started.md", "configuration.md", "api.md")),
    *(DOCS / name for name in ("deployment.md", "security.md", "design.md", "authlete.md")),
]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    links = [link for link in _LINK.findall(page.read_text(encoding="utf-8")) if "://" not in link]
    assert links
    for link in links:
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.is_file(), f"{page.name}: {link}"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.name}: {link}"
