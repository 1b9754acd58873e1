"""Every route of the CIBA family through the WSGI middleware: each error path, with its
status, result code and action (docs/api.md)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import API_SECRET, OTHER_SERVICE, OTHER_TOKEN, SERVICE, SERVICE_TOKEN, basic, bearer
from werkzeug.test import Client

from ciba_middleware.config import Settings
from ciba_middleware.core import FailApi
from ciba_middleware.middleware import BackchannelFailMiddleware
from ciba_middleware.response import not_found_app

from ._family import CODED, GRANT, OTHER, PING, POLL, PUSH, SECRET, family_env, form, signing_key

ROUTES = [
    "backchannel/authentication",
    "backchannel/authentication/issue",
    "backchannel/authentication/complete",
    "auth/token",
    "auth/introspection",
    "service/jwks/get",
    "service/configuration",
]
POSTED = ROUTES[:5]


class Family:
    """A client of the middleware's family routes, with helpers for each step."""

    def __init__(self, client: Client, service: str = SERVICE, token: str = SERVICE_TOKEN) -> None:
        self.client = client
        self.service = service
        self.token = token

    def post(self, route: str, body: dict[str, Any] | None = None, **kw: Any) -> tuple[int, dict[str, Any]]:
        headers = kw.pop("headers", bearer(self.token))
        response = self.client.post(f"/api/{self.service}/{route}", json=body or {}, headers=headers, **kw)
        return response.status_code, json.loads(response.get_data())

    def authenticate(self, client_id: str = POLL, secret: str = SECRET, **params: str) -> dict[str, Any]:
        parameters = form(**{"scope": "openid", "login_hint": "alice", **params})
        status, body = self.post(
            "backchannel/authentication", {"parameters": parameters, "clientId": client_id, "clientSecret": secret}
        )
        assert status == 200, body
        return body

    def start(self, client_id: str = POLL, **params: str) -> tuple[str, str]:
        ticket = self.authenticate(client_id, **params)["ticket"]
        _status, body = self.post("backchannel/authentication/issue", {"ticket": ticket})
        assert body["action"] == "OK", body
        return ticket, body["authReqId"]

    def token_call(self, auth_req_id: str | None, client_id: str | None = POLL, **extra: str) -> dict[str, Any]:
        params = {"grant_type": GRANT, **extra}
        if auth_req_id is not None:
            params["auth_req_id"] = auth_req_id
        body: dict[str, Any] = {"parameters": form(**params)}
        if client_id is not None:
            body.update(clientId=client_id, clientSecret=SECRET)
        status, answer = self.post("auth/token", body)
        assert status == 200, answer
        return answer

    def granted(self, client_id: str = POLL, **complete: Any) -> dict[str, Any]:
        ticket, auth_req_id = self.start(client_id)
        status, done = self.post(
            "backchannel/authentication/complete",
            {"ticket": ticket, "result": "AUTHORIZED", "subject": "alice", **complete},
        )
        assert status == 200, done
        return self.token_call(auth_req_id, client_id)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return signing_key(tmp_path_factory.mktemp("key"))[0]


@pytest.fixture
def build(tmp_path: Path, key_file: Path) -> Iterator[Callable[..., Family]]:
    built: list[BackchannelFailMiddleware] = []

    def make(**overrides: str) -> Family:
        env = family_env(tmp_path, key_file, CIBA_AUDIT_LOG="off", **overrides)
        middleware = Settings.from_mapping(env).build_middleware(not_found_app, announce=False)
        built.append(middleware)
        return Family(Client(middleware))

    yield make
    for middleware in built:
        middleware.store.close()


@pytest.fixture
def family(build: Callable[..., Family]) -> Family:
    return build()


def error(body: dict[str, Any]) -> str:
    value: str = json.loads(body["responseContent"])["error"]
    return value


# -- what every route shares with the fail API ---------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_wrong_method(family: Family, route: str) -> None:
    methods = "GET" if route == "service/jwks/get" else "GET, POST" if route == "service/configuration" else "POST"
    wrong = "PUT" if "GET" in methods else "GET"
    response = family.client.open(f"/api/{SERVICE}/{route}", method=wrong, headers=bearer(SERVICE_TOKEN))
    assert response.status_code == 405
    assert response.headers["Allow"] == methods
    body = response.get_json()
    assert body["resultCode"] == "A185213"
    assert body["resultMessage"].startswith(f"[A185213] /{route}, use ")


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        pytest.param({}, 401, "A001202", id="missing"),
        pytest.param(bearer("not-a-token"), 401, "A185211", id="invalid"),
        pytest.param(bearer(OTHER_TOKEN), 403, "A185212", id="not-covered"),
    ],
)
def test_caller_authentication(family: Family, route: str, headers: dict[str, str], status: int, code: str) -> None:
    method = "GET" if route.startswith("service/") else "POST"
    response = family.client.open(f"/api/{SERVICE}/{route}", method=method, headers=headers, json={})
    assert response.status_code == status
    assert response.get_json()["resultCode"] == code
    assert "action" not in response.get_json()


@pytest.mark.parametrize("route", POSTED)
def test_body_framing(family: Family, route: str) -> None:
    path = f"/api/{SERVICE}/{route}"
    response = family.client.post(path, data="x", headers=bearer(SERVICE_TOKEN), content_type="text/plain")
    assert (response.status_code, response.get_json()["resultCode"]) == (415, "A185203")
    response = family.client.post(path, data="{", headers=bearer(SERVICE_TOKEN), content_type="application/json")
    assert (response.status_code, response.get_json()["resultCode"]) == (400, "A185201")
    response = family.client.post(
        path, data="x" * 20000, headers=bearer(SERVICE_TOKEN), content_type="application/json"
    )
    assert (response.status_code, response.get_json()["resultCode"]) == (413, "A185204")


@pytest.mark.parametrize(
    ("route", "code", "action"),
    [
        ("backchannel/authentication", "A179201", "INTERNAL_SERVER_ERROR"),
        ("backchannel/authentication/issue", "A186201", "INTERNAL_SERVER_ERROR"),
        ("backchannel/authentication/complete", "A187201", "SERVER_ERROR"),
        ("auth/token", "A188201", "INTERNAL_SERVER_ERROR"),
    ],
)
def test_a_required_field_missing(family: Family, route: str, code: str, action: str) -> None:
    status, body = family.post(route, {})
    assert (status, body["resultCode"], body["action"]) == (400, code, action)
    assert json.loads(body["responseContent"]) == {"error": "server_error"}
    status, body = family.post(route, {"parameters": 42, "ticket": 42})
    assert (status, body["resultCode"]) == (400, code[:-1] + "2")


def test_v2_and_form_bodies(family: Family) -> None:
    response = family.client.post(
        "/api/backchannel/authentication",
        data={"parameters": form(scope="openid", login_hint="alice"), "clientId": POLL, "clientSecret": SECRET},
        headers=basic(SERVICE, API_SECRET),
    )
    assert response.get_json()["action"] == "USER_IDENTIFICATION"


def test_not_served_without_clients(tmp_path: Path) -> None:
    env = family_env(tmp_path, tmp_path / "unused")
    for name in ("CIBA_CLIENTS", "CIBA_ISSUER", "CIBA_SIGNING_KEY_FILE"):
        env.pop(name)
    middleware = Settings.from_mapping(env).build_middleware(not_found_app, announce=False)
    try:
        response = Client(middleware).post(f"/api/{SERVICE}/auth/token", headers=bearer(SERVICE_TOKEN))
        assert response.status_code == 404
        assert response.get_json() == {"error": "not_found"}
    finally:
        middleware.store.close()


def test_unexpected_exception(tmp_path: Path, key_file: Path) -> None:
    from ciba_middleware.ciba.family import Family as Handlers
    from ciba_middleware.ciba.family import FamilyOptions
    from ciba_middleware.ciba.keys import SigningKey
    from ciba_middleware.stores.memory import MemoryTicketStore

    def broken() -> Any:
        raise RuntimeError("clients unavailable")

    store = MemoryTicketStore()
    handlers = Handlers(
        store=store,
        clients=broken,
        key=SigningKey.from_file(str(key_file)),
        options=FamilyOptions("https://op.example"),
    )
    api = FailApi(
        store=store, verifier=Settings.from_mapping(family_env(tmp_path, key_file)).build_verifier(), family=handlers
    )
    client = Family(Client(BackchannelFailMiddleware.around(not_found_app, api)))
    status, body = client.post(
        "auth/token", {"parameters": form(grant_type=GRANT, client_id=POLL, client_secret=SECRET)}
    )
    assert (status, body["resultCode"], body["action"]) == (500, "A001101", "INTERNAL_SERVER_ERROR")


def test_store_failure(build: Callable[..., Family], tmp_path: Path) -> None:
    where = tmp_path / "gone"
    where.mkdir()
    family = build(CIBA_STORE_URL=f"sqlite:///{where / 'ciba.sqlite3'}")
    shutil.rmtree(where)
    time.sleep(0.15)  # past the store's look at its path
    status, body = family.post(
        "backchannel/authentication",
        {"parameters": form(scope="openid", login_hint="alice"), "clientId": POLL, "clientSecret": SECRET},
    )
    assert (status, body["resultCode"], body["action"]) == (500, "A179101", "INTERNAL_SERVER_ERROR")
    assert json.loads(body["responseContent"]) == {"error": "server_error"}


# -- /backchannel/authentication -------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_id", "secret", "params", "action", "expected", "code"),
    [
        pytest.param("nobody", SECRET, {}, "UNAUTHORIZED", "invalid_client", "A179303", id="unknown-client"),
        pytest.param(POLL, "wrong", {}, "UNAUTHORIZED", "invalid_client", "A179303", id="wrong-secret"),
        pytest.param("", "", {}, "UNAUTHORIZED", "invalid_client", "A179303", id="no-client"),
        pytest.param(POLL, SECRET, {"request": "eyJ.x.y"}, "BAD_REQUEST", "invalid_request", "A179301", id="request"),
        pytest.param(POLL, SECRET, {"scope": ""}, "BAD_REQUEST", "invalid_request", "A179301", id="no-scope"),
        pytest.param(POLL, SECRET, {"scope": "profile"}, "BAD_REQUEST", "invalid_scope", "A179302", id="no-openid"),
        pytest.param(
            CODED, SECRET, {"scope": "openid email"}, "BAD_REQUEST", "invalid_scope", "A179302", id="scope-not-allowed"
        ),
        pytest.param(POLL, SECRET, {"login_hint": ""}, "BAD_REQUEST", "invalid_request", "A179301", id="no-hint"),
        pytest.param(
            POLL, SECRET, {"id_token_hint": "x.y.z"}, "BAD_REQUEST", "invalid_request", "A179301", id="two-hints"
        ),
        pytest.param(PING, SECRET, {}, "BAD_REQUEST", "invalid_request", "A179301", id="ping-no-token"),
        pytest.param(
            PING,
            SECRET,
            {"client_notification_token": "a b"},
            "BAD_REQUEST",
            "invalid_request",
            "A179301",
            id="ping-bad-token",
        ),
        pytest.param(
            PUSH,
            SECRET,
            {"client_notification_token": "a" * 1025},
            "BAD_REQUEST",
            "invalid_request",
            "A179301",
            id="push-long-token",
        ),
        pytest.param(CODED, SECRET, {}, "BAD_REQUEST", "missing_user_code", "A179304", id="no-user-code"),
        pytest.param(
            POLL, SECRET, {"requested_expiry": "ten"}, "BAD_REQUEST", "invalid_request", "A179301", id="expiry-word"
        ),
        pytest.param(
            POLL, SECRET, {"requested_expiry": "0"}, "BAD_REQUEST", "invalid_request", "A179301", id="expiry-zero"
        ),
        pytest.param(
            POLL, SECRET, {"requested_expiry": "86401"}, "BAD_REQUEST", "invalid_request", "A179301", id="expiry-long"
        ),
    ],
)
def test_authentication_refused(
    family: Family, client_id: str, secret: str, params: dict[str, str], action: str, expected: str, code: str
) -> None:
    parameters = form(**{"scope": "openid", "login_hint": "alice", **params})
    status, body = family.post(
        "backchannel/authentication", {"parameters": parameters, "clientId": client_id, "clientSecret": secret}
    )
    assert (status, body["action"], error(body), body["resultCode"]) == (200, action, expected, code)
    assert "ticket" not in body


def test_authentication_parameter_twice(family: Family) -> None:
    _status, body = family.post(
        "backchannel/authentication",
        {"parameters": "scope=openid&scope=openid&login_hint=a", "clientId": POLL, "clientSecret": SECRET},
    )
    assert (body["action"], error(body)) == ("BAD_REQUEST", "invalid_request")


def test_another_services_client(family: Family) -> None:
    # "app" exists in the other service, with another secret: not this service's client.
    _status, body = family.post(
        "backchannel/authentication",
        {"parameters": form(scope="openid", login_hint="a"), "clientId": POLL, "clientSecret": "other-service-secret"},
    )
    assert body["action"] == "UNAUTHORIZED"


def test_client_secret_post_and_user_code(family: Family) -> None:
    _status, body = family.post(
        "backchannel/authentication",
        {"parameters": form(scope="openid", login_hint="a", user_code="1234", client_id=CODED, client_secret=SECRET)},
    )
    assert body["action"] == "USER_IDENTIFICATION"
    assert (body["userCode"], body["userCodeRequired"]) == ("1234", True)


def test_requested_expiry_as_a_string(family: Family) -> None:
    body = family.authenticate(requested_expiry="30")
    assert body["requestedExpiry"] == 30
    _status, issued = family.post("backchannel/authentication/issue", {"ticket": body["ticket"]})
    assert issued["expiresIn"] == 30


def test_id_token_hint(family: Family) -> None:
    id_token = json.loads(family.granted()["responseContent"])["id_token"]
    body = family.authenticate(login_hint="", id_token_hint=id_token)
    assert (body["hintType"], body["sub"]) == ("ID_TOKEN_HINT", "alice")
    _status, refused = family.post(
        "backchannel/authentication",
        {
            "parameters": form(scope="openid", id_token_hint=id_token[:-4] + "AAAA"),
            "clientId": POLL,
            "clientSecret": SECRET,
        },
    )
    assert error(refused) == "invalid_request"


# -- /backchannel/authentication/issue --------------------------------------------------------


def test_issue_invalid_tickets(family: Family, build: Callable[..., Family]) -> None:
    def issued(ticket: str, on: Family = family) -> str:
        status, body = on.post("backchannel/authentication/issue", {"ticket": ticket})
        assert status == 200
        return str(body["action"])

    assert issued("not a ticket") == "INVALID_TICKET"
    assert issued("A" * 43) == "INVALID_TICKET"
    ticket = family.authenticate()["ticket"]
    other = Family(family.client, OTHER_SERVICE, OTHER_TOKEN)
    assert issued(ticket, other) == "INVALID_TICKET"  # another service's: as unknown
    assert issued(ticket) == "OK"
    assert issued(ticket) == "INVALID_TICKET"  # once
    short = build(CIBA_AUTH_REQ_ID_LIFETIME="1")
    expiring = short.authenticate()["ticket"]
    time.sleep(1.1)
    assert issued(expiring, short) == "INVALID_TICKET"
    _status, body = short.post("backchannel/authentication/issue", {"ticket": expiring})
    assert (body["resultCode"], "authReqId" in body) == ("A186301", False)


# -- /backchannel/authentication/complete -----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"result": "MAYBE"}, "A187202", id="bad-result"),
        pytest.param({"result": "AUTHORIZED"}, "A187202", id="no-subject"),
        pytest.param({"result": "AUTHORIZED", "subject": "a", "authTime": -1}, "A187202", id="bad-auth-time"),
        pytest.param({"result": "AUTHORIZED", "subject": "a", "claims": "[1"}, "A187202", id="bad-claims"),
        pytest.param({"result": "AUTHORIZED", "subject": "a", "scopes": [1]}, "A187202", id="bad-scopes"),
    ],
)
def test_complete_bad_fields(family: Family, fields: dict[str, Any], code: str) -> None:
    ticket, _ = family.start()
    status, body = family.post("backchannel/authentication/complete", {"ticket": ticket, **fields})
    assert (status, body["resultCode"], body["action"]) == (400, code, "SERVER_ERROR")


def test_complete_tickets(family: Family) -> None:
    def completed(ticket: str, on: Family = family) -> tuple[int, str]:
        status, body = on.post("backchannel/authentication/complete", {"ticket": ticket, "result": "ACCESS_DENIED"})
        return status, str(body["resultCode"])

    assert completed("A" * 43) == (400, "A187203")
    unissued = family.authenticate()["ticket"]
    assert completed(unissued) == (400, "A187204")
    ticket, _ = family.start()
    assert completed(ticket, Family(family.client, OTHER_SERVICE, OTHER_TOKEN)) == (400, "A187203")
    assert completed(ticket) == (200, "A187001")
    assert completed(ticket) == (400, "A187203")  # once


def test_complete_claims_and_scopes(family: Family, key_file: Path) -> None:
    granted = family.granted(
        POLL, subject="alice", claims=json.dumps({"email": "a@example.com", "iss": "forged"}), scopes=["openid"]
    )
    from ciba_middleware.ciba.keys import SigningKey

    claims = SigningKey.from_file(str(key_file)).verify(json.loads(granted["responseContent"])["id_token"])
    assert claims is not None
    assert (claims["email"], claims["iss"]) == ("a@example.com", "https://op.example")
    assert granted["scopes"] == ["openid"]


# -- /auth/token ------------------------------------------------------------------------------


def test_token_refusals(family: Family) -> None:
    _, auth_req_id = family.start()
    _status, body = family.post("auth/token", {"parameters": form(grant_type="client_credentials")})
    assert (body["action"], error(body), body["resultCode"]) == ("BAD_REQUEST", "unsupported_grant_type", "A188302")
    _status, body = family.post("auth/token", {"parameters": form(auth_req_id=auth_req_id)})
    assert (error(body), body["resultCode"]) == ("invalid_request", "A188301")
    _status, body = family.post("auth/token", {"parameters": "grant_type=a&grant_type=b"})
    assert (error(body), body["resultCode"]) == ("invalid_request", "A188301")
    body = family.token_call(auth_req_id, client_id=None)
    assert (body["action"], error(body), body["resultCode"]) == ("INVALID_CLIENT", "invalid_client", "A188303")
    body = family.token_call(None)
    assert (error(body), body["resultCode"]) == ("invalid_request", "A188301")
    body = family.token_call("unknown-auth-req-id")
    assert (error(body), body["resultCode"]) == ("invalid_grant", "A188308")
    assert error(family.token_call(auth_req_id, OTHER)) == "invalid_grant"
    assert error(family.token_call(auth_req_id)) == "authorization_pending"


def test_token_client_secret_post(family: Family) -> None:
    ticket, auth_req_id = family.start()
    family.post("backchannel/authentication/complete", {"ticket": ticket, "result": "AUTHORIZED", "subject": "a"})
    _status, body = family.post(
        "auth/token",
        {"parameters": form(grant_type=GRANT, auth_req_id=auth_req_id, client_id=POLL, client_secret=SECRET)},
    )
    assert (body["action"], body["clientAuthMethod"]) == ("OK", "CLIENT_SECRET_POST")


def test_one_service_never_sees_anothers_requests(family: Family) -> None:
    _, auth_req_id = family.start()
    other = Family(family.client, OTHER_SERVICE, OTHER_TOKEN)
    _status, body = other.post(
        "auth/token",
        {
            "parameters": form(grant_type=GRANT, auth_req_id=auth_req_id),
            "clientId": POLL,
            "clientSecret": "other-service-secret",
        },
    )
    assert error(body) == "invalid_grant"


def test_no_slow_down_without_interval(build: Callable[..., Family]) -> None:
    family = build(CIBA_POLLING_INTERVAL="0")
    _, auth_req_id = family.start()
    assert [error(family.token_call(auth_req_id)) for _ in range(3)] == ["authorization_pending"] * 3


def test_poll_answers_byte_for_byte(build: Callable[..., Family]) -> None:
    """authorization_pending and slow_down are encoded once (Reply.wire) and sent as they
    were encoded for each call, with the call's own Request-Id."""
    family = build(CIBA_POLLING_INTERVAL="5")
    _, auth_req_id = family.start()
    body = {"parameters": form(grant_type=GRANT, auth_req_id=auth_req_id), "clientId": POLL, "clientSecret": SECRET}
    sent = [family.client.post(f"/api/{SERVICE}/auth/token", json=body, headers=bearer(family.token)) for _ in range(2)]
    assert [r.get_data() for r in sent] == [
        b'{"resultCode":"A188304","resultMessage":"[A188304] The token request is refused: authorization_pending.",'
        b'"action":"BAD_REQUEST","responseContent":"{\\"error\\":\\"authorization_pending\\",'
        b'\\"error_description\\":\\"the user has not decided yet\\"}"}',
        b'{"resultCode":"A188305","resultMessage":"[A188305] The token request is refused: slow_down.",'
        b'"action":"BAD_REQUEST","responseContent":"{\\"error\\":\\"slow_down\\",'
        b'\\"error_description\\":\\"poll at most every 5 seconds\\"}"}',
    ]
    for response in sent:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Content-Length"] == str(len(response.get_data()))
    assert sent[0].headers["Request-Id"] != sent[1].headers["Request-Id"]


def test_wired_is_what_the_api_encodes() -> None:
    """Reply.wire holds the bytes family_answer's payload encodes to, null fields left out."""
    from types import MappingProxyType

    from ciba_middleware.ciba.answers import ENDPOINTS, ApiAction, Reply, encode_answer, wired
    from ciba_middleware.core import family_answer
    from ciba_middleware.response import HEADERS

    fields = {"resultCode": "A188304", "resultMessage": 'é "x"', "action": "BAD_REQUEST", "gone": None}
    body = MappingProxyType(fields)
    reply = Reply(body, ApiAction.BAD_REQUEST, "A188304")
    assert reply.wire is None
    headers, answer = wired(reply).wire or ((), b"")
    assert answer == encode_answer(family_answer(ENDPOINTS["auth/token"], reply, None)[1])
    assert answer == b'{"resultCode":"A188304","resultMessage":"\\u00e9 \\"x\\"","action":"BAD_REQUEST"}'
    assert headers == (*HEADERS, ("Content-Length", str(len(answer))))
    assert wired(reply)[:4] == reply[:4]


# -- /auth/introspection ----------------------------------------------------------------------


def test_introspection(family: Family, build: Callable[..., Family]) -> None:
    access_token = family.granted(subject="alice")["accessToken"]

    def introspect(on: Family = family, **fields: Any) -> tuple[str, str, str]:
        status, body = on.post("auth/introspection", fields)
        assert status == 200
        return body["action"], body["resultCode"], body.get("responseContent", "")

    assert introspect()[:2] == ("BAD_REQUEST", "A189301")
    assert introspect(token="unknown")[:2] == ("UNAUTHORIZED", "A189302")
    assert introspect(token=access_token, scopes=["openid", "email"])[:2] == ("FORBIDDEN", "A189303")
    assert introspect(token=access_token, subject="bob")[:2] == ("FORBIDDEN", "A189304")
    assert introspect(token=access_token, scopes=["openid"], subject="alice")[:2] == ("OK", "A056001")
    other = Family(family.client, OTHER_SERVICE, OTHER_TOKEN)
    assert introspect(other, token=access_token)[:2] == ("UNAUTHORIZED", "A189302")
    short = build(CIBA_ACCESS_TOKEN_LIFETIME="1")
    expiring = short.granted(subject="alice")["accessToken"]
    time.sleep(1.1)
    action, code, content = introspect(short, token=expiring)
    assert (action, code) == ("UNAUTHORIZED", "A189302")
    assert content.startswith('Bearer error="invalid_token"')


def test_access_tokens_are_stored_as_digests(family: Family, tmp_path: Path) -> None:
    import contextlib
    import sqlite3

    granted = family.granted(subject="alice")
    with contextlib.closing(sqlite3.connect(tmp_path / "ciba.sqlite3")) as conn:
        dump = "\n".join(conn.iterdump())
    assert granted["accessToken"] not in dump
    assert os.path.getsize(tmp_path / "ciba.sqlite3") > 0
