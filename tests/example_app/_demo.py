"""The demo server under gunicorn, and ways to look into it from outside: its store and audit log.

(Not a conftest.py: a second module named ``conftest`` would shadow tests/conftest.py.)

Each server gets an SQLite file and an audit log file of its own, so a test can check that
a rejected request's ticket was issued, failed through the fail API and deleted (the audit
line says so, and the store holds no more tickets than before), and that a request the
endpoint answers itself never reached the fail API.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import API_HEADERS, AT_ONCE, GRANTS, ROOT, SERVICE, SERVICE_TOKEN, LiveServer, free_port
from joserfc.jwk import ECKey

from ciba_middleware.stores import ticket_hash
from example_app import hints

HINT_KEY = "test-hint-key"
#: The ID token signing key every process of a test server shares.
SIGNING_KEY = ECKey.generate_key("P-256", private=True)
ENDPOINT = "/backchannel/authentication"
DEMO = ("demo-client", "demo-secret")


def hint(claims: dict[str, Any]) -> str:
    """A login_hint_token or id_token_hint the demo accepts (signed with the tests' key)."""
    return hints.mint(claims, HINT_KEY.encode())


@dataclass
class Demo:
    """A running demo server and the files it writes."""

    server: LiveServer
    url: str
    db: Path
    audit: Path
    _seen: int = field(default=0)

    def post(self, form: Any, auth: tuple[str, str] | None = DEMO, **kw: Any) -> requests.Response:
        return requests.post(self.url + ENDPOINT, data=form, auth=auth, timeout=10, **kw)

    def tickets(self) -> int:
        """Live and expired tickets in the store, all services."""
        return len(self.ticket_expiry())

    def ticket_hashes(self) -> list[str]:
        """The :func:`ticket_hash` of every ticket in the store, as the audit log names them."""
        return list(self.ticket_expiry())

    def ticket_expiry(self) -> dict[str, float]:
        """:func:`ticket_hash` -> seconds left, for every ticket in the store."""
        with contextlib.closing(sqlite3.connect(self.db)) as db, db:
            rows = db.execute("SELECT ticket, expires_at FROM ciba_tickets").fetchall()
        now = time.time()
        return {ticket_hash(ticket): expires_at - now for ticket, expires_at in rows}

    def new_audit(self) -> list[dict[str, Any]]:
        """Fail API audit records (``ciba_fail``) written since the last call."""
        return [r for r in self.new_records() if r["event"] == "ciba_fail"]

    def new_records(self) -> list[dict[str, Any]]:
        """Every audit record written since the last call: the fail API's, the family's
        (``ciba_api``, one per in-process call of the endpoints) and the notifications'."""
        lines = self.audit.read_text().splitlines() if self.audit.exists() else []
        new, self._seen = lines[self._seen :], len(lines)
        return [json.loads(line) for line in new]


def signing_key_file(tmp: Path) -> Path:
    """:data:`SIGNING_KEY` in a file, for ``CIBA_SIGNING_KEY_FILE``."""
    path = tmp / "signing-key.jwk"
    path.write_text(json.dumps(SIGNING_KEY.as_dict(private=True)))
    return path


def id_token_hint(claims: dict[str, Any]) -> str:
    """An id_token_hint the demo accepts: an ID token signed with :data:`SIGNING_KEY`."""
    from ciba_middleware.ciba.keys import SigningKey

    return SigningKey(SIGNING_KEY.as_dict(private=True)).sign(claims)


def start_demo(tmp: Path, *, via_http: bool = False, workers: int = 2, threads: int = 4, **env: str) -> Demo:
    db, audit = tmp / "tickets.sqlite3", tmp / "audit.jsonl"
    base = {
        "CIBA_STORE_URL": f"sqlite:///{db}",
        # The Flask way: from_prefixed_env json-loads the list of grants.
        "FLASK_CIBA_TOKENS": json.dumps(GRANTS),
        "CIBA_SERVICE_ID": SERVICE,
        "CIBA_DEMO_HINT_KEY": HINT_KEY,
        "CIBA_AUDIT_LOG": str(audit),
        **AT_ONCE,
        "CIBA_DEMO_DATABASE": str(tmp / "demo.sqlite3"),
        "CIBA_SIGNING_KEY_FILE": str(signing_key_file(tmp)),
    }
    extra: tuple[str, ...] = ()
    if via_http:
        # The app calls itself: a second address whose port is known before start-up
        # gives it its own URL, and threads keep the call from waiting on itself.
        port = free_port()
        base |= {
            "CIBA_DEMO_FAIL_VIA": "http",
            "CIBA_DEMO_API_BASE_URL": f"http://127.0.0.1:{port}",
            "CIBA_DEMO_ACCESS_TOKEN": SERVICE_TOKEN,
        }
        extra = ("--bind", f"127.0.0.1:{port}", "--threads", str(threads))
    server = LiveServer("example_app.wsgi:app", {**base, **env}, workers=workers, extra=extra)
    demo = Demo(server, server.url, db, audit)
    demo.new_audit()
    return demo


CLIENT_HEADERS = API_HEADERS
NOW = int(time.time())

#: (form, auth, status, error, error_description) of each rejection by a rule of the server.
FAILED = [
    pytest.param(
        {"scope": "openid", "login_hint": "nobody"},
        None,
        400,
        "unknown_user_id",
        "No user matches the hint.",
        id="UNKNOWN_USER_ID-login_hint",
    ),
    pytest.param(
        {"scope": "openid", "login_hint_token": hint({"sub": "nobody", "exp": NOW + 600})},
        None,
        400,
        "unknown_user_id",
        "No user matches the hint.",
        id="UNKNOWN_USER_ID-login_hint_token",
    ),
    pytest.param(
        {"scope": "openid", "id_token_hint": id_token_hint({"sub": "nobody", "aud": "demo-client"})},
        None,
        400,
        "unknown_user_id",
        "No user matches the hint.",
        id="UNKNOWN_USER_ID-id_token_hint",
    ),
    pytest.param(
        {"scope": "openid", "login_hint_token": "abc"},
        None,
        400,
        "unknown_user_id",
        "No user matches the hint.",
        id="UNKNOWN_USER_ID-login_hint_token-not-a-jwt",
    ),
    pytest.param(
        {"scope": "openid", "login_hint_token": hint({"sub": "alice"})[:-2] + "xx"},
        None,
        400,
        "unknown_user_id",
        "No user matches the hint.",
        id="UNKNOWN_USER_ID-login_hint_token-not-signed-by-this-server",
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "carol"},
        None,
        403,
        "access_denied",
        "The user does not allow this client to ask for authentication.",
        id="ACCESS_DENIED-blocked-client",
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "alice", "binding_message": "x" * 65},
        None,
        400,
        "invalid_binding_message",
        "The binding_message cannot be shown.",
        id="INVALID_BINDING_MESSAGE-too-long",
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "alice", "binding_message": "Pay\n20 EUR"},
        None,
        400,
        "invalid_binding_message",
        "The binding_message cannot be shown.",
        id="INVALID_BINDING_MESSAGE-control-character",
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "bob"},
        None,
        400,
        "missing_user_code",
        "This user requires a user code.",
        id="MISSING_USER_CODE",
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "bob", "user_code": "1234"},
        None,
        400,
        "invalid_user_code",
        "The user code is wrong.",
        id="INVALID_USER_CODE",
    ),
    pytest.param(
        {"scope": "openid", "login_hint_token": hint({"sub": "alice", "exp": NOW - 1})},
        None,
        400,
        "expired_login_hint_token",
        "The login_hint_token has expired.",
        id="EXPIRED_LOGIN_HINT_TOKEN",
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "alice"},
        ("web-client", "web-secret"),
        400,
        "unauthorized_client",
        "The client is not registered for CIBA.",
        id="UNAUTHORIZED_CLIENT",
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "alice", "resource": "https://evil.example/"},
        None,
        400,
        "invalid_target",
        "A resource is unknown or not an absolute URI.",
        id="INVALID_TARGET-unknown",
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "alice", "resource": ["https://api.example.com/payments", "/accounts"]},
        None,
        400,
        "invalid_target",
        "A resource is unknown or not an absolute URI.",
        id="INVALID_TARGET-one-of-two-relative",
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "alice", "resource": "https://api.example.com/payments#x"},
        None,
        400,
        "invalid_target",
        "A resource is unknown or not an absolute URI.",
        id="INVALID_TARGET-fragment",
    ),
    pytest.param(
        {"scope": "openid", "login_hint": "dave"},
        None,
        500,
        "server_error",
        "The authorization server failed; try again later.",
        id="SERVER_ERROR-device-unreachable",
    ),
]

REASON_OF = {
    "unknown_user_id": "UNKNOWN_USER_ID",
    "access_denied": "ACCESS_DENIED",
    "invalid_binding_message": "INVALID_BINDING_MESSAGE",
    "missing_user_code": "MISSING_USER_CODE",
    "invalid_user_code": "INVALID_USER_CODE",
    "expired_login_hint_token": "EXPIRED_LOGIN_HINT_TOKEN",
    "unauthorized_client": "UNAUTHORIZED_CLIENT",
    "invalid_target": "INVALID_TARGET",
    "server_error": "SERVER_ERROR",
}


def headers_of(response: requests.Response) -> dict[str, str]:
    return {k: response.headers.get(k, "") for k in CLIENT_HEADERS}


def check_failed_through_the_api(
    demo: Demo,
    form: dict[str, Any],
    auth: tuple[str, str] | None,
    status: int,
    error: str,
    description: str,
    *,
    via: str = "in_process",
) -> None:
    before = demo.tickets()
    response = demo.post(form, **({"auth": auth} if auth else {}))
    assert (response.status_code, headers_of(response), response.json()) == (
        status,
        CLIENT_HEADERS,
        {"error": error, "error_description": description},
    )
    (record,) = demo.new_audit()
    assert (record["via"], record["service"], record["reason"], record["deleted"], record["status"]) == (
        via,
        SERVICE,
        REASON_OF[error],
        True,
        200,
    )
    assert re.fullmatch(r"[0-9a-f]{12}", record["ticket_hash"])
    left = demo.ticket_hashes()
    assert record["ticket_hash"] not in left
    assert len(left) == before


# -- python -m example_app, as scripts/demo runs it --------------------------------------


class Running:
    """A ``python -m example_app`` process and the banner it printed."""

    def __init__(self, process: subprocess.Popen[str], port: int, banner: list[str]) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.banner = banner

    def token(self) -> str:
        return self.banner[self.banner.index("(set CIBA_TOKENS to use your own):") + 1].strip()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if self.process.stdout:
            self.process.stdout.close()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any CIBA_* or FLASK_* setting of the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIBA_", "FLASK_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


def start_main(cwd: Path, **env: str) -> Running:
    """Start ``python -m example_app --port P`` in ``cwd`` with ``env`` only; read its banner."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "example_app", "--port", str(port)],
        cwd=cwd,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    banner: list[str] = []
    for line in process.stdout:
        banner.append(line.rstrip("\n"))
        if line.startswith("  curl -s -H"):
            break
    running = Running(process, port, banner)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.ConnectionError):
            requests.get(running.url + "/", timeout=1)
            return running
        time.sleep(0.05)
    running.stop()
    raise AssertionError("python -m example_app did not start listening")
