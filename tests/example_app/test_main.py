"""``python -m example_app`` with no configuration at all, as the README's demo command runs it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import GRANTS, ROOT, free_port

from ciba_middleware import ConfigurationError
from example_app import create_app

DEMO = ("demo-client", "demo-secret")


class Running:
    def __init__(self, process: subprocess.Popen[str], port: int, banner: list[str]) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.banner = banner

    def token(self) -> str:
        return self.banner[self.banner.index("(set CIBA_TOKENS to use your own):") + 1].strip()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any CIBA_* or FLASK_* setting of the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIBA_", "FLASK_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


@pytest.fixture
def run_demo(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start ``python -m example_app --port P`` in tmp_path; read its banner; stop it afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(**env: str) -> Running:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "example_app", "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        started.append(process)
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
        raise AssertionError("python -m example_app did not start listening")

    yield start
    for process in started:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout:
            process.stdout.close()


def test_starts_with_no_configuration_and_prints_what_to_try(run_demo: Callable[..., Running], tmp_path: Path) -> None:
    demo = run_demo()
    token = demo.token()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    endpoint = f"{demo.url}/backchannel/authentication"
    fail_api = f"{demo.url}/api/715948317/backchannel/authentication/fail"
    assert demo.banner == [
        "example_app: a demo CIBA authorization server (ciba-middleware)",
        f"  demo clients, users, hint tokens  GET  {demo.url}/",
        f"  backchannel authentication        POST {endpoint}",
        f"  fail API (Authlete API v3)        POST {fail_api}",
        "  ticket store                      sqlite:///ciba-tickets.sqlite3",
        "  requests are failed               in process",
        "",
        "Development token for service 715948317, generated for this run",
        "(set CIBA_TOKENS to use your own):",
        f"  {token}",
        "",
        "Try:",
        f"  curl -s -u demo-client:demo-secret -d scope=openid -d login_hint=alice {endpoint}",
        f"  curl -s -u demo-client:demo-secret -d scope=openid -d login_hint=nobody {endpoint}",
        f"  curl -s -u demo-client:demo-secret -d scope=openid -d login_hint=carol {endpoint}",
        f"  curl -s -H 'Authorization: Bearer {token}' -d reason=ACCESS_DENIED {fail_api}",
    ]

    # The banner's commands work as printed.
    ok = requests.post(endpoint, data={"scope": "openid", "login_hint": "alice"}, auth=DEMO, timeout=10)
    assert (ok.status_code, sorted(ok.json())) == (200, ["auth_req_id", "expires_in", "interval"])
    rejected = requests.post(endpoint, data={"scope": "openid", "login_hint": "nobody"}, auth=DEMO, timeout=10)
    assert (rejected.status_code, rejected.json()["error"]) == (400, "unknown_user_id")
    bearer = {"Authorization": f"Bearer {token}"}
    api = requests.post(fail_api, data={"reason": "ACCESS_DENIED"}, headers=bearer, timeout=10)
    assert (api.status_code, api.json()["responseContent"]) == (200, '{"error":"access_denied"}')
    # The embedded SQLite default, in the working directory.
    assert (tmp_path / "ciba-tickets.sqlite3").is_file()


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
