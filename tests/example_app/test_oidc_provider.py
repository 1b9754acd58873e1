"""The same client checks against the demo and against node's oidc-provider, side by side.

oidc-provider (npm, pinned in oidc_provider/package-lock.json; ``npm ci --prefix
tests/example_app/oidc_provider`` installs it) runs with its CIBA feature in poll and ping mode,
configured like the demo (``oidc_provider/server.mjs``: the same users, automated approval, a
binding message ``deny`` denied). Each check gives a short outcome on each side; the table of
docs/fapi-ciba.md says what each side answers, and this test holds both to it, so that every
difference is written down there.
"""

from __future__ import annotations

import datetime
import json
import queue
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from _demo import Running, start_main
from conftest import ROOT, free_port

from ciba_middleware import sha256_hex

GRANT = "urn:openid:params:grant-type:ciba"
PROVIDER_DIR = Path(__file__).with_name("oidc_provider")
PAGE = ROOT / "docs" / "fapi-ciba.md"


@dataclass
class Side:
    """One server as a client sees it: its metadata, a poll client, a ping client, its notifications."""

    name: str
    base: str
    notifications: queue.Queue[dict[str, Any]]

    @property
    def metadata(self) -> dict[str, Any]:
        found: dict[str, Any] = requests.get(self.base + "/.well-known/openid-configuration", timeout=10).json()
        return found

    def start(self, client: tuple[str, str] = ("fapi-poll", "fapi-poll-secret"), **form: str) -> requests.Response:
        params = {"scope": "openid", "login_hint": "alice", **form}
        endpoint = self.metadata["backchannel_authentication_endpoint"]
        return requests.post(endpoint, data=params, auth=client, timeout=10)

    def token(self, auth_req_id: str, client: tuple[str, str] = ("fapi-poll", "fapi-poll-secret")) -> requests.Response:
        form = {"grant_type": GRANT, "auth_req_id": auth_req_id}
        return requests.post(self.metadata["token_endpoint"], data=form, auth=client, timeout=10)

    def decided(
        self, auth_req_id: str, client: tuple[str, str] = ("fapi-poll", "fapi-poll-secret")
    ) -> requests.Response:
        deadline = time.monotonic() + 20
        while True:
            time.sleep(1.05)
            answer = self.token(auth_req_id, client)
            if answer.status_code != 400 or answer.json()["error"] not in ("authorization_pending", "slow_down"):
                return answer
            assert time.monotonic() < deadline


def outcome(answer: requests.Response) -> str:
    """``200`` or the OAuth error, as the table writes it."""
    return "200" if answer.status_code == 200 else answer.json()["error"]


# -- the checks: each returns the outcome the table shows --------------------------------------


def check_modes(side: Side) -> str:
    return " ".join(side.metadata["backchannel_token_delivery_modes_supported"])


def check_interval(side: Side) -> str:
    body = side.start().json()
    return str(body.get("interval", "absent"))


def check_normal_flow(side: Side) -> str:
    body = side.start(binding_message="FAPI-1").json()
    tokens = side.decided(body["auth_req_id"])
    return f"{outcome(tokens)}, then {outcome(side.token(body['auth_req_id']))}"


def check_denial(side: Side) -> str:
    body = side.start(binding_message="deny").json()
    return outcome(side.decided(body["auth_req_id"]))


def check_fast_polls(side: Side) -> str:
    body = side.start(binding_message="deny", requested_expiry="30").json()
    first, second = side.token(body["auth_req_id"]), side.token(body["auth_req_id"])
    return f"{outcome(first)}, {outcome(second)}"


def check_requested_expiry(side: Side) -> str:
    body = side.start(binding_message="deny", requested_expiry="10").json()
    time.sleep(11)  # a second past the expiry: the servers and this machine may be busy
    return f"expires_in {body['expires_in']}, then {outcome(side.token(body['auth_req_id']))}"


def check_requested_expiry_not_a_number(side: Side) -> str:
    return outcome(side.start(requested_expiry="ten"))


def check_binding_message_with_spaces(side: Side) -> str:
    return outcome(side.start(binding_message="Pay 20 EUR"))


def check_binding_message_non_ascii(side: Side) -> str:
    return outcome(side.start(binding_message="支払い2000円"))


def check_binding_message_long(side: Side) -> str:
    return outcome(
        side.start(binding_message="Zahlung-von-20-EUR-an-Cafe-Zuerich-fuer-Bestellung-4711-bitte-bestaetigen")
    )


def check_multiple_hints(side: Side) -> str:
    return outcome(side.start(login_hint_token="x.y.z"))


def check_unknown_user(side: Side) -> str:
    return outcome(side.start(login_hint="nobody"))


def check_wrong_user_code(side: Side) -> str:
    return outcome(side.start(login_hint="bob", user_code="1234"))


def check_wrong_auth_req_id(side: Side) -> str:
    return outcome(side.token("not-an-auth-req-id"))


def check_wrong_secret(side: Side) -> str:
    answer = side.start(("fapi-poll", "wrong"))
    return f"{answer.status_code} {outcome(answer)}"


def check_ping(side: Side) -> str:
    client = ("ping-body", "ping-secret")
    body = side.start(client, client_notification_token="bearer-ping-42").json()
    notified = side.notifications.get(timeout=15)
    assert notified["body"] == {"auth_req_id": body["auth_req_id"]}
    assert notified["authorization"] == "Bearer bearer-ping-42"
    return f"notified, then {outcome(side.token(body['auth_req_id'], client))}"


CHECKS: dict[str, Callable[[Side], str]] = {
    "discovery: delivery modes": check_modes,
    "interval in the answer": check_interval,
    "normal flow (poll), then the auth_req_id again": check_normal_flow,
    "the user denies": check_denial,
    "two polls at once": check_fast_polls,
    "requested_expiry 10, polled after 10 s": check_requested_expiry,
    "requested_expiry not a number": check_requested_expiry_not_a_number,
    "binding_message with spaces": check_binding_message_with_spaces,
    "binding_message non-ASCII": check_binding_message_non_ascii,
    "binding_message of 73 characters": check_binding_message_long,
    "two hints": check_multiple_hints,
    "unknown user": check_unknown_user,
    "wrong user code": check_wrong_user_code,
    "wrong auth_req_id": check_wrong_auth_req_id,
    "wrong client secret": check_wrong_secret,
    "ping: the endpoint answers 200 with a body": check_ping,
}


def documented() -> dict[str, tuple[str, str]]:
    """The table of docs/fapi-ciba.md: check -> (the demo, oidc-provider)."""
    rows = re.findall(r"^\| (.+?) \| `(.*?)` \| `(.*?)` \|", PAGE.read_text(encoding="utf-8"), re.MULTILINE)
    return {check: (demo, provider) for check, demo, provider in rows}


# -- the two servers -----------------------------------------------------------------------------


class Notifications:
    """A ping client's notification endpoint answering 200 with a body, over http or https."""

    def __init__(self, cert: tuple[Path, Path] | None = None) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.put({"authorization": self.headers.get("Authorization"), "body": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "16")
                self.end_headers()
                self.wfile.write(b'{"thanks": true}')

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*cert)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/ping"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, for oidc-provider's https-only ping endpoint."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    tmp = tmp_path_factory.mktemp("side_demo")
    notifications = Notifications()
    clients = [
        {"client_id": "fapi-poll", "service": "715948317", "client_secret_sha256": sha256_hex("fapi-poll-secret")},
        {
            "client_id": "ping-body",
            "service": "715948317",
            "client_secret_sha256": sha256_hex("ping-secret"),
            "delivery_mode": "ping",
            "notification_endpoint": notifications.url,
        },
    ]
    running: Running = start_main(
        tmp,
        CIBA_CLIENTS=json.dumps(clients),
        CIBA_NOTIFICATION_INSECURE_HOSTS="127.0.0.1",
        CIBA_DEMO_AUTO_APPROVE="0.3",
        CIBA_AUDIT_LOG="off",
    )
    yield Side("demo", running.url, notifications.received)
    running.stop()
    notifications.close()


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    node = shutil.which("node")
    if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(f"needs node and oidc-provider: run `npm ci --prefix {PROVIDER_DIR}`")
    tmp = tmp_path_factory.mktemp("side_provider")
    cert = self_signed(tmp)
    notifications = Notifications(cert)
    port = free_port()
    log = (tmp / "stderr.txt").open("w")
    process = subprocess.Popen(
        [node, str(PROVIDER_DIR / "server.mjs"), str(port), notifications.url],
        env={"PATH": "/usr/bin:/bin", "NODE_EXTRA_CA_CERTS": str(cert[0])},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "listening"
    yield Side("oidc-provider", f"http://127.0.0.1:{port}", notifications.received)
    process.terminate()
    process.wait(10)
    process.stdout.close()
    log.close()
    notifications.close()


def test_every_check_is_documented() -> None:
    assert set(documented()) == set(CHECKS)


@pytest.mark.parametrize("check", list(CHECKS))
def test_side_by_side(demo: Side, provider: Side, check: str) -> None:
    seen = (CHECKS[check](demo), CHECKS[check](provider))
    assert seen == documented()[check]
