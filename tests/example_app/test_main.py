"""``python -m example_app`` with no configuration at all, as the README's demo command runs it."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _demo import Running, clean_env, start_main
from conftest import GRANTS, free_port

from ciba_middleware import ConfigurationError
from example_app import create_app
from example_app.__main__ import make_server

DEMO = ("demo-client", "demo-secret")


@pytest.fixture
def run_demo(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start ``python -m example_app --port P`` in tmp_path; read its banner; stop it afterwards."""
    started: list[Running] = []

    def start(**env: str) -> Running:
        started.append(start_main(tmp_path, **env))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def test_starts_with_no_configuration_and_prints_what_to_try(run_demo: Callable[..., Running], tmp_path: Path) -> None:
    demo = run_demo()
    token = demo.token()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    endpoint = f"{demo.url}/backchannel/authentication"
    fail_api = f"{demo.url}/api/715948317/backchannel/authentication/fail"
    token_endpoint = f"{demo.url}/token"
    assert demo.banner == [
        "example_app: a demo CIBA authorization server (ciba-middleware)",
        f"  demo clients, users, hint tokens  GET  {demo.url}/",
        f"  discovery                         GET  {demo.url}/.well-known/openid-configuration",
        f"  backchannel authentication        POST {endpoint}",
        f"  token endpoint (poll, ping, push) POST {token_endpoint}",
        f"  authentication device (browser)   GET  {demo.url}/device/alice",
        f"  fail API (Authlete API v3)        POST {fail_api}",
        "  ticket store                      sqlite:///ciba-tickets.sqlite3",
        "  requests are failed               in process",
        "",
        "Development token for service 715948317, generated for this run",
        "(set CIBA_TOKENS to use your own):",
        f"  {token}",
        "",
        "A full flow: ask alice, approve (or deny) on her device, poll the token endpoint:",
        "  curl -s -u demo-client:demo-secret -d scope=openid -d login_hint=alice"
        f" -d 'binding_message=Pay 20 EUR' {endpoint}",
        f"  open {demo.url}/device/alice in a browser and approve",
        "  curl -s -u demo-client:demo-secret -d grant_type=urn:openid:params:grant-type:ciba"
        f" -d auth_req_id=AUTH_REQ_ID {token_endpoint}",
        "",
        "Rejections, failed through the fail API:",
        f"  curl -s -u demo-client:demo-secret -d scope=openid -d login_hint=nobody {endpoint}",
        f"  curl -s -u demo-client:demo-secret -d scope=openid -d login_hint=carol {endpoint}",
        f"  curl -s -H 'Authorization: Bearer {token}' -d reason=ACCESS_DENIED {fail_api}",
    ]

    # The banner's commands work as printed: the full flow,
    form = {"scope": "openid", "login_hint": "alice", "binding_message": "Pay 20 EUR"}
    ok = requests.post(endpoint, data=form, auth=DEMO, timeout=10)
    assert (ok.status_code, sorted(ok.json())) == (200, ["auth_req_id", "expires_in", "interval"])
    page = requests.get(f"{demo.url}/device/alice", timeout=10).text
    assert '<dd class="binding">Pay 20 EUR</dd>' in page
    (approve,) = re.findall(r'<form method="post" action="([^"]+)">', page)
    assert requests.post(demo.url + approve, data={"decision": "approve"}, timeout=10).status_code == 200
    grant = {"grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": ok.json()["auth_req_id"]}
    tokens = requests.post(token_endpoint, data=grant, auth=DEMO, timeout=10)
    assert (tokens.status_code, sorted(tokens.json())) == (
        200,
        ["access_token", "expires_in", "id_token", "scope", "token_type"],
    )
    # and the rejections.
    rejected = requests.post(endpoint, data={"scope": "openid", "login_hint": "nobody"}, auth=DEMO, timeout=10)
    assert (rejected.status_code, rejected.json()["error"]) == (400, "unknown_user_id")
    bearer = {"Authorization": f"Bearer {token}"}
    api = requests.post(fail_api, data={"reason": "ACCESS_DENIED"}, headers=bearer, timeout=10)
    assert (api.status_code, api.json()["responseContent"]) == (200, '{"error":"access_denied"}')
    # The embedded SQLite default, and the pending requests beside it, in the working directory.
    assert (tmp_path / "ciba-tickets.sqlite3").is_file()
    assert (tmp_path / "ciba-demo.sqlite3").is_file()


def serving(app: Callable[..., Any], threads: int = 2) -> tuple[Any, threading.Thread, int]:
    server = make_server(app, "127.0.0.1", 0, threads=threads)

    def run() -> None:
        # Closing the server from the test's thread can pull a socket out from under the
        # loop's select(): EBADF then means "closed", nothing the test is about.
        with contextlib.suppress(OSError):
            server.run()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return server, thread, server.effective_port


def test_the_server_speaks_http_1_1_from_several_threads() -> None:
    """What the app sees of the server: HTTP/1.1, and wsgi.multithread true."""
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append({k: environ[k] for k in ("SERVER_PROTOCOL", "wsgi.multithread", "wsgi.multiprocess")})
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server, thread, port = serving(app)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/")
        response = connection.getresponse()
        assert (response.version, response.status, response.read()) == (11, 200, b"ok")
        connection.close()
    finally:
        server.close()
        thread.join(10)
    assert seen == [{"SERVER_PROTOCOL": "HTTP/1.1", "wsgi.multithread": True, "wsgi.multiprocess": False}]


def test_fails_over_http_with_only_the_switch_set(run_demo: Callable[..., Running]) -> None:
    """CIBA_DEMO_FAIL_VIA=http alone: the generated token and --host/--port make the API URL."""
    demo = run_demo(CIBA_DEMO_FAIL_VIA="http")
    assert "  requests are failed               http" in demo.banner
    response = requests.post(
        f"{demo.url}/backchannel/authentication",
        data={"scope": "openid", "login_hint": "carol"},
        auth=("demo-client", "demo-secret"),
        timeout=10,
    )
    assert (response.status_code, response.json()) == (
        403,
        {
            "error": "access_denied",
            "error_description": "The user does not allow this client to ask for authentication.",
        },
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            [],
            {"CIBA_DEMO_FAIL_VIA": "pigeon"},
            "example_app: configuration error: CIBA_DEMO_FAIL_VIA must be in_process or http, not 'pigeon'\n",
            id="bad-fail-via",
        ),
        pytest.param(
            [],
            {"FLASK_CIBA_SERVER_ERROR_STATUS": "200"},
            "example_app: configuration error: CIBA_SERVER_ERROR_STATUS must be an HTTP error status (400-599), "
            "not 200\n",
            id="bad-server-error-status",
        ),
        pytest.param(
            ["--port", "0"],
            {},
            "python -m example_app: error: --port must be 1-65535, not 0\n",
            id="bad-port",
        ),
    ],
)
def test_configuration_errors_stop_it_at_start_up(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "example_app", "--port", str(free_port()), *args],
        cwd=tmp_path,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr.splitlines(keepends=True)[-1]) == (2, "", message)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through /proc (Linux)")
def test_many_requests_do_not_pile_up_open_files(run_demo: Callable[..., Running]) -> None:
    """A thread per request would open an SQLite connection per request; the pool reuses a few."""
    demo = run_demo()
    fds = Path(f"/proc/{demo.process.pid}/fd")
    endpoint, form = f"{demo.url}/backchannel/authentication", {"scope": "openid", "login_hint": "nobody"}
    with requests.Session() as session:
        assert session.post(endpoint, data=form, auth=DEMO, timeout=10).status_code == 400
        before = len(list(fds.iterdir()))
        for _ in range(100):
            session.post(endpoint, data=form, auth=DEMO, timeout=10)
    # 8 threads with a connection (database + WAL) each at most; not one per request.
    assert len(list(fds.iterdir())) - before <= 16


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            {"CIBA_DEMO_FAIL_VIA": "http"},
            "CIBA_DEMO_FAIL_VIA=http needs CIBA_DEMO_API_BASE_URL, this server's own URL (http://127.0.0.1:8080)",
            id="http-without-base-url",
        ),
        pytest.param(
            {"CIBA_DEMO_FAIL_VIA": "http", "CIBA_DEMO_API_BASE_URL": "http://127.0.0.1:8080", "CIBA_TOKENS": GRANTS},
            "CIBA_DEMO_FAIL_VIA=http needs CIBA_DEMO_ACCESS_TOKEN, a token CIBA_TOKENS grants for the service",
            id="http-with-own-tokens-but-no-access-token",
        ),
    ],
)
def test_create_app_refuses_an_http_mode_it_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], message: str
) -> None:
    for name in [k for k in os.environ if k.startswith(("CIBA_", "FLASK_"))]:
        monkeypatch.delenv(name)
    with pytest.raises(ConfigurationError) as caught:
        create_app({"CIBA_STORE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}", **config})
    assert str(caught.value) == message


def test_without_joserfc_it_says_which_extra_to_install(tmp_path: Path) -> None:
    hide = (
        "import runpy, sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'joserfc':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "runpy.run_module('example_app', run_name='__main__', alter_sys=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "example_app: joserfc is missing (it signs the ID tokens): pip install 'ciba-middleware[demo]'\n",
    )


def test_slow_clients_do_not_hold_the_threads() -> None:
    """Eight clients sending one header byte at a time, with one app thread: another request is
    answered at once (the server reads requests whole before a thread runs the app)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server, thread, port = serving(app, threads=1)
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
    try:
        for sock in slow:
            sock.sendall(b"G")
        started = time.monotonic()
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).text == "ok"
        assert time.monotonic() - started < 2
    finally:
        for sock in slow:
            sock.close()
        server.close()
        thread.join(10)


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    """Started on a port already taken: one line saying so, exit status 1, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "example_app", "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert errors == [f"example_app: cannot listen on 127.0.0.1:{port}: Address already in use"]
