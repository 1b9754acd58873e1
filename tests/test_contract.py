"""Every table of the contract (fail-api.md), in process and over real HTTP, through each adapter.

Each case is a raw request and the exact answer; the ``client`` fixture runs it through
the WSGI middleware (WebTest, and gunicorn around a Flask app), the ASGI middleware
(uvicorn around a Starlette app) and the Django middleware (gunicorn, and Django's test
client).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from _client import Answer, DjangoTestClient, InProcess, OverHTTP
from conftest import (
    API_HEADERS,
    API_SECRET,
    GRANTS,
    ORG_TOKEN,
    OTHER_SERVICE,
    OTHER_TOKEN,
    SERVICE,
    SERVICE_TOKEN,
    LiveServer,
    basic,
)

from ciba_middleware import BackchannelFailMiddleware, Reason, StaticTokenVerifier
from ciba_middleware.stores import store_from_url

V3 = f"/api/{SERVICE}/backchannel/authentication/fail"
V2 = "/api/backchannel/authentication/fail"
BEARER = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SUCCESS_MESSAGE = "[A185001] Successfully generated an error response for the backchannel authentication request."
SERVER_ERROR = '{"error":"server_error"}'


def success(content: dict[str, str], action: str) -> dict[str, str]:
    return {
        "resultCode": "A185001",
        "resultMessage": SUCCESS_MESSAGE,
        "action": action,
        "responseContent": json.dumps(content, separators=(",", ":")),
    }


def error(code: str, detail: str, *, action: bool = True) -> dict[str, str]:
    body = {"resultCode": code, "resultMessage": f"[{code}] /backchannel/authentication/fail, {detail}"}
    if action:
        body.update(action="INTERNAL_SERVER_ERROR", responseContent=SERVER_ERROR)
    return body


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('contract') / 'tickets.sqlite3'}"


@pytest.fixture(scope="module")
def server(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    close_file = tmp_path_factory.mktemp("close") / "closed"
    env = {
        "CIBA_STORE_URL": sqlite_url,
        "CIBA_TOKENS": json.dumps(GRANTS),
        "CIBA_TEST_CLOSE_FILE": str(close_file),
    }
    live = LiveServer("_apps:application", env, workers=2)
    live.close_file = close_file  # type: ignore[attr-defined]
    yield live
    live.stop()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the app"]


@pytest.fixture(scope="module")
def asgi_server(sqlite_url: str) -> Iterator[LiveServer]:
    """The ASGI middleware (ciba_middleware.asgi.from_env) around a Starlette app, under uvicorn."""
    env = {"CIBA_STORE_URL": sqlite_url, "CIBA_TOKENS": json.dumps(GRANTS)}
    # One process: uvicorn's --workers N leaves Nagle on (docs/asgi.md), 40 ms per keep-alive call.
    live = LiveServer("_asgi_apps:application", env, server="uvicorn")
    yield live
    live.stop()


def django_settings(sqlite_url: str) -> dict[str, Any]:
    return {"STORE_URL": sqlite_url, "TOKENS": GRANTS, "SERVICE_ID": SERVICE}


@pytest.fixture(scope="module")
def django_server(sqlite_url: str) -> Iterator[LiveServer]:
    """The Django middleware in the test project (tests/djangoproject), under gunicorn."""
    env = {"CIBA_TEST_DJANGO_SETTINGS": json.dumps(django_settings(sqlite_url))}
    live = LiveServer("djangoproject.wsgi:application", env, workers=2)
    yield live
    live.stop()


@pytest.fixture(params=["in_process", "gunicorn", "asgi-uvicorn", "django-gunicorn", "django-test-client"])
def client(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[InProcess | OverHTTP | DjangoTestClient]:
    """The same raw requests through each adapter: WSGI, ASGI and Django."""
    if request.param == "gunicorn":
        yield OverHTTP(request.getfixturevalue("server").url)
    elif request.param == "asgi-uvicorn":
        yield OverHTTP(request.getfixturevalue("asgi_server").url)
    elif request.param == "django-gunicorn":
        yield OverHTTP(request.getfixturevalue("django_server").url)
    elif request.param == "django-test-client":
        django_client = DjangoTestClient(django_settings(sqlite_url))
        yield django_client
        django_client.close()
    else:
        middleware = BackchannelFailMiddleware(
            app, store=store_from_url(sqlite_url), verifier=StaticTokenVerifier(GRANTS)
        )
        yield InProcess(middleware)


def post(
    client: InProcess | OverHTTP | DjangoTestClient, body: bytes, headers: dict[str, str], path: str = V3
) -> Answer:
    return client.request("POST", path, headers=headers, body=body)


def check(answer: Answer, status: int, body: dict[str, str], extra_headers: dict[str, str] | None = None) -> None:
    assert answer.status == status, answer.body
    assert answer.json() == body
    # The order of members is Authlete's: resultCode, resultMessage, action, responseContent.
    assert list(answer.json()) == list(body)
    for name, value in {**API_HEADERS, **(extra_headers or {})}.items():
        assert answer.headers.get(name) == value, name
    assert int(answer.headers["Content-Length"]) == len(answer.body)


# -- reasons ------------------------------------------------------------------------------

REASONS = [
    ("ACCESS_DENIED", "access_denied", "FORBIDDEN"),
    ("EXPIRED_LOGIN_HINT_TOKEN", "expired_login_hint_token", "BAD_REQUEST"),
    ("INVALID_BINDING_MESSAGE", "invalid_binding_message", "BAD_REQUEST"),
    ("INVALID_TARGET", "invalid_target", "BAD_REQUEST"),
    ("INVALID_USER_CODE", "invalid_user_code", "BAD_REQUEST"),
    ("MISSING_USER_CODE", "missing_user_code", "BAD_REQUEST"),
    ("SERVER_ERROR", "server_error", "INTERNAL_SERVER_ERROR"),
    ("UNAUTHORIZED_CLIENT", "unauthorized_client", "BAD_REQUEST"),
    ("UNKNOWN_USER_ID", "unknown_user_id", "BAD_REQUEST"),
]


def test_the_table_is_the_enum() -> None:
    assert [(r.value, r.error, r.action.value) for r in Reason] == REASONS


@pytest.mark.parametrize(("reason", "error_code", "action"), REASONS)
@pytest.mark.parametrize("encoding", ["json", "form"])
def test_every_reason(client: Any, encoding: str, reason: str, error_code: str, action: str) -> None:
    fields = {"reason": reason}
    body = json.dumps(fields).encode() if encoding == "json" else urlencode(fields).encode()
    answer = post(client, body, {**BEARER, **(JSON if encoding == "json" else FORM)})
    check(answer, 200, success({"error": error_code}, action))


# -- request bodies ----------------------------------------------------------------------

ACCEPTED = [
    pytest.param(JSON, b"{}", {"error": "server_error"}, "INTERNAL_SERVER_ERROR", id="json-empty-object"),
    pytest.param(FORM, b"", {"error": "server_error"}, "INTERNAL_SERVER_ERROR", id="form-empty"),
    pytest.param(
        JSON,
        b'{"ticket":null,"reason":null,"errorDescription":null,"errorUri":null}',
        {"error": "server_error"},
        "INTERNAL_SERVER_ERROR",
        id="json-all-null-as-authlete-python-sends",
    ),
    pytest.param(
        JSON,
        b'{"ticket":null,"reason":"UNKNOWN_USER_ID","errorDescription":"No such user","errorUri":null}',
        {"error": "unknown_user_id", "error_description": "No such user"},
        "BAD_REQUEST",
        id="json-description",
    ),
    pytest.param(
        JSON,
        b'{"reason":"ACCESS_DENIED","errorUri":"https://as.example.com/errors#denied","errorDescription":"Denied!"}',
        {"error": "access_denied", "error_description": "Denied!", "error_uri": "https://as.example.com/errors#denied"},
        "FORBIDDEN",
        id="json-description-and-uri-in-fixed-order",
    ),
    pytest.param(
        FORM,
        b"reason=INVALID_TARGET&errorDescription=Unknown+resource%3A+%27x%27&errorUri=%2Fdocs%2Ferrors",
        {"error": "invalid_target", "error_description": "Unknown resource: 'x'", "error_uri": "/docs/errors"},
        "BAD_REQUEST",
        id="form-description-and-relative-uri",
    ),
    pytest.param(
        JSON,
        b'{"reason":"INVALID_USER_CODE","errorUri":"urn:example:errors:user-code"}',
        {"error": "invalid_user_code", "error_uri": "urn:example:errors:user-code"},
        "BAD_REQUEST",
        id="json-urn-uri",
    ),
    pytest.param(
        JSON,
        b'{"reason":"INVALID_TARGET","errorUri":"https://[2001:db8::1]:8443/e?x=1&y=%20"}',
        {"error": "invalid_target", "error_uri": "https://[2001:db8::1]:8443/e?x=1&y=%20"},
        "BAD_REQUEST",
        id="json-ipv6-uri",
    ),
    pytest.param(
        JSON,
        b'{"reason":"MISSING_USER_CODE","somethingElse":[1,{"a":2}],"subject":"ignored"}',
        {"error": "missing_user_code"},
        "BAD_REQUEST",
        id="json-unknown-fields-ignored",
    ),
    pytest.param(
        {"Content-Type": "application/json; charset=utf-8"},
        b'{"reason":"ACCESS_DENIED"}',
        {"error": "access_denied"},
        "FORBIDDEN",
        id="json-explicit-utf8",
    ),
    pytest.param(
        {"Content-Type": "Application/JSON;Charset=UTF-16"},
        '{"reason":"ACCESS_DENIED"}'.encode("utf-16"),
        {"error": "access_denied"},
        "FORBIDDEN",
        id="json-utf16-by-charset",
    ),
    pytest.param(
        {"Content-Type": "application/x-www-form-urlencoded;charset=ISO-8859-1"},
        b"reason=ACCESS_DENIED&errorDescription=caf%E9",
        None,
        None,
        id="form-latin1-decodes-then-fails-description-check",
    ),
    pytest.param(
        JSON,
        b'{"reason":"ACCESS_DENIED","errorDescription":" !#[]~ ok"}',
        {"error": "access_denied", "error_description": " !#[]~ ok"},
        "FORBIDDEN",
        id="json-description-edges-of-the-charset",
    ),
    pytest.param(
        JSON,
        b'{"reason":"ACCESS_DENIED","x":' + b"[" * 63 + b'"]]]"' + b"]" * 63 + b"}",
        {"error": "access_denied"},
        "FORBIDDEN",
        id="json-64-levels-the-limit",
    ),
]


@pytest.mark.parametrize(("headers", "body", "content", "action"), ACCEPTED)
def test_accepted_bodies(
    client: Any, headers: dict[str, str], body: bytes, content: dict[str, str] | None, action: str | None
) -> None:
    answer = post(client, body, {**BEARER, **headers})
    if content is None:
        check(
            answer,
            400,
            error(
                "A185202",
                "'errorDescription' has the character \"\\u00e9\" (U+00E9) at index 3; "
                "RFC 6749 allows only %x20-21 / %x23-5B / %x5D-7E.",
            ),
        )
    else:
        assert action is not None
        check(answer, 200, success(content, action))


REASON_LIST = (
    "ACCESS_DENIED, EXPIRED_LOGIN_HINT_TOKEN, INVALID_BINDING_MESSAGE, INVALID_TARGET, INVALID_USER_CODE, "
    "MISSING_USER_CODE, SERVER_ERROR, UNAUTHORIZED_CLIENT, UNKNOWN_USER_ID"
)
ALLOWED_DESCRIPTION = "RFC 6749 allows only %x20-21 / %x23-5B / %x5D-7E."
ALLOWED_URI = "RFC 6749 allows only %x21 / %x23-5B / %x5D-7E."

REJECTED = [
    pytest.param(JSON, b'{"reason":"NOPE"}', 400, "A185202",
                 f"'reason' is \"NOPE\", which is not one of {REASON_LIST}.", id="unknown-reason"),
    pytest.param(FORM, b"reason=access_denied", 400, "A185202",
                 f"'reason' is \"access_denied\", which is not one of {REASON_LIST}.", id="reason-wrong-case"),
    pytest.param(JSON, b'{"reason":1}', 400, "A185202", "'reason' must be a string or null, not a number.",
                 id="reason-number"),
    pytest.param(JSON, b'{"ticket":["a"]}', 400, "A185202", "'ticket' must be a string or null, not an array.",
                 id="ticket-array"),
    pytest.param(JSON, b'{"errorDescription":true}', 400, "A185202",
                 "'errorDescription' must be a string or null, not a boolean.", id="description-boolean"),
    pytest.param(JSON, b'{"errorUri":{}}', 400, "A185202", "'errorUri' must be a string or null, not an object.",
                 id="uri-object"),
    pytest.param(JSON, b'{"errorDescription":"say \\"hi\\""}', 400, "A185202",
                 f"'errorDescription' has the character \"\\\"\" (U+0022) at index 4; {ALLOWED_DESCRIPTION}",
                 id="description-quote"),
    pytest.param(JSON, b'{"errorDescription":"a\\\\b"}', 400, "A185202",
                 f"'errorDescription' has the character \"\\\\\" (U+005C) at index 1; {ALLOWED_DESCRIPTION}",
                 id="description-backslash"),
    pytest.param(JSON, b'{"errorDescription":"line\\nbreak"}', 400, "A185202",
                 f"'errorDescription' has the character \"\\n\" (U+000A) at index 4; {ALLOWED_DESCRIPTION}",
                 id="description-newline"),
    pytest.param(JSON, '{"errorDescription":"d\u00e9j\u00e0"}'.encode(), 400, "A185202",
                 f"'errorDescription' has the character \"\\u00e9\" (U+00E9) at index 1; {ALLOWED_DESCRIPTION}",
                 id="description-non-ascii"),
    pytest.param(JSON, b'{"errorDescription":""}', 400, "A185202",
                 "'errorDescription' must not be empty; omit it or send null.", id="description-empty"),
    pytest.param(JSON, b'{"errorUri":"https://example.com/a b"}', 400, "A185202",
                 f"'errorUri' has the character \" \" (U+0020) at index 21; {ALLOWED_URI}", id="uri-space"),
    pytest.param(JSON, b'{"errorUri":"https://example.com/%zz"}', 400, "A185202",
                 "'errorUri' is \"https://example.com/%zz\", which is not a URI-reference (RFC 3986 4.1).",
                 id="uri-bad-percent"),
    pytest.param(JSON, b'{"errorUri":"http://ex<ample>.com"}', 400, "A185202",
                 "'errorUri' is \"http://ex<ample>.com\", which is not a URI-reference (RFC 3986 4.1).",
                 id="uri-angle-brackets"),
    pytest.param(JSON, b'{"errorUri":"a#b#c"}', 400, "A185202",
                 "'errorUri' is \"a#b#c\", which is not a URI-reference (RFC 3986 4.1).", id="uri-two-fragments"),
    pytest.param(JSON, b'{"errorUri":""}', 400, "A185202", "'errorUri' must not be empty; omit it or send null.",
                 id="uri-empty"),
    pytest.param(JSON, b'{"reason":', 400, "A185201",
                 "the body is not valid JSON: Expecting value at line 1 column 11.", id="json-truncated"),
    pytest.param(JSON, b"", 400, "A185201", "the body is not valid JSON: Expecting value at line 1 column 1.",
                 id="json-empty-body"),
    pytest.param(JSON, b'["ACCESS_DENIED"]', 400, "A185201", "the body must be a JSON object, not an array.",
                 id="json-array"),
    pytest.param(JSON, b'"ACCESS_DENIED"', 400, "A185201", "the body must be a JSON object, not str.",
                 id="json-string"),
    pytest.param(JSON, b"null", 400, "A185201", "the body must be a JSON object, not null.", id="json-null"),
    pytest.param(JSON, b"[" * 5000 + b"]" * 5000, 400, "A185201",
                 "the body is not acceptable JSON: it nests too deeply.", id="json-too-deep"),
    pytest.param(JSON, b'{"reason":"ACCESS_DENIED","x":' + b"[" * 64 + b"]" * 64 + b"}", 400, "A185201",
                 "the body is not acceptable JSON: it nests too deeply.", id="json-65-levels-in-an-unknown-field"),
    pytest.param(JSON, b'{"reason":"ACCESS_DENIED","reason":"UNKNOWN_USER_ID"}', 400, "A185201",
                 "the JSON has the member 'reason' more than once.", id="json-duplicate-member"),
    pytest.param(JSON, b'\xff{"reason":"ACCESS_DENIED"}', 400, "A185201",
                 "the body is not valid utf-8: byte 0 cannot be decoded.", id="json-not-utf8"),
    pytest.param(FORM, b"reason=ACCESS_DENIED&reason=SERVER_ERROR", 400, "A185201",
                 "the form has the field 'reason' more than once.", id="form-duplicate-field"),
    pytest.param(FORM, b"reason", 400, "A185201", "the form body is malformed: bad query field: 'reason'.",
                 id="form-field-without-value"),
    pytest.param(FORM, "errorDescription=d\u00e9j\u00e0".encode(), 400, "A185201",
                 "a form body must be ASCII (percent-encode other bytes); byte 18 is not.", id="form-raw-non-ascii"),
    pytest.param(FORM, b"errorDescription=%ff", 400, "A185201",
                 "a percent-encoded form value is not valid utf-8: invalid start byte.", id="form-bad-percent-utf8"),
    pytest.param({"Content-Type": "text/plain"}, b"reason=ACCESS_DENIED", 415, "A185203",
                 "Content-Type is 'text/plain'; use application/json or application/x-www-form-urlencoded.",
                 id="text-plain"),
    pytest.param({"Content-Type": "application/json; charset=klingon"}, b"{}", 415, "A185203",
                 "charset 'klingon' is not supported; use utf-8.", id="unknown-charset"),
    pytest.param({"Content-Type": "application/json; charset=rot13"}, b"{}", 415, "A185203",
                 "charset 'rot13' is not supported; use utf-8.", id="codec-that-is-not-a-text-encoding"),
    *(pytest.param({"Content-Type": f"application/json; charset={name}"}, b"{}", 415, "A185203",
                   f"charset '{name}' is not supported; use utf-8.", id=f"charset-{name}")
      for name in ("utf-7", "unicode_escape", "raw_unicode_escape", "cp037", "idna", "punycode", "utf-8-sig")),
    pytest.param({"Content-Type": "application/json; charset=utf-8; charset=utf-7"}, b"{}", 415, "A185203",
                 "Content-Type has the charset parameter more than once.", id="charset-twice"),
    pytest.param({"Content-Type": "application/x-www-form-urlencoded; Charset=latin-1;charset=utf-8"},
                 b"reason=ACCESS_DENIED", 415, "A185203",
                 "Content-Type has the charset parameter more than once.", id="form-charset-twice"),
    pytest.param(JSON, b'{"errorDescription":"' + b"x" * 16400 + b'"}', 413, "A185204",
                 "the body is 16423 bytes; the limit is 16384.", id="too-large"),
]  # fmt: skip


@pytest.mark.parametrize(("headers", "body", "status", "code", "detail"), REJECTED)
def test_rejected_bodies(
    client: Any, headers: dict[str, str], body: bytes, status: int, code: str, detail: str
) -> None:
    check(post(client, body, {**BEARER, **headers}), status, error(code, detail))


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-7", "application/json; charset=utf-8; charset=utf-7"]
)
def test_a_body_read_one_way_by_others_deletes_nothing(client: Any, sqlite_url: str, content_type: str) -> None:
    """Read as UTF-8, as any JSON parser would, this body is one member "x"; read as UTF-7,
    its ``+ACI-`` are quotes and it fails a ticket. Such a body is refused, the ticket kept."""
    store = store_from_url(sqlite_url)
    try:
        ticket = store.issue(SERVICE)
        hidden = f'{{"x":"+ACI-,+ACI-ticket+ACI-:+ACI-{ticket}+ACI-,+ACI-reason+ACI-:+ACI-ACCESS_DENIED"}}'
        assert json.loads(hidden).keys() == {"x"}
        assert json.loads(hidden.encode().decode("utf-7"))["ticket"] == ticket
        answer = post(client, hidden.encode(), {**BEARER, "Content-Type": content_type})
        assert answer.status == 415
        assert store.exists(SERVICE, ticket)
    finally:
        store.close()


def test_missing_content_type(client: Any) -> None:
    answer = client.request("POST", V3, headers=BEARER, body=b"")
    detail = "Content-Type is missing; use application/json or application/x-www-form-urlencoded."
    check(answer, 415, error("A185203", detail))


# -- authentication ------------------------------------------------------------------------

BEARER_CHALLENGE = 'Bearer realm="ciba-middleware"'
BASIC_CHALLENGE = 'Basic realm="ciba-middleware", charset="UTF-8"'


def invalid_token(what: str) -> str:
    return f'{BEARER_CHALLENGE}, error="invalid_token", error_description="The access token is {what}"'


AUTH = [
    pytest.param(V3, {}, 401, "A001202", "Authorization header is missing.", BEARER_CHALLENGE, id="v3-no-header"),
    pytest.param(V3, basic(SERVICE, API_SECRET), 401, "A185211",
                 "the Authorization header must use the Bearer or DPoP scheme.", BEARER_CHALLENGE,
                 id="v3-basic-scheme"),
    pytest.param(V3, {"Authorization": "Bearer"}, 401, "A185211", "the access token is malformed.",
                 invalid_token("malformed"), id="v3-bearer-without-token"),
    pytest.param(V3, {"Authorization": "Bearer a b"}, 401, "A185211", "the access token is malformed.",
                 invalid_token("malformed"), id="v3-token-with-space"),
    pytest.param(V3, {"Authorization": "Bearer wrong-token"}, 401, "A185211", "the access token is not valid.",
                 invalid_token("not valid"), id="v3-unknown-token"),
    pytest.param(V3, {"Authorization": f"Bearer {SERVICE_TOKEN}x"}, 401, "A185211",
                 "the access token is not valid.", invalid_token("not valid"), id="v3-near-miss-token"),
    pytest.param(V3, {"Authorization": f"Bearer {OTHER_TOKEN}"}, 403, "A185212",
                 f"the credentials do not cover the service '{SERVICE}'.", None, id="v3-another-services-token"),
    pytest.param(V3, {"Authorization": f"bearer {ORG_TOKEN}"}, 200, None, None, None, id="v3-org-token-inside"),
    pytest.param(f"/api/{OTHER_SERVICE}/backchannel/authentication/fail", {"Authorization": f"Bearer {ORG_TOKEN}"},
                 403, "A185212", f"the credentials do not cover the service '{OTHER_SERVICE}'.", None,
                 id="v3-org-token-outside"),
    pytest.param("/api/1001/backchannel/authentication/fail", {"Authorization": f"Bearer {ORG_TOKEN}"},
                 200, None, None, None, id="v3-org-token-second-service"),
    pytest.param(V3, {"Authorization": f"Bearer {SERVICE_TOKEN}"}, 200, None, None, None, id="v3-service-token"),
    pytest.param(V2, basic(SERVICE, API_SECRET), 200, None, None, None, id="v2-key-and-secret"),
    pytest.param(V2, {}, 401, "A001202", "Authorization header is missing.", BASIC_CHALLENGE, id="v2-no-header"),
    pytest.param(V2, {"Authorization": f"Bearer {SERVICE_TOKEN}"}, 200, None, None, None, id="v2-service-token"),
    pytest.param(V2, {"Authorization": f"Bearer {OTHER_TOKEN}"}, 200, None, None, None,
                 id="v2-another-services-token-names-its-own"),
    pytest.param(V2, {"Authorization": f"Bearer {ORG_TOKEN}"}, 401, "A185211",
                 "an organization token names no service, and API v2 has none in its path: "
                 "call /api/{serviceId}/backchannel/authentication/fail (API v3).",
                 invalid_token("not valid for API v2"), id="v2-org-token"),
    pytest.param(V2, {"Authorization": "Bearer wrong-token"}, 401, "A185211", "the access token is not valid.",
                 invalid_token("not valid"), id="v2-unknown-token"),
    pytest.param(V2, {"Authorization": "Digest x"}, 401, "A185211",
                 "the Authorization header must use the Basic, Bearer or DPoP scheme.", BASIC_CHALLENGE,
                 id="v2-digest-scheme"),
    pytest.param(V2, basic(SERVICE, "wrong"), 401, "A185211", "the API key and secret are not valid.",
                 BASIC_CHALLENGE, id="v2-wrong-secret"),
    pytest.param(V2, basic("999", API_SECRET), 401, "A185211", "the API key and secret are not valid.",
                 BASIC_CHALLENGE, id="v2-unknown-key"),
    pytest.param(V2, basic(OTHER_SERVICE, API_SECRET), 401, "A185211", "the API key and secret are not valid.",
                 BASIC_CHALLENGE, id="v2-another-services-secret"),
    pytest.param(V2, {"Authorization": "Basic !!!"}, 401, "A185211", "the Basic credentials are malformed.",
                 BASIC_CHALLENGE, id="v2-not-base64"),
    pytest.param(V2, {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, 401, "A185211",
                 "the Basic credentials are malformed.", BASIC_CHALLENGE, id="v2-no-colon"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "headers", "status", "code", "detail", "challenge"), AUTH)
def test_authentication(
    client: Any,
    path: str,
    headers: dict[str, str],
    status: int,
    code: str | None,
    detail: str | None,
    challenge: str | None,
) -> None:
    answer = post(client, b'{"reason":"ACCESS_DENIED"}', {**JSON, **headers}, path)
    if status == 200:
        check(answer, 200, success({"error": "access_denied"}, "FORBIDDEN"))
        return
    assert code is not None
    assert detail is not None
    check(answer, status, error(code, detail, action=False), {"WWW-Authenticate": challenge} if challenge else {})
    if challenge is None:
        assert "WWW-Authenticate" not in answer.headers


def test_authentication_comes_before_the_body(client: Any) -> None:
    """An unauthenticated caller learns nothing about body checks."""
    answer = post(client, b"not json", {"Content-Type": "text/plain"})
    assert answer.status == 401


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", [V3, V2])
def test_other_methods(client: Any, method: str, path: str) -> None:
    answer = client.request(method, path, headers=BEARER)
    check(answer, 405, error("A185213", f"use POST, not '{method}'.", action=False), {"Allow": "POST"})


def test_head_gets_405_without_body(client: Any) -> None:
    answer = client.request("HEAD", V3, headers=BEARER)
    assert answer.status == 405
    assert answer.headers["Allow"] == "POST"
    assert answer.body == b""


# -- tickets -------------------------------------------------------------------------------


def test_fail_deletes_the_ticket(client: Any, sqlite_url: str) -> None:
    store = store_from_url(sqlite_url)
    ticket = store.issue(SERVICE)
    body = json.dumps({"ticket": ticket, "reason": "UNKNOWN_USER_ID"}).encode()
    answer = post(client, body, {**BEARER, **JSON})
    check(answer, 200, success({"error": "unknown_user_id"}, "BAD_REQUEST"))
    assert not store.exists(SERVICE, ticket)
    # Failing it again answers the same: a ticket's existence is not revealed.
    assert post(client, body, {**BEARER, **JSON}).body == answer.body


def test_v2_deletes_the_ticket_of_the_keys_service(client: Any, sqlite_url: str) -> None:
    store = store_from_url(sqlite_url)
    ticket = store.issue(SERVICE)
    answer = post(client, urlencode({"ticket": ticket}).encode(), {**basic(SERVICE, API_SECRET), **FORM}, V2)
    assert answer.status == 200
    assert not store.exists(SERVICE, ticket)


def test_a_service_cannot_delete_another_services_ticket(client: Any, sqlite_url: str) -> None:
    store = store_from_url(sqlite_url)
    ticket = store.issue(SERVICE)
    other = f"/api/{OTHER_SERVICE}/backchannel/authentication/fail"
    body = json.dumps({"ticket": ticket, "reason": "ACCESS_DENIED"}).encode()
    answer = post(client, body, {"Authorization": f"Bearer {OTHER_TOKEN}", **JSON}, other)
    check(answer, 200, success({"error": "access_denied"}, "FORBIDDEN"))
    assert store.exists(SERVICE, ticket)
    answer = post(client, body, {**basic(OTHER_SERVICE, "api-secret-42"), **JSON}, V2)
    assert answer.status == 200
    assert store.exists(SERVICE, ticket)
    # An unauthorized call deletes nothing either.
    assert post(client, body, {"Authorization": f"Bearer {OTHER_TOKEN}", **JSON}).status == 403
    assert store.exists(SERVICE, ticket)
    assert post(client, body, {"Authorization": f"Bearer {OTHER_TOKEN}", **JSON}, V3).status == 403
    assert store.exists(SERVICE, ticket)


@pytest.mark.parametrize("ticket", ["", "not a ticket", "x" * 1000, "\u00e9" * 43, "a;DROP TABLE ciba_tickets"])
def test_tickets_that_cannot_exist_answer_the_same(client: Any, ticket: str) -> None:
    answer = post(client, json.dumps({"ticket": ticket, "reason": "ACCESS_DENIED"}).encode(), {**BEARER, **JSON})
    check(answer, 200, success({"error": "access_denied"}, "FORBIDDEN"))


def test_store_failure_is_the_contracts_500(tmp_path: Path) -> None:
    path = tmp_path / "gone.sqlite3"
    store = store_from_url(f"sqlite:///{path}")
    ticket = store.issue(SERVICE)
    store.close()
    path.unlink()
    path.mkdir()  # the store can no longer open its file: every call fails
    middleware = BackchannelFailMiddleware(app, store=store, verifier=StaticTokenVerifier(GRANTS))
    answer = InProcess(middleware).request(
        "POST", V3, headers={**BEARER, **JSON}, body=json.dumps({"ticket": ticket}).encode()
    )
    check(answer, 500, error("A185101", "the ticket store failed; the ticket may not have been deleted."))


def test_a_chunked_body_needs_a_server_that_terminates_input() -> None:
    """Without Content-Length and without wsgi.input_terminated, the end of a body is unknown."""
    import io

    middleware = BackchannelFailMiddleware(app, store=store_from_url("memory://"), verifier=StaticTokenVerifier(GRANTS))
    body = b'{"reason":"ACCESS_DENIED"}'
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": V3,
        "CONTENT_TYPE": "application/json",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "HTTP_AUTHORIZATION": f"Bearer {SERVICE_TOKEN}",
        "wsgi.input": io.BytesIO(body),
    }
    statuses: list[str] = []
    answer = b"".join(middleware(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert statuses == ["400 Bad Request"]
    detail = "a body without Content-Length needs a WSGI server that sets wsgi.input_terminated."
    assert json.loads(answer) == error("A185201", detail)
    # Where the server terminates the input, the same body is read to its end.
    environ.update({"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True})
    answer = b"".join(middleware(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert json.loads(answer)["action"] == "FORBIDDEN"
