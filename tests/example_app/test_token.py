"""After the auth_req_id: discovery, keys, the token endpoint and the device, over HTTP against gunicorn.

Two workers share the devices' inbox (an SQLite file), the CIBA family's records (the ticket
store) and the signing key, so a request accepted by one process is decided and collected
through the other as well. Every poll outcome of CIBA Core 11 is reached; none of it goes
through the fail API.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
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
from joserfc.jwk import KeySet

from ciba_middleware import ConfigurationError
from ciba_middleware.ciba.endpoints import AuthenticationRequest, PendingRequest
from example_app import create_app
from example_app.pending import RETENTION, PendingRequests

CIBA = "urn:openid:params:grant-type:ciba"
ISSUER = "https://demo.example"
# RFC 6749 5.1: the token endpoint's answers carry the same three headers as the fail API's.
TOKEN_HEADERS = API_HEADERS


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("demo_token"), CIBA_POLLING_INTERVAL="1", CIBA_ISSUER=ISSUER)
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
        "issuer": ISSUER,
        "token_endpoint": f"{base}/token",
        "jwks_uri": f"{base}/jwks",
        "backchannel_authentication_endpoint": f"{base}/backchannel/authentication",
        "backchannel_token_delivery_modes_supported": ["poll", "ping", "push"],
        "backchannel_user_code_parameter_supported": True,
        "grant_types_supported": [CIBA],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
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
    public = SIGNING_KEY.as_dict(private=False)
    assert {k: key[k] for k in public} == public
    assert (key["kid"], key["use"], key["alg"]) == (SIGNING_KEY.thumbprint(), "sig", "ES256")


def test_approved_request_gives_tokens_once_without_a_fail_call(demo: Demo) -> None:
    before_ids = device_ids(demo)
    accepted = ask(demo, scope="openid profile", binding_message="Pay 20 EUR")
    assert accepted["interval"] == 1
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "authorization_pending")

    approved = decide(demo, only_new_device_id(demo, before_ids), "approve")
    assert (approved.status_code, approved.headers["Location"]) == (303, "/device/alice?decided=approved")
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
    assert (decoded.header["alg"], decoded.header["kid"]) == ("ES256", SIGNING_KEY.thumbprint())
    claims = decoded.claims
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()[:16]
    assert claims == {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "demo-client",
        "iat": claims["iat"],
        "exp": claims["iat"] + 3600,
        "auth_time": claims["auth_time"],
        "at_hash": base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
    }
    assert abs(claims["iat"] - time.time()) < 5
    assert abs(claims["auth_time"] - decided_at) < 2

    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "invalid_grant")
    # Neither the decision nor the tokens went through the fail API.
    assert demo.new_audit() == []


def test_denied_request_answers_access_denied(demo: Demo) -> None:
    before_ids = device_ids(demo)
    accepted = ask(demo)
    denied = decide(demo, only_new_device_id(demo, before_ids), "deny")
    assert (denied.status_code, denied.headers["Location"]) == (303, "/device/alice?decided=denied")
    response = poll(demo, accepted["auth_req_id"])
    assert error_of(response) == (400, "access_denied")
    assert response.json()["error_description"] == "The user denied the request."
    assert demo.new_audit() == []


def test_polling_faster_than_the_interval_is_slow_down(demo: Demo) -> None:
    accepted = ask(demo)
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "authorization_pending")
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "slow_down")
    time.sleep(1.2)
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "authorization_pending")


def test_an_expired_request_is_expired_token(demo: Demo) -> None:
    before_ids = device_ids(demo)
    accepted = ask(demo, requested_expiry="1")
    assert accepted["expires_in"] == 1
    (device_id,) = set(device_ids(demo)) - set(before_ids)
    time.sleep(1.2)
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "expired_token")
    assert error_of(poll(demo, accepted["auth_req_id"])) == (400, "expired_token")
    # Gone from the device, and too late to decide.
    assert device_id not in device_ids(demo)
    assert decide(demo, device_id, "approve").status_code == 404
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


UNKNOWN = "the auth_req_id is unknown, used or not this client's"


@pytest.mark.parametrize(
    ("form", "auth", "status", "error", "description"),
    [
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": "x"}, ("demo-client", "wrong"), 401, "invalid_client",
            "client authentication failed", id="wrong-secret",
        ),
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": "x"}, None, 401, "invalid_client",
            "client authentication failed", id="no-client-authentication",
        ),
        pytest.param({"auth_req_id": "x"}, DEMO, 400, "invalid_request", "grant_type is missing", id="no-grant-type"),
        pytest.param(
            {"grant_type": "client_credentials"}, DEMO, 400, "unsupported_grant_type",
            f"only the CIBA grant ({CIBA}) is served here", id="other-grant-type",
        ),
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": "x"}, ("web-client", "web-secret"), 400, "invalid_grant", UNKNOWN,
            id="client-not-registered-for-ciba",
        ),
        pytest.param({"grant_type": CIBA}, DEMO, 400, "invalid_request", "auth_req_id is missing", id="no-auth-req-id"),
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": ""}, DEMO, 400, "invalid_request", "auth_req_id is missing",
            id="empty-auth-req-id",
        ),
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": ["a", "b"]}, DEMO, 400, "invalid_request",
            "auth_req_id is given more than once", id="auth-req-id-twice",
        ),
        pytest.param(
            {"grant_type": CIBA, "auth_req_id": "no-such-request"}, DEMO, 400, "invalid_grant", UNKNOWN, id="unknown",
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
        "The request body must be application/x-www-form-urlencoded.",
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
    # When each request was made, and a short identifier: identical requests can be told apart.
    assert re.search(r'<dd class="request-id"><code>[0-9a-f]{12}</code></dd>', page.text)
    assert re.search(r'<dd class="made">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC', page.text)
    # The client's auth_req_id never reaches the device.
    assert "auth_req_id" not in page.text
    # Loads only from the demo, and its forms post only to it.
    assert (
        page.headers["Content-Security-Policy"] == "default-src 'self'; style-src 'unsafe-inline'; form-action 'self'"
    )
    assert page.headers["X-Frame-Options"] == "DENY"
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
    if path.startswith("/device/nobody"):
        # A page of the demo's own, not a bare "Not Found".
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert '<p id="unknown">There is no user <strong>nobody</strong> in this demo.</p>' in response.text


def test_another_users_device_cannot_decide(demo: Demo) -> None:
    before = device_ids(demo)
    ask(demo)
    device_id = only_new_device_id(demo, before)
    assert decide(demo, device_id, "approve", user="bob").status_code == 404
    assert device_id in device_ids(demo)


# -- the inbox on its own, with a clock of the test's -------------------------------------


def pending_request(ticket: str, created_at: float, expires_in: int = 60) -> PendingRequest:
    request = AuthenticationRequest(
        service_id="715948317", client_id="demo-client", delivery_mode="poll", hint_type="login_hint", hint="alice",
        subject=None, scopes=("openid",), acr_values=(), binding_message="Pay", user_code=None,
        user_code_required=False, requested_expiry=None, resources=(),
    )  # fmt: skip
    return PendingRequest(ticket, request, None, created_at, expires_in)


def test_the_inbox_forgets_rows_after_the_retention(tmp_path: Path) -> None:
    inbox = PendingRequests(tmp_path / "p.sqlite3")
    inbox.add("alice", pending_request("t" * 43, 1000.0))
    assert [p.ticket for p in inbox.waiting_for("alice", now=1059.0)] == ["t" * 43]
    assert inbox.waiting_for("alice", now=1060.0) == []
    inbox.add("alice", pending_request("u" * 43, 1060.0 + RETENTION + 1))
    with contextlib.closing(sqlite3.connect(tmp_path / "p.sqlite3")) as db, db:
        assert db.execute("SELECT ticket FROM demo_inbox").fetchall() == [("u" * 43,)]


def test_a_request_is_taken_once_by_its_user(tmp_path: Path) -> None:
    inbox = PendingRequests(tmp_path / "p.sqlite3")
    inbox.add("alice", pending_request("t" * 43, 1000.0))
    (waiting,) = inbox.waiting_for("alice", now=1001.0)
    assert (waiting.binding_message, waiting.created_at, len(waiting.short_id)) == ("Pay", 1000.0, 12)
    assert inbox.take("bob", waiting.device_id, now=1002.0) is None
    taken = inbox.take("alice", waiting.device_id, now=1002.0)
    assert taken is not None
    assert taken.ticket == "t" * 43
    assert inbox.take("alice", waiting.device_id, now=1002.0) is None
    assert inbox.waiting_for("alice", now=1003.0) == []


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            {"CIBA_DEMO_AUTO_APPROVE": "soon"},
            "example_app option CIBA_DEMO_AUTO_APPROVE must be a number from 0 to 60, not 'soon'",
            id="auto-approve-not-a-number",
        ),
        pytest.param(
            {"CIBA_DEMO_AUTO_APPROVE": "61"},
            "example_app option CIBA_DEMO_AUTO_APPROVE must be a number from 0 to 60, not '61'",
            id="auto-approve-too-late",
        ),
        pytest.param(
            {"CIBA_POLLING_INTERVAL": "-1"},
            "CIBA_POLLING_INTERVAL must be a whole number of seconds from 0 to 600, not '-1'",
            id="interval-negative",
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


# -- in process --------------------------------------------------------------------------


@pytest.fixture
def app_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in [k for k in os.environ if k.startswith(("CIBA_", "FLASK_"))]:
        monkeypatch.delenv(name)
    app = create_app(
        {
            "CIBA_STORE_URL": f"sqlite:///{tmp_path / 'tickets.sqlite3'}",
            "CIBA_DEMO_DATABASE": str(tmp_path / "demo.sqlite3"),
            "CIBA_POLLING_INTERVAL": "1",
            "CIBA_AUDIT_LOG": "off",
        }
    )
    return app.test_client(), tmp_path


def _basic(client_id: str = "demo-client", secret: str = "demo-secret") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_an_inbox_that_cannot_take_the_request_closes_it_with_server_error(
    app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, tmp_path = app_client
    with contextlib.closing(sqlite3.connect(tmp_path / "demo.sqlite3")) as db, db:
        db.execute("DROP TABLE demo_inbox")
    response = client.post(
        "/backchannel/authentication", data={"scope": "openid", "login_hint": "alice"}, headers=_basic()
    )
    assert (response.status_code, response.json["error"]) == (500, "server_error")
    assert "no such table: demo_inbox" in caplog.text
    assert "start_device failed" in caplog.text


def test_automated_approval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CIBA_DEMO_AUTO_APPROVE: every request is approved by its user, unattended."""
    for name in [k for k in os.environ if k.startswith(("CIBA_", "FLASK_"))]:
        monkeypatch.delenv(name)
    app = create_app(
        {
            "CIBA_STORE_URL": f"sqlite:///{tmp_path / 'tickets.sqlite3'}",
            "CIBA_DEMO_DATABASE": str(tmp_path / "demo.sqlite3"),
            "CIBA_POLLING_INTERVAL": "0",
            "CIBA_AUDIT_LOG": "off",
            "CIBA_DEMO_AUTO_APPROVE": "0.2",
        }
    )
    client = app.test_client()
    accepted = client.post(
        "/backchannel/authentication", data={"scope": "openid", "login_hint": "alice"}, headers=_basic()
    ).json
    form = {"grant_type": CIBA, "auth_req_id": accepted["auth_req_id"]}
    assert client.post("/token", data=form, headers=_basic()).json["error"] == "authorization_pending"
    deadline = time.monotonic() + 5
    while (answer := client.post("/token", data=form, headers=_basic())).status_code != 200:
        assert answer.json["error"] == "authorization_pending"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert answer.json["token_type"] == "Bearer"
    # Refusals are still refusals: the hooks run before any approval.
    refused = client.post(
        "/backchannel/authentication", data={"scope": "openid", "login_hint": "carol"}, headers=_basic()
    )
    assert refused.json["error"] == "access_denied"
