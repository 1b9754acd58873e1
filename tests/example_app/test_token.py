"""After the auth_req_id: discovery, keys, the token endpoint and the device, over HTTP against gunicorn.

Two workers share the pending requests (an SQLite file) and the signing key, so a request
accepted by one process is decided and collected through the other as well. Every poll
outcome of CIBA Core 11 is reached, and the ticket's life is checked in the store and the
audit log: a decision deletes it without any fail call; an expired one expires there too.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _demo import DEMO, SIGNING_KEY, Demo, start_demo
from conftest import API_HEADERS
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from ciba_middleware import ConfigurationError
from example_app import create_app
from example_app.pending import RETENTION, PendingRequests

CIBA = "urn:openid:params:grant-type:ciba"
# RFC 6749 5.1: the token endpoint's answers carry the same three headers as the fail API's.
TOKEN_HEADERS = API_HEADERS


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("demo_token"), CIBA_DEMO_INTERVAL="1")
    yield running
    running.server.stop()


def ask(demo: Demo, **form: str) -> dict[str, Any]:
    response = demo.post({"scope": "openid", "login_hint": "alice", **form})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def poll(demo: Demo, auth_req_id: str, auth: tuple[str, str] = DEMO, **extra: str) -> requests.Response:
    form = {"grant_type": CIBA, "auth_req_id": auth_req_id, **extra}
    return requests.post(demo.url + "/token", data=form, auth=auth, timeout=10)


def error_of(response: requests.Response) -> tuple[int, str]:
    assert {k: response.headers.get(k) for k in TOKEN_HEADERS} == TOKEN_HEADERS
    return response.status_code, response.json()["error"]


def device_ids(demo: Demo, user: str = "alice") -> list[str]:
    page = requests.get(f"{demo.url}/device/{user}", timeout=10)
    assert page.status_code == 200
    return re.findall(r'data-request="([^"]+)"', page.text)


def decide(demo: Demo, device_id: str, decision: str, user: str = "alice") -> requests.Response:
    return requests.post(
        f"{demo.url}/device/{user}/{device_id}", data={"decision": decision}, allow_redirects=False, timeout=10
    )


def only_new_device_id(demo: Demo, before: list[str]) -> str:
    (device_id,) = set(device_ids(demo)) - set(before)
    return device_id


def test_discovery_has_the_ciba_metadata_and_the_issuer_it_is_served_from(demo: Demo) -> None:
    response = requests.get(demo.url + "/.well-known/openid-configuration", timeout=10)
    assert (response.status_code, response.headers["Content-Type"]) == (200, "application/json;charset=UTF-8")
    base = demo.url
    assert response.json() == {
        "issuer": base,
        "token_endpoint": f"{base}/token",
        "jwks_uri": f"{base}/jwks",
        "backchannel_authentication_endpoint": f"{base}/backchannel/authentication",
        "backchannel_token_delivery_modes_supported": ["poll"],
        "backchannel_user_code_parameter_supported": True,
        "grant_types_supported": [CIBA],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["email", "openid", "payments", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "at_hash"],
        "x_demo_authentication_device": f"{base}/device",
    }


def test_jwks_is_the_public_half_of_the_signing_key(demo: Demo) -> None:
    (key,) = requests.get(demo.url + "/jwks", timeout=10).json()["keys"]
    assert "d" not in key
    assert key == {
        **SIGNING_KEY.as_dict(private=False),
        "kid": SIGNING_KEY.thumbprint(),
        "use": "sig",
        "alg": "ES256",
    }


def test_approved_request_gives_tokens_once_and_its_ticket_goes_without_a_fail_call(demo: Demo) -> None:
    before_ids, before_tickets = device_ids(demo), demo.ticket_hashes()
    accepted = ask(demo, scope="openid profile", binding_message="Pay 20 EUR")
    assert accepted["interval"] == 1
    (ticket,) = set(demo.ticket_hashes()) - set(before_tickets)
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "authorization_pending")

    approved = decide(demo, only_new_device_id(demo, before_ids), "approve")
    assert (approved.status_code, approved.headers["Location"]) == (303, "/device/alice?decided=approved")
    assert ticket not in demo.ticket_hashes()
    decided_at = time.time()

    time.sleep(1)  # the interval since the first poll
    response = poll(demo, accepted["auth_req_id"])
    assert response.status_code == 200, response.text
    assert {k: response.headers.get(k) for k in TOKEN_HEADERS} == TOKEN_HEADERS
    tokens = response.json()
    assert sorted(tokens) == ["access_token", "expires_in", "id_token", "scope", "token_type"]
    assert (tokens["token_type"], tokens["expires_in"], tokens["scope"]) == ("Bearer", 3600, "openid profile")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", tokens["access_token"])

    jwks = KeySet.import_key_set(requests.get(demo.url + "/jwks", timeout=10).json())
    decoded = jwt.decode(tokens["id_token"], jwks, algorithms=["ES256"])
    assert decoded.header == {"alg": "ES256", "kid": SIGNING_KEY.thumbprint(), "typ": "JWT"}
    claims = decoded.claims
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()[:16]
    assert claims == {
        "iss": demo.url,
        "sub": "alice",
        "aud": "demo-client",
        "iat": claims["iat"],
        "exp": claims["iat"] + 600,
        "auth_time": claims["auth_time"],
        "at_hash": base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
    }
    assert abs(claims["iat"] - time.time()) < 5
    assert abs(claims["auth_time"] - decided_at) < 2

    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "invalid_grant")
    # Neither the decision nor the tokens went through the fail API.
    assert demo.new_audit() == []


def test_denied_request_answers_access_denied_once(demo: Demo) -> None:
    before_ids, before_tickets = device_ids(demo), demo.ticket_hashes()
    accepted = ask(demo)
    (ticket,) = set(demo.ticket_hashes()) - set(before_tickets)
    denied = decide(demo, only_new_device_id(demo, before_ids), "deny")
    assert (denied.status_code, denied.headers["Location"]) == (303, "/device/alice?decided=denied")
    assert ticket not in demo.ticket_hashes()
    response = poll(demo, accepted["auth_req_id"])
    assert error_of(response) == (400, "access_denied")
    assert response.json()["error_description"] == "The user denied the request."
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "invalid_grant")
    assert demo.new_audit() == []


def test_polling_faster_than_the_interval_is_slow_down_and_the_interval_grows(demo: Demo) -> None:
    accepted = ask(demo)
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "authorization_pending")
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "slow_down")
    # The interval is now 1 + 5 seconds: a poll 1.2 s later is still too soon.
    time.sleep(1.2)
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "slow_down")


def test_an_expired_request_is_expired_token_and_its_ticket_expires_with_it(demo: Demo) -> None:
    before_ids, before_tickets = device_ids(demo), demo.ticket_hashes()
    accepted = ask(demo, requested_expiry="1")
    assert accepted["expires_in"] == 1
    (device_id,) = set(device_ids(demo)) - set(before_ids)
    (ticket,) = set(demo.ticket_hashes()) - set(before_tickets)
    assert 0 < demo.ticket_expiry()[ticket] <= 1
    time.sleep(1.2)
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "expired_token")
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "expired_token")
    # Gone from the device, and too late to decide.
    assert device_id not in device_ids(demo)
    assert decide(demo, device_id, "approve").status_code == 404
    assert demo.ticket_expiry()[ticket] < 0
    assert demo.new_audit() == []


def test_a_request_can_be_decided_once(demo: Demo) -> None:
    before = device_ids(demo)
    accepted = ask(demo)
    device_id = only_new_device_id(demo, before)
    assert decide(demo, device_id, "deny").status_code == 303
    again = decide(demo, device_id, "approve")
    assert again.status_code == 404
    assert "it expired, or was decided already" in again.text
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "access_denied")


@pytest.mark.parametrize(
    ("form", "auth", "status", "error", "description"),
    [
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": "x"}, ("demo-client", "wrong"), 401, "invalid_client",
            "Client authentication failed.", id="wrong-secret",
        ),
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": "x"}, None, 401, "invalid_client",
            "Authenticate the client with HTTP Basic (client_secret_basic).", id="no-client-authentication",
        ),
        pytest.param(
            {"auth_req_id": "x"}, DEMO, 400, "invalid_request", "The parameter grant_type is required.",
            id="no-grant-type",
        ),
        pytest.param(
            {"grant_type": "client_credentials"}, DEMO, 400, "unsupported_grant_type",
            "This server supports the grant type urn:openid:params:grant-type:ciba only.", id="other-grant-type",
        ),
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": "x"}, ("web-client", "web-secret"), 400, "unauthorized_client",
            "The client is not registered for CIBA.", id="client-not-registered-for-ciba",
        ),
        pytest.param(
            {"grant_type": CIBA}, DEMO, 400, "invalid_request", "The parameter auth_req_id is required.",
            id="no-auth-req-id",
        ),
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": ""}, DEMO, 400, "invalid_request",
            "The parameter auth_req_id is required.", id="empty-auth-req-id",
        ),
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": ["a", "b"]}, DEMO, 400, "invalid_request",
            "The parameter auth_req_id is given more than once.", id="auth-req-id-twice",
        ),
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": "no-such-request"}, DEMO, 400, "invalid_grant",
            "The auth_req_id is unknown, was issued to another client, or was already used.", id="unknown",
        ),
    ],
)  # fmt: skip
def test_token_endpoint_errors(
    demo: Demo, form: dict[str, Any], auth: tuple[str, str] | None, status: int, error: str, description: str
) -> None:
    response = requests.post(demo.url + "/token", data=form, auth=auth, timeout=10)
    assert (response.status_code, response.json()) == (status, {"error": error, "error_description": description})
    assert {k: response.headers.get(k) for k in TOKEN_HEADERS} == TOKEN_HEADERS


def test_token_endpoint_wants_a_form(demo: Demo) -> None:
    response = requests.post(demo.url + "/token", json={"grant_type": CIBA}, auth=DEMO, timeout=10)
    assert (response.status_code, response.json()["error_description"]) == (
        400,
        "The request must be application/x-www-form-urlencoded.",
    )


def test_device_page_lists_what_the_user_must_decide(demo: Demo) -> None:
    ask(demo, scope="openid payments", binding_message="Pay 20 EUR to shop #4711",
        resource="https://api.example.com/payments")  # fmt: skip
    page = requests.get(demo.url + "/device/alice", timeout=10)
    assert (page.status_code, page.headers["Content-Type"], page.headers["Cache-Control"]) == (
        200,
        "text/html; charset=utf-8",
        "no-store",
    )
    assert '<dd class="scope">openid payments</dd>' in page.text
    assert '<dd class="binding">Pay 20 EUR to shop #4711</dd>' in page.text
    assert '<dd class="resources">https://api.example.com/payments</dd>' in page.text
    # The client's auth_req_id never reaches the device.
    assert "auth_req_id" not in page.text
    index = requests.get(demo.url + "/device", timeout=10)
    assert all(f'href="/device/{user}"' in index.text for user in ("alice", "bob", "carol", "dave"))


@pytest.mark.parametrize(
    ("path", "form", "status"),
    [
        pytest.param("/device/nobody", None, 404, id="unknown-user-page"),
        pytest.param("/device/nobody/abc", {"decision": "approve"}, 404, id="unknown-user-decision"),
        pytest.param("/device/alice/abc", {"decision": "approve"}, 404, id="unknown-request"),
        pytest.param("/device/alice/abc", {"decision": "maybe"}, 400, id="bad-decision"),
        pytest.param("/device/alice/abc", {}, 400, id="no-decision"),
    ],
)
def test_device_errors(demo: Demo, path: str, form: dict[str, str] | None, status: int) -> None:
    if form is None:
        response = requests.get(demo.url + path, timeout=10)
    else:
        response = requests.post(demo.url + path, data=form, timeout=10)
    assert response.status_code == status


def test_another_users_device_cannot_decide(demo: Demo) -> None:
    before = device_ids(demo)
    ask(demo)
    device_id = only_new_device_id(demo, before)
    assert decide(demo, device_id, "approve", user="bob").status_code == 404
    assert device_id in device_ids(demo)


# -- the pending requests on their own, with a clock of the test's ----------------------


def test_pending_requests_are_forgotten_after_the_retention(tmp_path: Path) -> None:
    pending = PendingRequests(tmp_path / "p.sqlite3")
    fields: dict[str, Any] = {
        "client_id": "demo-client", "subject": "alice", "scope": "openid", "binding_message": None,
        "resources": (), "ticket": "t" * 43, "expires_in": 60, "interval": 5,
    }  # fmt: skip
    pending.add("old", now=1000.0, **fields)
    assert pending.poll("old", "demo-client", now=1000.0 + 59)[0] == "authorization_pending"
    assert pending.poll("old", "demo-client", now=1000.0 + 60)[0] == "expired_token"
    assert pending.poll("old", "demo-client", now=1000.0 + 60 + RETENTION)[0] == "expired_token"
    # Adding a request later forgets those expired longer than RETENTION ago.
    pending.add("new", now=1000.0 + 61 + RETENTION, **fields)
    assert pending.poll("old", "demo-client", now=1000.0 + 61 + RETENTION) == ("invalid_grant", None)
    assert pending.poll("new", "other-client", now=1000.0 + 61 + RETENTION) == ("invalid_grant", None)
    assert pending.poll("new", "demo-client", now=1000.0 + 61 + RETENTION)[0] == "authorization_pending"


def test_an_approved_request_not_collected_in_time_expires(tmp_path: Path) -> None:
    pending = PendingRequests(tmp_path / "p.sqlite3")
    pending.add(
        "r", client_id="demo-client", subject="alice", scope="openid", binding_message=None, resources=(),
        ticket="t" * 43, expires_in=60, interval=5, now=1000.0,
    )  # fmt: skip
    (waiting,) = pending.waiting_for("alice", now=1001.0)
    assert pending.decide("alice", waiting.device_id, approve=True, now=1002.0) is not None
    assert pending.waiting_for("alice", now=1003.0) == []
    assert pending.poll("r", "demo-client", now=1060.0)[0] == "expired_token"


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            {"CIBA_DEMO_SIGNING_KEY": "not json"},
            "CIBA_DEMO_SIGNING_KEY must be a private EC P-256 JWK in JSON (kty, crv, x, y, d): "
            "Expecting value: line 1 column 1 (char 0)",
            id="signing-key-not-json",
        ),
        pytest.param(
            {"CIBA_DEMO_SIGNING_KEY": json.dumps(SIGNING_KEY.as_dict(private=False))},
            "CIBA_DEMO_SIGNING_KEY must be a private EC P-256 JWK in JSON (kty, crv, x, y, d): "
            "not a private EC P-256 JWK",
            id="signing-key-public",
        ),
        pytest.param(
            {"CIBA_DEMO_SIGNING_KEY": json.dumps({**SIGNING_KEY.as_dict(private=True), "x": "AAAA"})},
            "CIBA_DEMO_SIGNING_KEY must be a private EC P-256 JWK in JSON (kty, crv, x, y, d): "
            "Invalid EC key. Point is not on the curve specified.",
            id="signing-key-broken",
        ),
        pytest.param(
            {"CIBA_DEMO_INTERVAL": "0"},
            "example_app option CIBA_DEMO_INTERVAL must be a whole number from 1 to 60, not '0'",
            id="interval-zero",
        ),
        pytest.param(
            {"CIBA_DEMO_INTERVAL": "2.5"},
            "example_app option CIBA_DEMO_INTERVAL must be a whole number from 1 to 60, not '2.5'",
            id="interval-fraction",
        ),
        pytest.param(
            {"CIBA_DEMO_DATABASE": "/nonexistent/dir/demo.sqlite3"},
            "CIBA_DEMO_DATABASE: cannot open the SQLite file '/nonexistent/dir/demo.sqlite3': "
            "unable to open database file",
            id="database-unopenable",
        ),
    ],
)
def test_bad_demo_settings_stop_create_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    base = {"CIBA_STORE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}"}
    with pytest.raises(ConfigurationError) as caught:
        create_app({**base, **config})
    assert str(caught.value) == message


def test_signing_key_setting_is_used_and_a_missing_one_is_generated(tmp_path: Path) -> None:
    base = {
        "CIBA_STORE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}",
        "CIBA_DEMO_DATABASE": str(tmp_path / "d.sqlite3"),
    }
    configured = create_app({**base, "CIBA_DEMO_SIGNING_KEY": json.dumps(SIGNING_KEY.as_dict(private=True))})
    generated = [create_app(base).extensions["example_app"].signing_key for _ in range(2)]
    key: ECKey = configured.extensions["example_app"].signing_key
    assert key.thumbprint() == SIGNING_KEY.thumbprint()
    assert generated[0].thumbprint() != generated[1].thumbprint()


# -- failures inside the demo, in process ------------------------------------------------


@pytest.fixture
def app_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in [k for k in os.environ if k.startswith(("CIBA_", "FLASK_"))]:
        monkeypatch.delenv(name)
    app = create_app(
        {
            "CIBA_STORE_URL": f"sqlite:///{tmp_path / 'tickets.sqlite3'}",
            "CIBA_DEMO_DATABASE": str(tmp_path / "demo.sqlite3"),
            "CIBA_DEMO_INTERVAL": 1,
        }
    )
    return app.test_client(), tmp_path


def _basic(client_id: str = "demo-client", secret: str = "demo-secret") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_pending_requests_that_cannot_be_recorded_fail_the_ticket_with_server_error(
    app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, tmp_path = app_client
    with contextlib.closing(sqlite3.connect(tmp_path / "demo.sqlite3")) as db, db:
        db.execute("DROP TABLE demo_pending")
    response = client.post(
        "/backchannel/authentication", data={"scope": "openid", "login_hint": "alice"}, headers=_basic()
    )
    assert (response.status_code, response.json["error"]) == (500, "server_error")
    with contextlib.closing(sqlite3.connect(tmp_path / "tickets.sqlite3")) as db, db:
        assert db.execute("SELECT count(*) FROM ciba_tickets").fetchone() == (0,)
    assert "no such table: demo_pending" in caplog.text


def test_pending_requests_that_cannot_be_read_are_a_server_error_at_the_token_endpoint(
    app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, tmp_path = app_client
    with contextlib.closing(sqlite3.connect(tmp_path / "demo.sqlite3")) as db, db:
        db.execute("DROP TABLE demo_pending")
    response = client.post("/token", data={"grant_type": CIBA, "auth_req_id": "x"}, headers=_basic())
    assert (response.status_code, response.headers["Cache-Control"], response.json) == (
        500,
        "no-store",
        {"error": "server_error", "error_description": "The authorization server failed; try again later."},
    )
    assert "the pending requests could not be read" in caplog.text


def test_a_decision_stands_when_the_ticket_store_fails_to_delete_the_ticket(
    app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, tmp_path = app_client
    accepted = client.post(
        "/backchannel/authentication", data={"scope": "openid", "login_hint": "alice"}, headers=_basic()
    ).json
    (device_id,) = re.findall(r'data-request="([^"]+)"', client.get("/device/alice").text)
    with contextlib.closing(sqlite3.connect(tmp_path / "tickets.sqlite3")) as db, db:
        db.execute("DROP TABLE ciba_tickets")
    decided = client.post(f"/device/alice/{device_id}", data={"decision": "approve"})
    assert decided.status_code == 303
    assert "could not delete the ticket" in caplog.text
    time.sleep(1)
    tokens = client.post("/token", data={"grant_type": CIBA, "auth_req_id": accepted["auth_req_id"]}, headers=_basic())
    assert (tokens.status_code, tokens.json["token_type"]) == (200, "Bearer")
