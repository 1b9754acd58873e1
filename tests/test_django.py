"""The Django integration: middleware, views, configuration, checks, ``manage.py ciba``.

The contract's tables run through the middleware under gunicorn and Django's test client in
test_contract.py; here, what is particular to Django, with the test project in
tests/djangoproject, in process and under gunicorn, uvicorn and runserver.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _client import DjangoTestClient
from conftest import API_HEADERS, GRANTS, ROOT, SERVICE, SERVICE_TOKEN, LiveServer, free_port
from test_passthrough import PASSED_THROUGH

from ciba_middleware.stores import store_from_url

V3 = f"/api/{SERVICE}/backchannel/authentication/fail"
BEARER = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tickets.sqlite3'}"


@pytest.fixture
def client(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[DjangoTestClient]:
    clear_ciba_env(monkeypatch)
    django_client = DjangoTestClient({"STORE_URL": store_url, "TOKENS": GRANTS, "SERVICE_ID": SERVICE})
    yield django_client
    django_client.close()


def clear_ciba_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CIBA_"):
            monkeypatch.delenv(name)


def form(**fields: str) -> bytes:
    from urllib.parse import urlencode

    return urlencode(fields).encode()


# -- the middleware -------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), PASSED_THROUGH)
def test_other_requests_reach_django_untouched(client: DjangoTestClient, method: str, path: str) -> None:
    answer = client.request(method, path, headers={"Authorization": "Bearer x", **FORM}, body=b"a=1")
    assert answer.status == 200
    assert answer.json() == {"method": method, "path": path, "body": "a=1", "authorization": "Bearer x"}


def test_the_fail_api_skips_csrf_and_sessions(client: DjangoTestClient) -> None:
    """CSRF and session middleware are in the project; the API's answer owes them nothing."""
    answer = client.request("POST", V3, headers={**BEARER, **JSON, "Cookie": "sessionid=x"}, body=b"{}")
    assert answer.status == 200
    assert "Set-Cookie" not in answer.headers
    assert "Vary" not in answer.headers
    # The same POST to a view of the project is refused by CSRF.
    assert client.request("POST", "/hello", headers=JSON, body=b"{}").status == 403


def test_a_view_raises_backchannel_fail(client: DjangoTestClient, store_url: str) -> None:
    ticket = client.request("POST", "/issue").body.decode()
    store = store_from_url(store_url)
    assert store.exists(SERVICE, ticket)
    answer = client.request("POST", "/reject", headers=FORM,
                            body=form(reason="UNKNOWN_USER_ID", ticket=ticket, description="No such user"))  # fmt: skip
    assert answer.status == 400
    assert answer.json() == {"error": "unknown_user_id", "error_description": "No such user"}
    for name, value in API_HEADERS.items():
        assert answer.headers[name] == value
    assert not store.exists(SERVICE, ticket)
    assert client.request("POST", "/reject", headers=FORM, body=form(reason="ACCESS_DENIED")).status == 403
    assert client.request("POST", "/reject", headers=FORM, body=form(reason="SERVER_ERROR")).status == 500


def test_async_views(client: DjangoTestClient, store_url: str) -> None:
    store = store_from_url(store_url)
    ticket = client.request("POST", "/aissue").body.decode()
    assert store.exists(SERVICE, ticket)
    answer = client.request("POST", "/areject", headers=FORM, body=form(reason="ACCESS_DENIED", ticket=ticket))
    assert (answer.status, answer.json()) == (403, {"error": "access_denied"})
    assert not store.exists(SERVICE, ticket)
    ticket = store.issue(SERVICE)
    answer = client.request("POST", "/afail-json", headers=FORM, body=form(reason="INVALID_TARGET", ticket=ticket))
    assert answer.json()["action"] == "BAD_REQUEST"
    assert not store.exists(SERVICE, ticket)


def test_fail_for_a_view_that_answers_itself(client: DjangoTestClient, store_url: str) -> None:
    store = store_from_url(store_url)
    ticket = store.issue(SERVICE)
    answer = client.request("POST", "/fail-json", headers=FORM, body=form(reason="EXPIRED_LOGIN_HINT_TOKEN",
                                                                          ticket=ticket))  # fmt: skip
    assert answer.json() == {
        "resultCode": "A185001",
        "resultMessage": "[A185001] Successfully generated an error response for the backchannel authentication "
        "request.",
        "action": "BAD_REQUEST",
        "responseContent": '{"error":"expired_login_hint_token"}',
    }
    assert not store.exists(SERVICE, ticket)


@pytest.mark.parametrize("source", ["settings", "environment"])
def test_server_error_status(store_url: str, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    clear_ciba_env(monkeypatch)
    settings: dict[str, Any] = {"STORE_URL": store_url, "TOKENS": GRANTS, "SERVICE_ID": SERVICE}
    if source == "settings":
        settings["SERVER_ERROR_STATUS"] = 503
    else:
        monkeypatch.setenv("CIBA_SERVER_ERROR_STATUS", "503")
    django_client = DjangoTestClient(settings)
    try:
        answer = django_client.request("POST", "/reject", headers=FORM, body=form(reason="SERVER_ERROR"))
    finally:
        django_client.close()
    assert (answer.status, answer.json()) == (503, {"error": "server_error"})


def test_the_environment_fills_in_what_the_settings_leave_out(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_ciba_env(monkeypatch)
    monkeypatch.setenv("CIBA_TOKENS", json.dumps(GRANTS))
    monkeypatch.setenv("CIBA_STORE_URL", "sqlite:///nowhere/that/exists.sqlite3")
    django_client = DjangoTestClient({"STORE_URL": store_url, "SERVICE_ID": SERVICE})
    try:
        ticket = django_client.request("POST", "/issue").body.decode()
    finally:
        django_client.close()
    assert store_from_url(store_url).exists(SERVICE, ticket)


def test_a_bad_configuration_is_a_clean_500_and_the_rest_keeps_serving(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clear_ciba_env(monkeypatch)
    django_client = DjangoTestClient({"TOKENS": "not json"})
    try:
        answer = django_client.request("POST", V3, headers={**BEARER, **JSON}, body=b"{}")
        hello = django_client.request("GET", "/hello")
    finally:
        django_client.close()
    assert answer.status == 500
    assert answer.json() == {
        "resultCode": "A001101",
        "resultMessage": "[A001101] /backchannel/authentication/fail, the fail API is not configured; see the server "
        "log.",
        "action": "INTERNAL_SERVER_ERROR",
        "responseContent": '{"error":"server_error"}',
    }
    assert answer.headers["Cache-Control"] == "no-store"
    assert hello.status == 201
    assert 'configuration error: CIBA_MIDDLEWARE["TOKENS"] is not valid JSON' in caplog.text


def test_state_is_built_once_and_again_when_the_setting_changes(store_url: str, tmp_path: Path) -> None:
    from django.test.utils import override_settings

    from ciba_middleware.django import state

    settings = {"STORE_URL": store_url, "TOKENS": GRANTS, "SERVICE_ID": SERVICE}
    with override_settings(CIBA_MIDDLEWARE=settings):
        first = state()
        assert state() is first
    with override_settings(CIBA_MIDDLEWARE={**settings, "SERVICE_ID": "42"}):
        assert state() is not first
        assert state().service_id == "42"


# -- checks ---------------------------------------------------------------------------------


def checks(settings: Any, monkeypatch: pytest.MonkeyPatch, **env: str) -> list[tuple[str, str]]:
    from django.test.utils import override_settings

    from ciba_middleware.django.checks import check_configuration

    clear_ciba_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    DjangoTestClient({}).close()  # Django set up
    with override_settings(CIBA_MIDDLEWARE=settings):
        return [(m.id or "", m.msg) for m in check_configuration()]


@pytest.mark.parametrize(
    ("settings", "env", "expected"),
    [
        pytest.param({"TOKENS": GRANTS, "SERVICE_ID": SERVICE}, {}, [], id="good"),
        pytest.param({}, {"CIBA_TOKENS": json.dumps(GRANTS[:1])}, [], id="good-from-env"),
        pytest.param({}, {}, [("ciba_middleware.W002", "the fail API is not configured: neither CIBA_MIDDLEWARE nor "
                      "CIBA_* variables are set, so it answers 500 and views cannot fail requests")], id="nothing"),
        pytest.param({"STORE_URL": "sqlite:///x.db"}, {}, [("ciba_middleware.E001",
                     'CIBA_MIDDLEWARE["TOKENS"] (or CIBA_MIDDLEWARE["TOKENS_FILE"]) is not set: no caller could '
                     "authenticate. Create a token with `ciba-middleware token new --service ID`.")], id="no-tokens"),
        pytest.param({"TOKENS": GRANTS}, {}, [("ciba_middleware.E001",
                     'CIBA_MIDDLEWARE["SERVICE_ID"] is not set and the grants do not name exactly one service '
                     "(1001, 42, 715948317): set it to the service whose tickets this app issues")], id="no-service"),
        pytest.param({"SERVICE_ID": SERVICE}, {"CIBA_TOKENS": "[]"}, [("ciba_middleware.E001",
                     "CIBA_TOKENS must be a non-empty JSON list of grants")], id="env-key-named-as-env"),
        pytest.param({"TOKENS": GRANTS, "SERVICE_ID": SERVICE, "MAX_BODY_BYTES": "lots"}, {}, [("ciba_middleware.E001",
                     "CIBA_MIDDLEWARE[\"MAX_BODY_BYTES\"] must be a whole number of bytes from 1 to 1048576, "
                     "not 'lots'")], id="bad-number"),
        pytest.param({"TOKENS": GRANTS, "SERVICE_ID": SERVICE, "AUDIT_FLUSH": 5}, {}, [("ciba_middleware.E001",
                     "CIBA_MIDDLEWARE[\"AUDIT_FLUSH\"] must be a number of seconds from 0 to 1, not 5")],
                     id="bad-flush"),
        pytest.param({"TOKENS": GRANTS, "SERVICE_ID": SERVICE, "STORE_URL": "mysql://x"}, {}, [("ciba_middleware.E001",
                     'CIBA_MIDDLEWARE["STORE_URL"]: unknown ticket store URL scheme mysql://')], id="bad-store"),
        pytest.param({"TOKENS": GRANTS, "SERVICE_ID": SERVICE, "SERVER_ERROR_STATUS": 200}, {},
                     [("ciba_middleware.E001", 'CIBA_MIDDLEWARE["SERVER_ERROR_STATUS"] must be an HTTP error status '
                       "(400-599), not 200")], id="bad-status"),
        pytest.param({"TOKENS": GRANTS, "SERVICE_ID": SERVICE, "TOKEN": "x"}, {}, [("ciba_middleware.E002",
                     "CIBA_MIDDLEWARE has keys that are not settings: TOKEN")], id="unknown-key"),
        pytest.param(["TOKENS"], {}, [("ciba_middleware.E001", "CIBA_MIDDLEWARE must be a dict, not list")],
                     id="not-a-dict"),
        pytest.param({"TOKENS": GRANTS, "SERVICE_ID": SERVICE},
                     {"CIBA_METRICS_PATH": "/metrics", "CIBA_METRICS_TOKEN_SHA256": "0" * 64}, [], id="metrics"),
        pytest.param({"TOKENS": GRANTS, "SERVICE_ID": SERVICE}, {"CIBA_METRICS_PATH": "/metrics"},
                     [("ciba_middleware.E001", "CIBA_METRICS_PATH is set but neither "
                       'CIBA_MIDDLEWARE["METRICS_TOKEN_SHA256"] nor CIBA_MIDDLEWARE["METRICS_TOKEN"]: the metrics '
                       "endpoint needs a token of its own")], id="metrics-no-token"),
    ],
)  # fmt: skip
def test_checks_name_the_key(
    monkeypatch: pytest.MonkeyPatch, settings: Any, env: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    assert checks(settings, monkeypatch, **env) == expected


# -- manage.py, as a subprocess ---------------------------------------------------------------


def django_admin(*args: str, settings: dict[str, Any] | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {name: value for name, value in os.environ.items() if not name.startswith("CIBA_")}
    full_env.update(env, PYTHONPATH=str(ROOT / "tests"), DJANGO_SETTINGS_MODULE="djangoproject.settings")
    if settings is not None:
        full_env["CIBA_TEST_DJANGO_SETTINGS"] = json.dumps(settings)
    return subprocess.run([sys.executable, "-m", "django", *args], capture_output=True, text=True, env=full_env,
                          cwd=str(ROOT), timeout=120, check=False)  # fmt: skip


def test_manage_check_reports_the_key(store_url: str) -> None:
    run = django_admin("check", settings={"STORE_URL": store_url, "TOKENS": GRANTS})
    assert run.returncode == 1
    assert '?: (ciba_middleware.E001) CIBA_MIDDLEWARE["SERVICE_ID"] is not set' in run.stderr
    assert django_admin("check", settings={"STORE_URL": store_url, "TOKENS": GRANTS, "SERVICE_ID": SERVICE}
                        ).returncode == 0  # fmt: skip


def test_commands_that_do_not_serve_need_no_configuration() -> None:
    run = django_admin("shell", "-c", "import djangoproject.urls; print('ok')")
    assert (run.returncode, run.stdout.splitlines()[-1:], run.stderr) == (0, ["ok"], "")
    run = django_admin("check")
    assert run.returncode == 0
    assert "(ciba_middleware.W002) the fail API is not configured" in run.stderr


def test_manage_ciba_check_and_tickets(store_url: str) -> None:
    settings = {"STORE_URL": store_url, "TOKENS": GRANTS, "SERVICE_ID": SERVICE}
    run = django_admin("ciba", "check", settings=settings)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"ok: store {store_url} reachable, 5 grants covering 3 services")
    run = django_admin("ciba", "ticket", "issue", "--service", SERVICE, settings=settings)
    assert run.returncode == 0, run.stderr
    ticket = run.stdout.strip()
    assert store_from_url(store_url).exists(SERVICE, ticket)
    assert django_admin("ciba", "ticket", "show", "--service", SERVICE, ticket, settings=settings).returncode == 0
    run = django_admin("ciba", "ticket", "delete", "--service", SERVICE, ticket, settings=settings)
    assert (run.returncode, run.stdout.startswith("deleted ticket")) == (0, True)
    assert django_admin("ciba", "ticket", "show", "--service", SERVICE, ticket, settings=settings).returncode == 1
    # The ticket commands need the store only, as ciba-middleware's do.
    run = django_admin("ciba", "ticket", "issue", "--service", SERVICE, settings={"STORE_URL": store_url})
    assert run.returncode == 0, run.stderr


def test_manage_ciba_errors_are_one_line() -> None:
    run = django_admin("ciba", "check", settings={"TOKENS": GRANTS, "SERVICE_ID": SERVICE, "TICKET_TTL": -1})
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        'CommandError: configuration error: CIBA_MIDDLEWARE["TICKET_TTL"] must be a number of seconds above 0 '
        "and at most 31622400 (366 days), not -1"
    ]
    run = django_admin("ciba", "tickets")
    assert run.returncode == 2
    assert "unknown command 'tickets': use check or ticket" in run.stderr


# -- under real servers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('django') / 'tickets.sqlite3'}"


def project_env(store_url: str) -> dict[str, str]:
    settings = {"STORE_URL": store_url, "TOKENS": GRANTS, "SERVICE_ID": SERVICE}
    return {"CIBA_TEST_DJANGO_SETTINGS": json.dumps(settings)}


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def server(request: pytest.FixtureRequest, module_store_url: str) -> Iterator[LiveServer]:
    app = "djangoproject.wsgi:application" if request.param == "gunicorn" else "djangoproject.asgi:application"
    live = LiveServer(app, project_env(module_store_url), server=request.param)
    yield live
    live.stop()


def test_chunked_bodies_under_a_server(server: LiveServer, module_store_url: str) -> None:
    store = store_from_url(module_store_url)
    ticket = store.issue(SERVICE)

    def chunks() -> Iterator[bytes]:
        yield b'{"reason":"ACCESS_DENIED",'
        yield f'"ticket":"{ticket}"}}'.encode()

    response = requests.post(server.url + V3, data=chunks(), headers={**BEARER, **JSON}, timeout=10)
    assert (response.status_code, response.json()["action"]) == (200, "FORBIDDEN")
    assert not store.exists(SERVICE, ticket)
    big = (b"x" * 1000 for _ in range(20))
    response = requests.post(server.url + V3, data=big, headers={**BEARER, **JSON}, timeout=10)
    assert (response.status_code, response.json()["resultCode"]) == (413, "A185204")


def test_views_and_pass_through_under_a_server(server: LiveServer, module_store_url: str) -> None:
    store = store_from_url(module_store_url)
    for issue, reject in (("/issue", "/reject"), ("/aissue", "/areject")):
        ticket = requests.post(server.url + issue, timeout=5).text
        assert store.exists(SERVICE, ticket)
        response = requests.post(server.url + reject, data={"reason": "UNKNOWN_USER_ID", "ticket": ticket}, timeout=5)
        assert (response.status_code, response.json()) == (400, {"error": "unknown_user_id"})
        assert not store.exists(SERVICE, ticket)
    hello = requests.get(server.url + "/hello", timeout=5)
    assert (hello.status_code, hello.headers["X-App"], hello.text) == (201, "yes", "hello from the app")
    with requests.get(server.url + "/stream", stream=True, timeout=5) as response:
        assert [line for line in response.iter_lines() if line] == [f"chunk {i}".encode() for i in range(5)]


def test_runserver(tmp_path: Path) -> None:
    """Django's development server: the API and the views work; a chunked body cannot (wsgiref)."""
    store_url = f"sqlite:///{tmp_path / 'tickets.sqlite3'}"
    port = free_port()
    full_env = {name: value for name, value in os.environ.items() if not name.startswith("CIBA_")}
    full_env.update(project_env(store_url), PYTHONPATH=str(ROOT / "tests"),
                    DJANGO_SETTINGS_MODULE="djangoproject.settings")  # fmt: skip
    log = tmp_path / "runserver.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "django", "runserver", "--noreload", f"127.0.0.1:{port}"],
                                   env=full_env, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.RequestException):
                requests.get(url + "/hello", timeout=1)
                break
            assert time.monotonic() < deadline, log.read_text()
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        store = store_from_url(store_url)
        ticket = store.issue(SERVICE)
        response = requests.post(url + V3, json={"ticket": ticket}, headers=BEARER, timeout=5)
        assert response.json()["action"] == "INTERNAL_SERVER_ERROR"
        assert not store.exists(SERVICE, ticket)
        response = requests.post(url + V3, data=iter([b"{}"]), headers={**BEARER, **JSON}, timeout=5)
        assert response.status_code == 400
        assert response.json()["resultMessage"].endswith(
            "a body without Content-Length needs a WSGI server that sets wsgi.input_terminated."
        )
    finally:
        process.terminate()
        process.wait(10)
