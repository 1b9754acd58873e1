"""Every path of the demo's POST /backchannel/authentication, over HTTP against gunicorn.

Rejections by the server's rules go through the fail API (in process here): the client
gets the exact answer, the audit log shows the ticket deleted, and the store is left as
it was. Errors the endpoint answers itself never reach the fail API and leave no ticket.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from _demo import (
    CLIENT_HEADERS,
    FAILED,
    NOW,
    REASON_OF,
    Demo,
    check_failed_through_the_api,
    headers_of,
    hint,
    id_token_hint,
    start_demo,
)
from conftest import SERVICE, SERVICE_TOKEN


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo failing requests in process (the default), two gunicorn workers."""
    running = start_demo(tmp_path_factory.mktemp("demo"))
    yield running
    running.server.stop()


@pytest.mark.parametrize(("form", "auth", "status", "error", "description"), FAILED)
def test_each_rule_fails_through_the_api_and_deletes_the_ticket(
    demo: Demo, form: dict[str, Any], auth: tuple[str, str] | None, status: int, error: str, description: str
) -> None:
    check_failed_through_the_api(demo, form, auth, status, error, description)


def test_every_reason_is_reached() -> None:
    reached = {p.values[3] for p in FAILED}
    assert {REASON_OF[e] for e in reached} == set(REASON_OF.values())


SUCCEEDS = [
    pytest.param({"scope": "openid", "login_hint": "alice"}, 120, id="login_hint"),
    pytest.param({"scope": "openid profile email", "login_hint": "bob", "user_code": "4711"}, 120, id="user-code"),
    pytest.param(
        {"scope": "openid", "login_hint_token": hint({"sub": "alice", "exp": NOW + 600})}, 120, id="login_hint_token"
    ),
    pytest.param(
        {"scope": "openid", "id_token_hint": id_token_hint({"sub": "alice", "aud": "demo-client", "exp": NOW - 3600})},
        120,
        id="expired-id_token_hint-is-still-a-hint",
    ),
    pytest.param(
        {
            "scope": "openid payments",
            "login_hint": "alice",
            "binding_message": "Pay 20 EUR to shop #4711",
            "resource": ["https://api.example.com/payments", "https://api.example.com/accounts"],
            "acr_values": "urn:mace:incommon:iap:silver",
        },
        120,
        id="binding-message-and-resources",
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "alice", "binding_message": "Überweisung 20 € an Café Zürich, Rechnung 4711"},
        120,
        id="long-non-ascii-binding-message",
    ),
    pytest.param({"scope": "openid", "login_hint": "alice", "requested_expiry": "60"}, 60, id="requested-expiry"),
    pytest.param(
        {"scope": "openid", "login_hint": "alice", "requested_expiry": "86400"}, 86400, id="requested-expiry-a-day"
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "alice", "requested_expiry": "0030"}, 30, id="requested-expiry-leading-zeros"
    ),
    pytest.param({"scope": "openid", "login_hint": "alice", "user_code": ""}, 120, id="empty-value-is-omitted"),
]


@pytest.mark.parametrize(("form", "expires_in"), SUCCEEDS)
def test_success_issues_an_auth_req_id_and_takes_the_ticket(demo: Demo, form: dict[str, Any], expires_in: int) -> None:
    before = demo.ticket_expiry()
    response = demo.post(form)
    assert (response.status_code, headers_of(response)) == (200, CLIENT_HEADERS)
    body = response.json()
    assert (sorted(body), body["expires_in"], body["interval"]) == (
        ["auth_req_id", "expires_in", "interval"],
        expires_in,
        5,
    )
    # 43 URL-safe characters: 256 random bits (CIBA Core 7.3 asks for at least 128).
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", body["auth_req_id"])
    # The issue took the ticket (the fail API can no longer fail it): the store is as before.
    assert demo.ticket_expiry().keys() == before.keys()
    assert demo.new_audit() == []


def test_auth_req_ids_differ(demo: Demo) -> None:
    ids = {demo.post({"scope": "openid", "login_hint": "alice"}).json()["auth_req_id"] for _ in range(5)}
    assert len(ids) == 5


BASIC = 'Basic realm="example_app"'
# (request keyword arguments, status, error, error_description, WWW-Authenticate)
ANSWERED_BY_THE_ENDPOINT = [
    pytest.param(
        {"auth": None},
        401,
        "invalid_client",
        "client authentication failed",
        BASIC,
        id="no-client-authentication",
    ),
    pytest.param(
        {"auth": ("demo-client", "wrong")},
        401,
        "invalid_client",
        "client authentication failed",
        BASIC,
        id="bad-secret",
    ),
    pytest.param(
        {"auth": ("nobody", "demo-secret")},
        401,
        "invalid_client",
        "client authentication failed",
        BASIC,
        id="unknown-client",
    ),
    pytest.param(
        {"auth": None, "headers": {"Authorization": "Basic !!!"}},
        401,
        "invalid_client",
        "The Basic credentials are malformed.",
        BASIC,
        id="malformed-basic",
    ),
    pytest.param(
        {"auth": None, "headers": {"Authorization": f"Bearer {SERVICE_TOKEN}"}},
        401,
        "invalid_client",
        "Authenticate the client with HTTP Basic or the form.",
        BASIC,
        id="bearer-instead-of-basic",
    ),
    pytest.param(
        {"form": None, "json": {"scope": "openid", "login_hint": "alice"}},
        400,
        "invalid_request",
        "The request body must be application/x-www-form-urlencoded.",
        None,
        id="json-body",
    ),
    pytest.param(
        {"form": {"login_hint": "alice"}},
        400,
        "invalid_request",
        "scope is missing",
        None,
        id="no-scope",
    ),
    pytest.param(
        {"form": {"scope": "profile", "login_hint": "alice"}},
        400,
        "invalid_scope",
        "scope must include openid",
        None,
        id="scope-without-openid",
    ),
    pytest.param(
        {"form": {"scope": "openid admin", "login_hint": "alice"}},
        400,
        "invalid_scope",
        "a requested scope is not allowed for this client",
        None,
        id="unknown-scope",
    ),
    pytest.param(
        {"form": {"scope": "openid"}},
        400,
        "invalid_request",
        "no hint: send exactly one of login_hint, login_hint_token, id_token_hint",
        None,
        id="no-hint",
    ),
    pytest.param(
        {"form": {"scope": "openid", "login_hint": "", "id_token_hint": ""}},
        400,
        "invalid_request",
        "no hint: send exactly one of login_hint, login_hint_token, id_token_hint",
        None,
        id="empty-hints-are-omitted",
    ),
    pytest.param(
        {"form": {"scope": "openid", "login_hint": "alice", "login_hint_token": hint({"sub": "alice"})}},
        400,
        "invalid_request",
        "more than one hint: send exactly one of login_hint, login_hint_token, id_token_hint",
        None,
        id="two-hints",
    ),
    pytest.param(
        {"form": {"scope": "openid", "id_token_hint": hint({"sub": "alice"})}},
        400,
        "invalid_request",
        "id_token_hint is not an ID token of this server",
        None,
        id="id-token-hint-not-ours",
    ),
    pytest.param(
        {"form": {"scope": "openid", "login_hint": "alice", "requested_expiry": "0"}},
        400,
        "invalid_request",
        "requested_expiry must be a whole number of seconds from 1 to 86400",
        None,
        id="requested-expiry-zero",
    ),
    pytest.param(
        {"form": {"scope": "openid", "login_hint": "alice", "requested_expiry": "000"}},
        400,
        "invalid_request",
        "requested_expiry must be a whole number of seconds from 1 to 86400",
        None,
        id="requested-expiry-zeros",
    ),
    pytest.param(
        {"form": {"scope": "openid", "login_hint": "alice", "requested_expiry": "1e3"}},
        400,
        "invalid_request",
        "requested_expiry must be a whole number of seconds from 1 to 86400",
        None,
        id="requested-expiry-not-digits",
    ),
    pytest.param(
        {"form": {"scope": "openid", "login_hint": "alice", "requested_expiry": "-5"}},
        400,
        "invalid_request",
        "requested_expiry must be a whole number of seconds from 1 to 86400",
        None,
        id="requested-expiry-negative",
    ),
    pytest.param(
        {"form": {"scope": "openid", "login_hint": "alice", "requested_expiry": "86401"}},
        400,
        "invalid_request",
        "requested_expiry must be a whole number of seconds from 1 to 86400",
        None,
        id="requested-expiry-over-a-day",
    ),
    pytest.param(
        {"form": {"scope": "openid", "login_hint": "alice", "requested_expiry": "9" * 5000}},
        400,
        "invalid_request",
        "requested_expiry must be a whole number of seconds from 1 to 86400",
        None,
        id="requested-expiry-huge",
    ),
    pytest.param(
        {"form": {"scope": ["openid", "openid"], "login_hint": "alice"}},
        400,
        "invalid_request",
        "scope is given more than once",
        None,
        id="repeated-parameter",
    ),
    pytest.param(
        {"form": {"scope": "openid", "login_hint": "alice", "client_secret": "demo-secret"}},
        400,
        "invalid_request",
        "Use one client authentication method only.",
        None,
        id="two-authentication-methods",
    ),
    pytest.param(
        {"form": {"scope": "openid", "request": "eyJhbGciOiJub25lIn0.e30."}},
        400,
        "invalid_request",
        "signed authentication requests are not supported",
        None,
        id="request-object",
    ),
]


@pytest.mark.parametrize(("kwargs", "status", "error", "description", "challenge"), ANSWERED_BY_THE_ENDPOINT)
def test_malformed_requests_are_answered_by_the_endpoint_without_a_ticket(
    demo: Demo, kwargs: dict[str, Any], status: int, error: str, description: str, challenge: str | None
) -> None:
    before = demo.tickets()
    options = {"form": {"scope": "openid", "login_hint": "alice"}, **kwargs}
    form = options.pop("form")
    response = demo.post(form, **options)
    assert (response.status_code, headers_of(response), response.headers.get("WWW-Authenticate")) == (
        status,
        CLIENT_HEADERS,
        challenge,
    )
    assert response.text == json.dumps({"error": error, "error_description": description}, separators=(",", ":"))
    assert demo.tickets() == before
    assert demo.new_audit() == []


def test_index_lists_what_to_try_and_its_hints_work(demo: Demo) -> None:
    index = requests.get(demo.url + "/", timeout=10)
    assert (index.status_code, index.headers["Cache-Control"]) == (200, "no-store")
    body = index.json()
    assert body["backchannel_authentication_endpoint"] == demo.url + "/backchannel/authentication"
    assert body["fail_api"] == f"{demo.url}/api/{SERVICE}/backchannel/authentication/fail"
    assert (body["fail_via"], body["service_id"]) == ("in_process", SERVICE)
    assert [u["login_hint"] for u in body["users"]] == ["alice", "bob", "carol", "dave"]
    samples = body["sample_hints"]
    ok = demo.post({"scope": "openid", "login_hint_token": samples["login_hint_token for alice (valid 10 minutes)"]})
    assert ok.status_code == 200
    expired = demo.post({"scope": "openid", "login_hint_token": samples["login_hint_token for alice (expired)"]})
    assert (expired.status_code, expired.json()["error"]) == (400, "expired_login_hint_token")
    demo.new_audit()


def test_the_fail_api_is_served_beside_the_endpoint(demo: Demo) -> None:
    response = requests.post(
        f"{demo.url}/api/{SERVICE}/backchannel/authentication/fail",
        json={"ticket": None, "reason": "ACCESS_DENIED"},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        timeout=10,
    )
    assert (response.status_code, response.json()["action"], response.json()["responseContent"]) == (
        200,
        "FORBIDDEN",
        '{"error":"access_denied"}',
    )
    (record,) = demo.new_audit()
    assert (record["via"], record["route"], record["deleted"]) == ("http", "v3", None)
