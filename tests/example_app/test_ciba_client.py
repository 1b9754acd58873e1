"""The whole CIBA flow as a relying party sees it: openid-client against ``python -m example_app``.

The client is panva's openid-client (npm, version pinned in ciba_client/package-lock.json),
run by ``ciba_client/client.mjs`` and told nothing but the issuer URL and a client's
credentials: it discovers the endpoints, sends the backchannel requests, polls the token
endpoint and validates the ID token (claims, and the signature against the discovered JWKS).
The user decides on the device page in Debian's chromium, driven by Playwright. The server
runs with no configuration at all, as ``bash scripts/demo`` starts it.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _demo import Running, start_main
from playwright.sync_api import Browser, Page, sync_playwright

CLIENT_DIR = Path(__file__).with_name("ciba_client")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class RelyingParty:
    """One ``node client.mjs ISSUER CLIENT_ID SECRET`` process: a command per line, an answer per line."""

    def __init__(self, issuer: str, client_id: str, secret: str) -> None:
        node = shutil.which("node")
        if node is None or not (CLIENT_DIR / "node_modules" / "openid-client").is_dir():
            pytest.fail(f"needs node and openid-client: run `npm ci --prefix {CLIENT_DIR}` (scripts/check does)")
        self.process = subprocess.Popen(
            [node, str(CLIENT_DIR / "client.mjs"), issuer, client_id, secret],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.answer() == {"ok": "discovered"}

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def send(self, op: str, **args: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()

    def answer(self, timeout: float = 30) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            stderr = self.process.stderr.read() if self.process.poll() is not None and self.process.stderr else ""
            raise AssertionError(f"no answer from the CIBA client within {timeout}s {stderr}") from None
        return answer

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        self.send(op, **args)
        return self.answer()

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """``python -m example_app`` with nothing configured (module-wide: one start for all)."""
    running = start_main(tmp_path_factory.mktemp("rp"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rp(server: Running) -> Iterator[RelyingParty]:
    party = RelyingParty(server.url, "demo-client", "demo-secret")
    yield party
    party.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 800, "height": 640})
    yield context.new_page()
    context.close()


def error(answer: dict[str, Any]) -> tuple[int, str, str]:
    assert "error" in answer, answer
    failure = answer["error"]
    return failure.get("status"), failure.get("error"), failure.get("error_description")


def test_discovery_finds_every_ciba_endpoint(rp: RelyingParty, server: Running) -> None:
    metadata = rp.call("metadata")["ok"]
    assert (metadata["issuer"], metadata["backchannel_authentication_endpoint"], metadata["token_endpoint"]) == (
        server.url,
        f"{server.url}/backchannel/authentication",
        f"{server.url}/token",
    )
    assert metadata["backchannel_token_delivery_modes_supported"] == ["poll", "ping", "push"]
    assert metadata["grant_types_supported"] == ["urn:openid:params:grant-type:ciba"]


def _expired_login_hint_token(server: Running) -> str:
    index = requests.get(server.url + "/", timeout=10).json()
    token: str = index["sample_hints"]["login_hint_token for alice (expired)"]
    return token


NINE = [
    pytest.param({"login_hint": "nobody"}, 400, "unknown_user_id", "No user matches the hint.", id="UNKNOWN_USER_ID"),
    pytest.param(
        {"login_hint": "carol"},
        403,
        "access_denied",
        "The user does not allow this client to ask for authentication.",
        id="ACCESS_DENIED",
    ),
    pytest.param({"login_hint": "bob"}, 400, "missing_user_code", "This user requires a user code.", id="MISSING"),
    pytest.param(
        {"login_hint": "bob", "user_code": "1234"}, 400, "invalid_user_code", "The user code is wrong.", id="INVALID"
    ),
    pytest.param(
        {"login_hint": "alice", "binding_message": "Pay\t20 EUR"},
        400,
        "invalid_binding_message",
        "The binding_message cannot be shown.",
        id="INVALID_BINDING_MESSAGE",
    ),
    pytest.param(
        {"login_hint_token": "EXPIRED"},
        400,
        "expired_login_hint_token",
        "The login_hint_token has expired.",
        id="EXPIRED_LOGIN_HINT_TOKEN",
    ),
    pytest.param(
        {"login_hint": "alice", "resource": "https://evil.example/"},
        400,
        "invalid_target",
        "A resource is unknown or not an absolute URI.",
        id="INVALID_TARGET",
    ),
    pytest.param(
        {"login_hint": "dave"},
        500,
        "server_error",
        "The authorization server failed; try again later.",
        id="SERVER_ERROR",
    ),
]


@pytest.mark.parametrize(("params", "status", "code", "description"), NINE)
def test_each_rejection_reaches_the_client_library(
    rp: RelyingParty, server: Running, params: dict[str, str], status: int, code: str, description: str
) -> None:
    if params.get("login_hint_token") == "EXPIRED":
        params = {"login_hint_token": _expired_login_hint_token(server)}
    answer = rp.call("initiate", params={"scope": "openid", **params})
    assert error(answer) == (status, code, description)
    # openid-client reads a 4xx as the OAuth error it carries, and a 5xx as a response
    # that does not conform (the body is still the server_error, as CIBA Core 13 says).
    if status >= 500:
        expected = ("ClientError", "OAUTH_RESPONSE_IS_NOT_CONFORM")
    else:
        expected = ("ResponseBodyError", "OAUTH_RESPONSE_BODY_ERROR")
    assert (answer["error"]["name"], answer["error"]["code"]) == expected


def test_the_ninth_rejection_a_client_not_registered_for_ciba(server: Running) -> None:
    web = RelyingParty(server.url, "web-client", "web-secret")
    try:
        answer = web.call("initiate", params={"scope": "openid", "login_hint": "alice"})
    finally:
        web.close()
    assert error(answer) == (400, "unauthorized_client", "The client is not registered for CIBA.")


def test_a_wrong_secret_is_a_401_challenge(server: Running) -> None:
    wrong = RelyingParty(server.url, "demo-client", "wrong")
    try:
        answer = wrong.call("initiate", params={"scope": "openid", "login_hint": "alice"})
    finally:
        wrong.close()
    assert (answer["error"]["name"], answer["error"]["status"], answer["error"]["scheme"]) == (
        "WWWAuthenticateChallengeError",
        401,
        "basic",
    )


def test_pending_then_slow_down_before_the_user_decides(rp: RelyingParty) -> None:
    accepted = rp.call("initiate", params={"scope": "openid", "login_hint": "alice"})["ok"]
    assert (accepted["expires_in"], accepted["interval"]) == (120, 5)
    assert error(rp.call("poll_once", auth_req_id=accepted["auth_req_id"]))[:2] == (400, "authorization_pending")
    assert error(rp.call("poll_once", auth_req_id=accepted["auth_req_id"]))[:2] == (400, "slow_down")


def test_expired_request(rp: RelyingParty) -> None:
    accepted = rp.call("initiate", params={"scope": "openid", "login_hint": "alice", "requested_expiry": "1"})["ok"]
    assert accepted["expires_in"] == 1
    time.sleep(1.2)
    assert error(rp.call("poll_once", auth_req_id=accepted["auth_req_id"])) == (
        400,
        "expired_token",
        "the auth_req_id has expired",
    )


def _open_device(page: Page, server: Running, binding_message: str) -> Any:
    page.goto(f"{server.url}/device/alice")
    request = page.locator("section.request", has=page.locator(".binding", has_text=binding_message))
    assert request.count() == 1
    return request


def test_approved_on_the_device_page_the_library_gets_validated_tokens(
    rp: RelyingParty, server: Running, page: Page, tmp_path: Path
) -> None:
    accepted = rp.call(
        "initiate", params={"scope": "openid profile", "login_hint": "alice", "binding_message": "Pay 20 EUR"}
    )["ok"]
    # openid-client polls on its own (every `interval` seconds) while the user decides.
    rp.send("poll", response=accepted)

    request = _open_device(page, server, "Pay 20 EUR")
    assert (request.locator(".client").inner_text().split()[0], request.locator(".scope").inner_text()) == (
        "demo-client",
        "openid profile",
    )
    page.screenshot(path=str(tmp_path / "device.png"))
    request.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"{server.url}/device/alice?decided=approved")
    assert page.get_by_role("status").inner_text() == "Request approved."
    assert page.locator("section.request", has=page.locator(".binding", has_text="Pay 20 EUR")).count() == 0

    answer = rp.answer(timeout=30)
    tokens = answer["ok"]
    assert (tokens["token_type"].lower(), tokens["scope"]) == ("bearer", "openid profile")
    claims = tokens["claims"]
    assert (claims["iss"], claims["sub"], claims["aud"]) == (server.url, "alice", "demo-client")
    assert claims["exp"] - claims["iat"] == 3600
    # Collected once: the same auth_req_id is now spent.
    assert error(rp.call("poll_once", auth_req_id=accepted["auth_req_id"]))[:2] == (400, "invalid_grant")


def test_denied_on_the_device_page_the_library_gets_access_denied(
    rp: RelyingParty, server: Running, page: Page
) -> None:
    accepted = rp.call(
        "initiate", params={"scope": "openid", "login_hint": "alice", "binding_message": "Log in at the kiosk"}
    )["ok"]
    rp.send("poll", response=accepted)
    request = _open_device(page, server, "Log in at the kiosk")
    request.get_by_role("button", name="Deny").click()
    page.wait_for_url(f"{server.url}/device/alice?decided=denied")
    assert page.get_by_role("status").inner_text() == "Request denied."
    assert error(rp.answer(timeout=30)) == (400, "access_denied", "The user denied the request.")


# -- ping mode: a client registered through CIBA_CLIENTS, notified on 127.0.0.1 -----------


class Notifications:
    """The ping client's notification endpoint on 127.0.0.1: records each request."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.put({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ciba/notify"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_ping_mode_with_a_client_from_ciba_clients(tmp_path: Path, page: Page) -> None:
    from ciba_middleware import sha256_hex

    notifications = Notifications()
    clients = [
        {
            "client_id": "ping-client",
            "service": "715948317",
            "client_secret_sha256": sha256_hex("ping-secret"),
            "delivery_mode": "ping",
            "notification_endpoint": notifications.url,
        }
    ]
    running = start_main(
        tmp_path, CIBA_CLIENTS=json.dumps(clients), CIBA_NOTIFICATION_INSECURE_HOSTS="127.0.0.1", CIBA_AUDIT_LOG="off"
    )
    party = RelyingParty(running.url, "ping-client", "ping-secret")
    try:
        metadata = party.call("metadata")["ok"]
        assert "ping" in metadata["backchannel_token_delivery_modes_supported"]
        params = {
            "scope": "openid",
            "login_hint": "alice",
            "binding_message": "Ping 7",
            "client_notification_token": "notify-me-8f2c",
        }
        accepted = party.call("initiate", params=params)["ok"]
        assert error(party.call("poll_once", auth_req_id=accepted["auth_req_id"]))[:2] == (400, "authorization_pending")
        request = _open_device(page, running, "Ping 7")
        request.get_by_role("button", name="Approve").click()
        page.wait_for_url(f"{running.url}/device/alice?decided=approved")
        notified = notifications.received.get(timeout=10)
        assert notified["authorization"] == "Bearer notify-me-8f2c"
        assert json.loads(notified["body"]) == {"auth_req_id": accepted["auth_req_id"]}
        time.sleep(accepted["interval"])
        tokens = party.call("poll_once", auth_req_id=accepted["auth_req_id"])["ok"]
        assert (tokens["claims"]["sub"], tokens["claims"]["aud"]) == ("alice", "ping-client")
        # Without the notification token a ping client is refused by the endpoint.
        refused = party.call("initiate", params={"scope": "openid", "login_hint": "alice"})
        assert error(refused)[:2] == (400, "invalid_request")
    finally:
        party.close()
        running.stop()
        notifications.close()
