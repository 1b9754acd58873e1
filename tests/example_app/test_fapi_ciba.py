"""The FAPI-CIBA test plan's checks that apply to poll and ping, reproduced against the demo.

The OpenID Foundation's conformance suite cannot run here; each test below is one of its
checks (named in the docstring as the plan names it), run over HTTP against ``python -m
example_app`` with automated approval (``CIBA_DEMO_AUTO_APPROVE``), so that no one clicks. The
ping clients' notification endpoints are real servers on 127.0.0.1 (allowed by
``CIBA_NOTIFICATION_INSECURE_HOSTS``) answering as each check needs: a body, 401, 403, a redirect.
docs/fapi-ciba.md lists the checks, and how node's oidc-provider answers the same ones.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from _demo import Running, start_main
from conftest import AT_ONCE
from joserfc import jwt
from joserfc.jwk import KeySet

from ciba_middleware import sha256_hex

GRANT = "urn:openid:params:grant-type:ciba"
POLL = ("fapi-poll", "fapi-poll-secret")
#: The ping clients, by what their notification endpoint answers.
PINGS = {"body": 200, "empty": 204, "unauthorized": 401, "forbidden": 403, "redirect": 302}


class Endpoints:
    """The ping clients' notification endpoints: ``/<kind>`` answers ``PINGS[kind]``."""

    def __init__(self) -> None:
        self.received: dict[str, queue.Queue[dict[str, Any]]] = {kind: queue.Queue() for kind in PINGS}
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                kind = self.path.strip("/")
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received[kind].put({"authorization": self.headers.get("Authorization"), "body": json.loads(body)})
                status = PINGS[kind]
                answer = b'{"thanks": true}' if kind == "body" else b""
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def endpoints() -> Iterator[Endpoints]:
    served = Endpoints()
    yield served
    served.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, endpoints: Endpoints) -> Iterator[tuple[Running, Path]]:
    tmp = tmp_path_factory.mktemp("fapi")
    clients = [{"client_id": POLL[0], "service": "715948317", "client_secret_sha256": sha256_hex(POLL[1])}]
    clients += [
        {
            "client_id": f"ping-{kind}",
            "service": "715948317",
            "client_secret_sha256": sha256_hex("ping-secret"),
            "delivery_mode": "ping",
            "notification_endpoint": f"{endpoints.base}/{kind}",
        }
        for kind in PINGS
    ]
    audit = tmp / "audit.jsonl"
    running = start_main(
        tmp,
        CIBA_CLIENTS=json.dumps(clients),
        CIBA_NOTIFICATION_INSECURE_HOSTS="127.0.0.1",
        CIBA_DEMO_AUTO_APPROVE="0.3",
        CIBA_POLLING_INTERVAL="1",
        CIBA_AUDIT_LOG=str(audit),
        **AT_ONCE,
    )
    yield running, audit
    running.stop()


def start(server: tuple[Running, Path], auth: tuple[str, str] = POLL, **form: str) -> requests.Response:
    running, _ = server
    params = {"scope": "openid", "login_hint": "alice", **form}
    return requests.post(running.url + "/backchannel/authentication", data=params, auth=auth, timeout=10)


def token(server: tuple[Running, Path], auth_req_id: str, auth: tuple[str, str] = POLL) -> requests.Response:
    running, _ = server
    form = {"grant_type": GRANT, "auth_req_id": auth_req_id}
    return requests.post(running.url + "/token", data=form, auth=auth, timeout=10)


def wait_for_tokens(server: tuple[Running, Path], auth_req_id: str, auth: tuple[str, str] = POLL) -> requests.Response:
    deadline = time.monotonic() + 15
    while True:
        time.sleep(1.05)  # the interval
        answer = token(server, auth_req_id, auth)
        if answer.status_code != 400 or answer.json()["error"] != "authorization_pending":
            return answer
        assert time.monotonic() < deadline, "never decided"


def test_discovery(server: tuple[Running, Path]) -> None:
    """fapi-ciba-id1-discovery-end-point-verification: the CIBA metadata is published."""
    running, _ = server
    metadata = requests.get(running.url + "/.well-known/openid-configuration", timeout=10).json()
    assert metadata["issuer"] == running.url
    assert metadata["backchannel_authentication_endpoint"] == running.url + "/backchannel/authentication"
    assert {"poll", "ping"} <= set(metadata["backchannel_token_delivery_modes_supported"])
    assert GRANT in metadata["grant_types_supported"]
    assert metadata["backchannel_user_code_parameter_supported"] is True
    assert requests.get(metadata["jwks_uri"], timeout=10).json()["keys"]


def test_normal_flow_poll(server: tuple[Running, Path]) -> None:
    """fapi-ciba-id1 (poll): pending, then tokens whose ID token checks out; then the
    auth_req_id is spent (fapi-ciba-id1-auth-req-id-reused: invalid_grant)."""
    running, _ = server
    accepted = start(server, binding_message="FAPI 1")
    assert accepted.status_code == 200
    body = accepted.json()
    assert (body["expires_in"], body["interval"]) == (120, 1)
    assert token(server, body["auth_req_id"]).json()["error"] == "authorization_pending"
    tokens = wait_for_tokens(server, body["auth_req_id"])
    assert tokens.status_code == 200, tokens.text
    keys = KeySet.import_key_set(requests.get(running.url + "/jwks", timeout=10).json())
    claims = jwt.decode(tokens.json()["id_token"], keys).claims
    assert (claims["iss"], claims["sub"], claims["aud"]) == (running.url, "alice", POLL[0])
    reused = token(server, body["auth_req_id"])
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")


def test_user_rejects(server: tuple[Running, Path]) -> None:
    """fapi-ciba-id1-user-rejects-authentication: access_denied at the token endpoint."""
    body = start(server, binding_message="deny").json()
    denied = wait_for_tokens(server, body["auth_req_id"])
    assert (denied.status_code, denied.json()["error"]) == (400, "access_denied")


def test_polling_too_fast(server: tuple[Running, Path]) -> None:
    """fapi-ciba-id1-ensure-... polls: authorization_pending, then slow_down when sooner than interval."""
    body = start(server, requested_expiry="30").json()
    first, second = token(server, body["auth_req_id"]), token(server, body["auth_req_id"])
    assert (first.json()["error"], second.json()["error"]) == ("authorization_pending", "slow_down")


def test_requested_expiry(server: tuple[Running, Path]) -> None:
    """fapi-ciba-id1-ensure-request-with-requested-expiry...: expires_in follows requested_expiry
    (a string in the form), and an expired request is expired_token."""
    body = start(server, requested_expiry="10", binding_message="deny").json()
    assert body["expires_in"] == 10
    time.sleep(10.2)
    expired = token(server, body["auth_req_id"])
    assert (expired.status_code, expired.json()["error"]) == (400, "expired_token")
    refused = start(server, requested_expiry="ten")
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_request")


@pytest.mark.parametrize(
    ("message", "status", "error"),
    [
        pytest.param("Pay 20 EUR", 200, None, id="plain"),
        pytest.param("Zahlung von 20 € an Café Zürich für Bestellung 4711, bitte bestätigen", 400,
                     "invalid_binding_message", id="long-non-ascii-over-64"),
        pytest.param("支払い 2000 円 — 注文 4711 を確認してください", 200, None, id="non-ascii-within-64"),
    ],
)  # fmt: skip
def test_binding_messages(server: tuple[Running, Path], message: str, status: int, error: str | None) -> None:
    """fapi-ciba-id1-ensure-authorization-request-with-binding-message...: accepted, or refused with
    invalid_binding_message (the plan takes either for a long one)."""
    answer = start(server, binding_message=message)
    assert answer.status_code == status
    if error is not None:
        assert answer.json()["error"] == error


def test_multiple_hints(server: tuple[Running, Path]) -> None:
    """fapi-ciba-id1-ensure-authorization-request-with-multiple-hints-fails: invalid_request."""
    answer = start(server, login_hint_token="x.y.z")
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")


def test_wrong_auth_req_id(server: tuple[Running, Path]) -> None:
    """fapi-ciba-id1-ensure-wrong-auth-req-id-fails: invalid_grant."""
    answer = token(server, "not-an-auth-req-id")
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")


def audit_records(audit: Path, kind: str) -> list[dict[str, Any]]:
    lines = audit.read_text().splitlines() if audit.exists() else []
    records = [json.loads(line) for line in lines]
    return [r for r in records if r["event"] == "ciba_notification" and r["client_id"] == f"ping-{kind}"]


@pytest.mark.parametrize("kind", list(PINGS))
def test_ping(server: tuple[Running, Path], endpoints: Endpoints, kind: str) -> None:
    """fapi-ciba-id1-ping-notification-endpoint-returns-{a-body, 401, 403, a-redirect}: the
    server notifies once, with the client's bearer token and the auth_req_id, whatever the
    endpoint answers; the client then gets its tokens at the token endpoint."""
    _, audit = server
    client = (f"ping-{kind}", "ping-secret")
    body = start(server, client, client_notification_token=f"bearer-{kind}-42").json()
    notified = endpoints.received[kind].get(timeout=10)
    assert notified == {"authorization": f"Bearer bearer-{kind}-42", "body": {"auth_req_id": body["auth_req_id"]}}
    tokens = token(server, body["auth_req_id"], client)
    assert tokens.status_code == 200, tokens.text
    time.sleep(0.3)  # the audit line is written after the answer
    (record,) = audit_records(audit, kind)
    expected = "delivered" if PINGS[kind] < 300 else "rejected"
    assert (record["outcome"], record["status"], record["attempts"]) == (expected, PINGS[kind], 1)
    assert endpoints.received[kind].empty()  # no retry
