"""Ping and push delivery against real local HTTP servers; refusals checked before any connection."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ciba_middleware.audit import AuditLog
from ciba_middleware.ciba.delivery import (
    INSECURE_HOSTS_VARIABLE,
    Attempt,
    Notification,
    Notifier,
    allowed_address,
    insecure_hosts,
)

LOCAL = frozenset({"127.0.0.1"})


class Receiver:
    """A client's notification endpoint on 127.0.0.1: answers from a script, records what it got."""

    def __init__(self, *answers: int, delay: float = 0.0) -> None:
        self.answers = list(answers)
        self.delay = delay
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ciba/notify?client=7"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


def serve(receivers: list[Receiver], *answers: int, delay: float = 0.0) -> Receiver:
    receiver = Receiver(*answers, delay=delay)
    receivers.append(receiver)
    return receiver


def note(endpoint: str, mode: str = "ping") -> Notification:
    return Notification("715948317", "app", mode, endpoint, "notify-token-123", '{"auth_req_id":"x"}', "0123456789ab")


def notifier(**options: Any) -> Notifier:
    options.setdefault("hosts", LOCAL)
    options.setdefault("timeout", 1.0)
    options.setdefault("retries", 2)
    options.setdefault("backoff", 0.01)
    return Notifier(**options)


@pytest.mark.parametrize("status", [200, 204])
def test_delivered(receivers: list[Receiver], status: int) -> None:
    receiver = serve(receivers, status)
    attempt = notifier().deliver(note(receiver.url))
    assert attempt == Attempt("delivered", status, 1, f"HTTP {status}")
    (got,) = receiver.received
    assert got["path"] == "/ciba/notify?client=7"
    assert got["headers"]["Authorization"] == "Bearer notify-token-123"
    assert got["headers"]["Content-Type"] == "application/json"
    assert json.loads(got["body"]) == {"auth_req_id": "x"}


@pytest.mark.parametrize("status", [401, 403, 400, 302, 307])
def test_no_retry_after_a_refusal_or_a_redirect(receivers: list[Receiver], status: int) -> None:
    receiver = serve(receivers, status)
    attempt = notifier().deliver(note(receiver.url))
    assert (attempt.outcome, attempt.status, attempt.attempts) == ("rejected", status, 1)
    assert [r["path"] for r in receiver.received] == ["/ciba/notify?client=7"]  # the redirect was not followed


def test_a_5xx_is_retried(receivers: list[Receiver]) -> None:
    receiver = serve(receivers, 500, 200)
    attempt = notifier().deliver(note(receiver.url))
    assert (attempt.outcome, attempt.status, attempt.attempts) == ("delivered", 200, 2)
    assert len(receiver.received) == 2


def test_retries_are_bounded_and_a_lost_push_is_loud(
    receivers: list[Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = serve(receivers, 503)
    with caplog.at_level(logging.INFO, "ciba_middleware.ciba.delivery"):
        attempt = notifier(retries=2).deliver(note(receiver.url, "push"))
    assert (attempt.outcome, attempt.status, attempt.attempts) == ("failed", 503, 3)
    assert len(receiver.received) == 3
    lost = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lost) == 1
    assert "PUSH NOTIFICATION LOST" in lost[0].getMessage()
    assert "notify-token-123" not in caplog.text


def test_a_failed_ping_is_a_warning(receivers: list[Receiver], caplog: pytest.LogCaptureFixture) -> None:
    receiver = serve(receivers, 500)
    with caplog.at_level(logging.INFO, "ciba_middleware.ciba.delivery"):
        notifier(retries=0).deliver(note(receiver.url))
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_a_slow_endpoint_times_out_and_is_retried(receivers: list[Receiver]) -> None:
    receiver = serve(receivers, 200, delay=1.0)
    started = time.monotonic()
    attempt = notifier(timeout=0.2, retries=1).deliver(note(receiver.url))
    assert (attempt.outcome, attempt.status, attempt.attempts, attempt.detail) == ("failed", None, 2, "timed out")
    assert time.monotonic() - started < 1.5
    assert len(receiver.received) == 2


@pytest.mark.parametrize(
    ("url", "hosts", "why"),
    [
        pytest.param("http://127.0.0.1:{port}/n", frozenset(), "must be https", id="loopback-http-not-listed"),
        pytest.param("https://127.0.0.1:{port}/n", frozenset(), "loopback", id="loopback-not-listed"),
        pytest.param("https://10.1.2.3/n", LOCAL, "private", id="private"),
        pytest.param("https://192.168.0.7/n", LOCAL, "private", id="private-192"),
        pytest.param("https://169.254.169.254/latest/meta-data", LOCAL, "link-local", id="metadata"),
        pytest.param("https://[::1]/n", LOCAL, "loopback", id="ipv6-loopback"),
        pytest.param("https://[::ffff:10.0.0.1]/n", LOCAL, "private", id="ipv4-mapped"),
        pytest.param("https://0.0.0.0/n", LOCAL, "reserved", id="unspecified"),
        pytest.param("ftp://example.com/n", LOCAL, "must be https", id="ftp"),
        pytest.param("https:///n", LOCAL, "no host", id="no-host"),
        pytest.param("https://example.com:99999/n", LOCAL, "not a URL", id="bad-port"),
    ],
)
def test_refused_before_any_connection(receivers: list[Receiver], url: str, hosts: frozenset[str], why: str) -> None:
    receiver = serve(receivers, 200)
    attempt = notifier(hosts=hosts).deliver(note(url.format(port=receiver.port)))
    assert (attempt.outcome, attempt.attempts) == ("refused", 1)
    assert why in attempt.detail
    assert receiver.received == []


def test_every_resolved_address_is_checked() -> None:
    # A name answering one public and one private address (DNS rebinding's first step) is refused.
    attempt = notifier(resolve=lambda host, port: ["93.184.215.14", "10.0.0.5"]).deliver(
        note("https://notify.example/n")
    )
    assert attempt.outcome == "refused"
    assert "10.0.0.5" in attempt.detail


def test_the_connection_goes_to_the_checked_address(receivers: list[Receiver]) -> None:
    # The listed name resolves (here, by the test's resolver) to the receiver's address, and
    # the request goes to that address with the name in Host: no second lookup.
    receiver = serve(receivers, 200)
    resolved: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    attempt = notifier(hosts=frozenset({"notify.test"}), resolve=resolve).deliver(
        note(f"http://notify.test:{receiver.port}/n")
    )
    assert attempt.outcome == "delivered"
    assert resolved == ["notify.test"]
    assert receiver.received[0]["headers"]["Host"] == f"notify.test:{receiver.port}"


def test_a_name_that_does_not_resolve() -> None:
    attempt = notifier(hosts=frozenset()).deliver(note("https://no-such-host.invalid/n"))
    assert attempt.outcome == "refused"


def test_the_worker_delivers_off_the_callers_thread(receivers: list[Receiver]) -> None:
    receiver = serve(receivers, 200)
    done = threading.Event()
    ended: list[tuple[str, str]] = []
    sender = notifier()
    sender.on_outcome = lambda n, a: (ended.append((threading.current_thread().name, a.outcome)), done.set())
    assert sender.submit(note(receiver.url)) is True
    assert done.wait(5)
    sender.close()
    assert ended == [("ciba-notifier", "delivered")]


def test_a_full_queue_drops_loudly(receivers: list[Receiver], caplog: pytest.LogCaptureFixture) -> None:
    receiver = serve(receivers, 200, delay=0.5)
    sender = notifier(queue_size=1, timeout=2.0)
    outcomes: list[str] = []
    sender.on_outcome = lambda n, a: outcomes.append(a.outcome)
    assert sender.submit(note(receiver.url)) is True
    deadline = time.monotonic() + 5
    while not receiver.received and time.monotonic() < deadline:  # the worker holds the first
        time.sleep(0.01)
    assert sender.submit(note(receiver.url)) is True  # waits in the queue
    assert sender.submit(note(receiver.url, "push")) is False
    assert "dropped" in outcomes
    assert "PUSH NOTIFICATION LOST" in caplog.text
    sender.close()
    assert outcomes.count("delivered") == 2


def test_a_closed_notifier_drops() -> None:
    sender = notifier()
    sender.close()
    assert sender.submit(note("https://example.com/n")) is False


def test_outcomes_in_the_audit_log_and_the_metrics(receivers: list[Receiver]) -> None:
    from ciba_middleware.metrics import Metrics

    receiver = serve(receivers, 401)
    logger = logging.getLogger("test.delivery.audit")
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    metrics = Metrics()
    sender = notifier(audit=AuditLog(logger), metrics=metrics)
    sender.deliver(note(receiver.url))
    sender.deliver(note("https://10.0.0.1/n"))
    records = [json.loads(line) for line in lines]
    assert [(r["event"], r["outcome"], r["status"]) for r in records] == [
        ("ciba_notification", "rejected", 401),
        ("ciba_notification", "refused", None),
    ]
    assert records[0]["ticket_hash"] == "0123456789ab"
    assert "notify-token-123" not in "".join(lines)
    assert "auth_req_id" not in "".join(lines)
    value = metrics.registry.get_sample_value(
        "ciba_notifications_total", {"service": "715948317", "mode": "ping", "outcome": "rejected"}
    )
    assert value == 1.0
    Notifier(metrics=metrics)  # a second notifier on the same metrics shares the counter


def test_insecure_hosts_from_the_environment() -> None:
    assert insecure_hosts({INSECURE_HOSTS_VARIABLE: " 127.0.0.1, Localhost ,,[::1]"}) == {
        "127.0.0.1",
        "localhost",
        "::1",
    }
    assert insecure_hosts({}) == frozenset()


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("fe80::1%eth0", False),
        ("224.0.0.1", False),
        ("100.64.0.1", False),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_allowed_address(address: str, allowed: bool) -> None:
    assert allowed_address(address) is allowed


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"timeout": 0}, "timeout"),
        ({"retries": -1}, "retries"),
        ({"retries": 11}, "retries"),
        ({"backoff": -1}, "backoff"),
    ],
)
def test_bad_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Notifier(**options)


def test_a_ping_flow_end_to_end(receivers: list[Receiver], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ping client on 127.0.0.1, allowed by the variable: the notification carries its
    bearer token and the auth_req_id, and the client then gets its tokens."""
    from conftest import SERVICE

    from ciba_middleware import sha256_hex
    from ciba_middleware.ciba.endpoints import CibaEndpoints

    from ._family import GRANT, SECRET, family_env, signing_key
    from .test_endpoints import DemoHooks, basic, call

    receiver = serve(receivers, 204)
    monkeypatch.setenv(INSECURE_HOSTS_VARIABLE, "127.0.0.1")
    client = {
        "client_id": "pinger",
        "service": SERVICE,
        "client_secret_sha256": sha256_hex(SECRET),
        "delivery_mode": "ping",
        "notification_endpoint": receiver.url,
    }
    env = family_env(tmp_path, signing_key(tmp_path)[0], CIBA_AUDIT_LOG="off", CIBA_CLIENTS=json.dumps([client]))
    from ciba_middleware.config import Settings

    api = Settings.from_mapping(env).build_api(announce=False).api
    hooks = DemoHooks()
    sender = Notifier.for_api(api, backoff=0.01)
    done = threading.Event()
    sender.on_outcome = lambda n, a: done.set()
    endpoints = CibaEndpoints(api, SERVICE, hooks, notifier=sender)
    try:
        started = call(
            endpoints.backchannel_authentication,
            basic("pinger"),
            scope="openid",
            login_hint="alice",
            client_notification_token="ping-token-9",
        )
        auth_req_id = started.json()["auth_req_id"]
        assert endpoints.complete(hooks.started[0].ticket, "AUTHORIZED", subject="alice").notified
        assert done.wait(5)
        (got,) = receiver.received
        assert got["headers"]["Authorization"] == "Bearer ping-token-9"
        assert json.loads(got["body"]) == {"auth_req_id": auth_req_id}
        tokens = call(endpoints.token, basic("pinger"), grant_type=GRANT, auth_req_id=auth_req_id)
        assert tokens.status == 200
    finally:
        sender.close()
        api.store.close()


def test_an_http_notification_endpoint_needs_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from ciba_middleware.ciba.clients import ClientRegistry
    from ciba_middleware.errors import ConfigurationError

    client = {
        "client_id": "pinger",
        "service": "1",
        "client_secret": "s",
        "delivery_mode": "ping",
        "notification_endpoint": "http://127.0.0.1:9/n",
    }
    monkeypatch.delenv(INSECURE_HOSTS_VARIABLE, raising=False)
    with pytest.raises(ConfigurationError, match="https URL"):
        ClientRegistry([client])
    monkeypatch.setenv(INSECURE_HOSTS_VARIABLE, "127.0.0.1")
    assert ClientRegistry([client]).find("1", "pinger") is not None


def _certificate(tmp: Any, name: str) -> tuple[Any, Any]:
    """A self-signed certificate for the DNS name ``name`` and its key, as files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.mark.parametrize(("served_as", "outcome"), [("notify.test", "delivered"), ("other.test", "failed")])
def test_https_checks_the_hosts_name_on_the_checked_address(
    receivers: list[Receiver], tmp_path: Any, served_as: str, outcome: str
) -> None:
    """TLS to the address that was checked, verified against the URL's host name (SNI and the
    certificate), not against the address: a certificate for another name fails."""
    import ssl

    receiver = serve(receivers, 200)
    cert, key = _certificate(tmp_path, served_as)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    receiver.server.socket = server_context.wrap_socket(receiver.server.socket, server_side=True)
    client_context = ssl.create_default_context(cafile=str(cert))
    sender = notifier(
        hosts=frozenset({"notify.test"}),
        resolve=lambda host, port: ["127.0.0.1"],
        ssl_context=client_context,
        retries=0,
    )
    attempt = sender.deliver(note(f"https://notify.test:{receiver.port}/n"))
    assert attempt.outcome == outcome
    if outcome == "delivered":
        assert receiver.received[0]["headers"]["Host"] == f"notify.test:{receiver.port}"
    else:
        assert "CERTIFICATE_VERIFY_FAILED" in attempt.detail
        assert attempt.attempts == 1  # not retried: the same certificate would come back
